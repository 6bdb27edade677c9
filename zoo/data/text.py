"""Reading user text files, contiguous splits, character and word vocabularies, and NLTK
tokenizers that need no downloaded NLTK data."""

from __future__ import annotations

import codecs
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from zoo.errors import ZooError


def decode_bytes(data: bytes, path: Path | str, encoding: str, key: str = "data.encoding") -> str:
    """Decode a file's bytes, or raise one line naming the file, the line and the encoding."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ZooError(f"{key}: unknown encoding {encoding!r}") from None
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ZooError(f"{path}: line {line}: bytes that are not {encoding} (set {key}, "
                       "e.g. latin-1)") from None


def read_text_file(path: str | Path, encoding: str = "utf-8") -> str:
    """A user's text file as str: clear errors for a missing, empty or binary file, an unknown
    encoding, or bytes the encoding cannot decode."""
    path = Path(path)
    if not path.exists():
        raise ZooError(f"{path}: file not found")
    if path.is_dir():
        raise ZooError(f"{path}: is a directory, expected a text file")
    data = path.read_bytes()
    if b"\x00" in data[:65536]:
        raise ZooError(f"{path}: looks like a binary file (it holds NUL bytes), expected text")
    text = decode_bytes(data, path, encoding)
    if not text.strip():
        raise ZooError(f"{path}: file is empty")
    return text.replace("\r\n", "\n")


def split_by_fraction(text: str, val_fraction: float, test_fraction: float) -> tuple[str, str, str]:
    """Contiguous (train, val, test) parts: the last fractions are held out."""
    n = len(text)
    n_test = int(n * test_fraction)
    n_val = int(n * val_fraction)
    n_train = n - n_val - n_test
    return text[:n_train], text[n_train:n_train + n_val], text[n_train + n_val:]


class CharVocab:
    """Characters of the training text; id 0 is reserved for characters never seen."""

    UNKNOWN = 0

    def __init__(self, chars: Sequence[str]) -> None:
        self.chars = list(chars)
        self.index = {c: i + 1 for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharVocab":
        return cls(sorted(set(text)))

    def __len__(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str) -> np.ndarray:
        get = self.index.get
        return np.fromiter((get(c, 0) for c in text), dtype=np.int32, count=len(text))

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i - 1] if 0 < i <= len(self.chars) else "\ufffd" for i in ids)

    def unknown_chars(self, text: str) -> set[str]:
        return {c for c in text if c not in self.index}

    def to_json(self) -> dict[str, Any]:
        return {"type": "char", "chars": self.chars}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "CharVocab":
        return cls(data["chars"])


class WordTokenizer:
    """Words and punctuation with NLTK's regular-expression tokenizer (no NLTK data needed)."""

    PATTERN = r"[A-Za-z0-9]+(?:['’][A-Za-z]+)*|[^\sA-Za-z0-9]"

    def __init__(self, lowercase: bool = True) -> None:
        from nltk.tokenize import RegexpTokenizer

        self.lowercase = lowercase
        self._tok = RegexpTokenizer(self.PATTERN)

    def tokenize(self, text: str) -> list[str]:
        return self._tok.tokenize(text.lower() if self.lowercase else text)

    def to_json(self) -> dict[str, Any]:
        return {"type": "nltk-regexp", "pattern": self.PATTERN, "lowercase": self.lowercase}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "WordTokenizer":
        if data.get("pattern", cls.PATTERN) != cls.PATTERN:
            raise ZooError("the model was trained with a tokenizer pattern this zoo does not know")
        return cls(lowercase=data["lowercase"])


class WordVocab:
    """The most frequent words; id 0 pads, id 1 stands for words outside the vocabulary."""

    PAD, UNK = "<pad>", "<unk>"

    def __init__(self, words: Sequence[str]) -> None:
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], max_size: int,
              specials: Sequence[str] = ()) -> "WordVocab":
        counts = Counter(t for tokens in token_lists for t in tokens)
        head = [cls.PAD, cls.UNK, *[s for s in specials if s not in (cls.PAD, cls.UNK)]]
        for s in head:
            counts.pop(s, None)
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return cls(head + [w for w, _ in ranked[: max(0, max_size - len(head))]])

    def __len__(self) -> int:
        return len(self.words)

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    def encode(self, tokens: Sequence[str]) -> list[int]:
        return [self.index.get(t, 1) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.words[i] for i in ids]

    def to_json(self) -> dict[str, Any]:
        return {"type": "word", "words": self.words}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "WordVocab":
        return cls(data["words"])


def split_sentences(text: str) -> list[str]:
    """Sentences by a Punkt tokenizer trained on the text itself (no NLTK data download)."""
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    tokenizer = PunktSentenceTokenizer(text)
    return [s.strip() for s in tokenizer.tokenize(text) if s.strip()]
