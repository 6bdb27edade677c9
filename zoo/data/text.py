"""Text from the user's files, contiguous splits, vocabularies of characters and words, and
NLTK tokenizers that need no downloaded NLTK data.

Everything here saves itself as plain JSON (``to_json`` / ``from_json``); nothing is pickled.
"""

from __future__ import annotations

import codecs
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import ZooError

_WIDE = ("utf_16", "utf_32")  # encodings whose text holds NUL bytes


def check_encoding(encoding: str, where: str = "data.encoding") -> str:
    """The codec's canonical name, or one line naming ``where`` and the unknown encoding."""
    try:
        return codecs.lookup(encoding).name
    except (LookupError, TypeError):
        raise ZooError(f"{where}: unknown encoding {encoding!r} (e.g. utf-8, latin-1, cp1252)") from None


def decode_bytes(data: bytes, path: Path | str, encoding: str, key: str = "data.encoding") -> str:
    """Decode a file's bytes; on failure one line naming the file, the line of the first bad
    byte and the encoding, suggesting ``key``."""
    codec = check_encoding(encoding, f"{path}: {key}")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        bad = data[exc.start:exc.start + 1].hex()
        raise ZooError(f"{path}: line {line}: bytes that are not {encoding} (byte 0x{bad} at "
                       f"column {col}); set {key} to the file's encoding, e.g. latin-1 or "
                       "cp1252") from None
    if codec == "utf-8" and text.startswith("\ufeff"):
        text = text[1:]
    return text


def _looks_binary(data: bytes, encoding: str) -> bool:
    if codecs.lookup(encoding).name.replace("-", "_").startswith(_WIDE):
        return False
    return b"\x00" in data[: 1 << 16]


def read_text_file(path: str | Path, encoding: str = "utf-8") -> str:
    """A user's text file as one string with ``\\n`` line ends.

    One-line errors (:class:`ZooError`) name the file for: no such file, a folder, a binary
    file, an unknown encoding, bytes the encoding cannot decode (with the line number), and a
    file that is empty or only whitespace.
    """
    path = Path(path)
    if not path.exists():
        raise ZooError(f"{path}: file not found")
    if path.is_dir():
        raise ZooError(f"{path}: is a directory, expected a text file")
    check_encoding(encoding, f"{path}: data.encoding")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ZooError(f"{path}: cannot read the file ({exc.strerror})") from None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) and _looks_binary(data, encoding):
        raise ZooError(f"{path}: the file is UTF-16 text; set data.encoding to utf-16")
    if _looks_binary(data, encoding):
        raise ZooError(f"{path}: looks like a binary file (it holds NUL bytes), expected text")
    text = decode_bytes(data, path, encoding)
    if not text.strip():
        raise ZooError(f"{path}: file is empty" if not text else
                       f"{path}: file is empty (only whitespace)")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    for key, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise ZooError(f"data.{key}: {f} must be at least 0 and below 1")
    if val_fraction + test_fraction >= 1.0:
        raise ZooError(f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction:g} "
                       "leaves nothing to train on; it must be below 1")


def split_by_fraction(text: str, val_fraction: float, test_fraction: float) -> tuple[str, str, str]:
    """Contiguous ``(train, val, test)`` parts of ``text``: the training part first, then
    ``val_fraction`` of the characters, then ``test_fraction`` of them at the end."""
    check_fractions(val_fraction, test_fraction)
    n = len(text)
    n_test = int(n * test_fraction)
    n_val = int(n * val_fraction)
    a, b = n - n_val - n_test, n - n_test
    return text[:a], text[a:b], text[b:]


class CharVocab:
    """The characters of the training text; id 0 stands for any character not among them."""

    UNKNOWN = 0

    def __init__(self, chars: Sequence[str]) -> None:
        chars = list(chars)
        if any(not isinstance(c, str) or len(c) != 1 for c in chars) or len(set(chars)) != len(chars):
            raise ZooError("character vocabulary: expected distinct single characters")
        self.chars = chars
        self.index = {c: i + 1 for i, c in enumerate(chars)}
        points = np.array([ord(c) for c in chars], dtype=np.int64)
        order = np.argsort(points, kind="stable")
        self._points, self._ids = points[order], (order + 1).astype(np.int32)

    @classmethod
    def from_text(cls, text: str) -> "CharVocab":
        if not text:
            raise ZooError("character vocabulary: the training text is empty")
        return cls(sorted(set(text)))

    def __len__(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str) -> np.ndarray:
        """``int32`` ids, one per character; 0 for characters outside the vocabulary."""
        if not text:
            return np.zeros(0, np.int32)
        points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.int64)
        if not len(self._points):
            return np.zeros(len(points), np.int32)
        pos = np.minimum(np.searchsorted(self._points, points), len(self._points) - 1)
        return np.where(self._points[pos] == points, self._ids[pos], 0).astype(np.int32)

    def decode(self, ids: Iterable[int]) -> str:
        """The characters of ``ids``; 0 and ids outside the vocabulary become U+FFFD."""
        n = len(self.chars)
        return "".join(self.chars[i - 1] if 0 < i <= n else "\ufffd" for i in map(int, ids))

    def unknown_chars(self, text: str) -> set[str]:
        """The characters of ``text`` that the vocabulary does not hold."""
        return set(text).difference(self.index)

    def to_json(self) -> dict[str, Any]:
        return {"type": "char", "chars": self.chars}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "CharVocab":
        if not isinstance(data, dict) or data.get("type", "char") != "char" or \
                not isinstance(data.get("chars"), list):
            raise ZooError("character vocabulary: not a saved CharVocab (expected "
                           "{'type': 'char', 'chars': [...]})")
        return cls(data["chars"])


class WordTokenizer:
    """Words, numbers and punctuation marks, with NLTK's ``RegexpTokenizer`` (it needs no
    downloaded NLTK data).  A word keeps its inner apostrophes (``isn't``, ``o'er``); ``--``
    and ``...`` are one token each; every other mark is a token of its own."""

    PATTERN = r"\w+(?:['’]\w+)*|-{2,}|\.{3}|…|[^\w\s]"

    def __init__(self, lowercase: bool = True, pattern: str | None = None) -> None:
        from nltk.tokenize import RegexpTokenizer

        self.lowercase = bool(lowercase)
        self.pattern = pattern or self.PATTERN
        try:
            self._tok = RegexpTokenizer(self.pattern)
            self._tok.tokenize("")
        except re.error as exc:
            raise ZooError(f"tokenizer: bad pattern {self.pattern!r} ({exc})") from None

    def tokenize(self, text: str) -> list[str]:
        return self._tok.tokenize(text.lower() if self.lowercase else text)

    def to_json(self) -> dict[str, Any]:
        return {"type": "nltk-regexp", "pattern": self.pattern, "lowercase": self.lowercase}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "WordTokenizer":
        if not isinstance(data, dict) or data.get("type", "nltk-regexp") != "nltk-regexp" or \
                not isinstance(data.get("lowercase"), bool):
            raise ZooError("tokenizer: not a saved WordTokenizer (expected "
                           "{'type': 'nltk-regexp', 'pattern': ..., 'lowercase': true|false})")
        return cls(lowercase=data["lowercase"], pattern=data.get("pattern"))


class WordVocab:
    """The most frequent training words.  Id 0 pads, id 1 stands for every word outside the
    vocabulary, further specials follow; then words by falling count, ties alphabetical."""

    PAD, UNK = "<pad>", "<unk>"

    def __init__(self, words: Sequence[str]) -> None:
        words = list(words)
        if words[:2] != [self.PAD, self.UNK] or len(set(words)) != len(words):
            raise ZooError(f"word vocabulary: expected distinct words starting with "
                           f"{self.PAD!r}, {self.UNK!r}")
        self.words = words
        self.index = {w: i for i, w in enumerate(words)}

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], max_size: int | None,
              specials: Sequence[str] = ("<pad>", "<unk>")) -> "WordVocab":
        """At most ``max_size`` entries (specials included) from the words of ``token_lists``."""
        head = [cls.PAD, cls.UNK, *dict.fromkeys(s for s in specials if s not in (cls.PAD, cls.UNK))]
        if max_size is not None and max_size <= len(head):
            raise ZooError(f"vocabulary_size: {max_size} leaves no room for words after the "
                           f"{len(head)} special tokens ({', '.join(head)})")
        counts = Counter(t for tokens in token_lists for t in tokens)
        for s in head:
            counts.pop(s, None)
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        if max_size is not None:
            ranked = ranked[: max_size - len(head)]
        return cls(head + [w for w, _ in ranked])

    def __len__(self) -> int:
        return len(self.words)

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    def encode(self, tokens: Iterable[str]) -> list[int]:
        get = self.index.get
        return [get(t, 1) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        n = len(self.words)
        return [self.words[i] if 0 <= i < n else self.UNK for i in map(int, ids)]

    def to_json(self) -> dict[str, Any]:
        return {"type": "word", "words": self.words}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "WordVocab":
        if not isinstance(data, dict) or data.get("type", "word") != "word" or \
                not isinstance(data.get("words"), list):
            raise ZooError("word vocabulary: not a saved WordVocab (expected "
                           "{'type': 'word', 'words': [...]})")
        return cls(data["words"])


_PARAGRAPHS = re.compile(r"\n[ \t]*\n\s*")
_PUNKT_TRAIN_CHARS = 1_000_000  # Punkt trains at ~5 µs a character; its statistics settle long before


def _punkt_sample(text: str, limit: int) -> str:
    """``text`` itself when short, else ``limit`` characters of it in 20 evenly spaced runs,
    each cut at blank lines so no sentence is split in two."""
    if len(text) <= limit:
        return text
    runs, size = 20, limit // 20
    parts = []
    for k in range(runs):
        start = (len(text) - size) * k // (runs - 1)
        cut = text.find("\n\n", start)
        start = cut + 2 if 0 <= cut < start + size // 2 else start
        parts.append(text[start:start + size].rsplit("\n\n", 1)[0])
    return "\n\n".join(parts)


def split_sentences(text: str, *, max_train_chars: int = _PUNKT_TRAIN_CHARS) -> list[str]:
    """The sentences of ``text``, by NLTK's Punkt tokenizer trained on ``text`` itself (on an
    evenly spread ``max_train_chars`` of it when longer): it learns the abbreviations from the
    text and needs no downloaded model.  A sentence never crosses a blank line; white space
    inside a sentence becomes single spaces."""
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    text = text.replace("\r\n", "\n")
    if not text.strip():
        return []
    punkt = PunktSentenceTokenizer(_punkt_sample(text, max_train_chars))
    out = []
    for para in _PARAGRAPHS.split(text):
        if para.strip():
            out.extend(" ".join(s.split()) for s in punkt.tokenize(para))
    return [s for s in out if s]
