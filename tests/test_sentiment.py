"""The sentiment task on small labelled data the tests write: formats, masking, metrics,
prediction with the training preprocessing, and bad input."""

from __future__ import annotations

import random

import numpy as np
import pytest

from conftest import write
from zoo.errors import ZooError
from zoo.recipe import load_recipe

pytestmark = pytest.mark.slow   # trains sentiment models

GOOD = ["a gripping film", "beautifully acted and moving", "great fun", "superb and warm",
        "a delight", "wonderful story", "brilliant cast", "lovely and smart"]
BAD = ["dull and far too long", "a boring mess", "awful script", "tedious and flat",
       "a waste of time", "clumsy and dull", "terrible acting", "boring and bad"]


def corpus(tmp_path, n=120, sep=","):
    rng = random.Random(0)
    rows = [f"text{sep}label"]
    for i in range(n):
        good = i % 2 == 0
        words = rng.sample(GOOD if good else BAD, 2)
        rows.append(f"{' and '.join(words)}{sep}{'pos' if good else 'neg'}")
    return write(tmp_path / ("reviews.csv" if sep == "," else "reviews.tsv"), "\n".join(rows) + "\n")


def recipe(tmp_path, data: str, model="lstm", epochs=6):
    return write(tmp_path / "s.yaml", f"""
task: {{name: sentiment, embedding_dim: 16}}
data: {{{data}, vocabulary_size: 200, max_length: 12}}
model: {{name: {model}, units: 16}}
train: {{epochs: {epochs}, batch_size: 16, seed: 2, verbose: 0, optimizer: {{learning_rate: 0.01}}}}
""")


def run(path, *overrides, fast=False):
    from zoo.engine import run as engine_run

    return engine_run(load_recipe(path, list(overrides)), fast_dev_run=fast, echo=lambda *a: None)


def test_trains_predicts_and_logs(store, tmp_path):
    import mlflow

    import zoo

    corpus(tmp_path)
    res = run(recipe(tmp_path, "path: reviews.csv"))
    m = res.test_metrics
    assert m["accuracy"] > 0.9 and m["macro_f1"] > 0.9
    assert {"precision_pos", "precision_neg", "recall_pos", "recall_neg"} <= set(m)
    client = mlflow.MlflowClient()
    plots = {f.path for f in client.list_artifacts(res.run_id, "plots")}
    assert "plots/confusion_matrix.png" in plots
    model = zoo.load("lstm-sentiment")
    out = model.predict(["a gripping film and great fun", "a boring mess, tedious and flat"])
    assert [o["label"] for o in out] == ["pos", "neg"]
    for o in out:
        assert set(o["probabilities"]) == {"neg", "pos"}
        assert sum(o["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ZooError, match="text 1 is int"):
        model.predict(["fine", 3])
    with pytest.raises(ZooError, match="text 0 is empty"):
        model.predict(["  "])
    df = model.pyfunc_predict(["great fun"])
    assert list(df.columns) == ["label", "probability_neg", "probability_pos"]
    # the same model through MLflow's own loader, raw text in: a list or a one-column frame
    import pandas as pd

    py = mlflow.pyfunc.load_model("models:/lstm-sentiment@champion")
    out = py.predict(["a gripping film and great fun", "a boring mess"])
    assert out["label"].tolist() == ["pos", "neg"]
    out = py.predict(pd.DataFrame({"text": ["tedious and flat, awful script"]}))
    assert out["label"].tolist() == ["neg"] and 0.5 < out["probability_neg"][0] <= 1


@pytest.mark.parametrize("name", ["lstm", "gru", "simple-rnn", "tanh-rnn", "bi-gru"])
def test_padding_never_changes_the_result(name, tmp_path):
    """The same text padded to different lengths gives the same probabilities."""
    import zoo
    from zoo.tasks.sentiment import SentimentTask

    corpus(tmp_path)
    r = load_recipe(recipe(tmp_path, "path: reviews.csv", model=name))
    task = SentimentTask(r)
    prep = task.prepare(fast=True)
    model = task.build(prep, zoo.build_model(name, units=8), None)
    ids = np.array([[5, 7, 9]], np.int32)
    short = model.predict(ids, verbose=0)
    padded = model.predict(np.pad(ids, ((0, 0), (0, 9))), verbose=0)
    assert np.allclose(short, padded, atol=1e-6)


def test_formats_folders_files_and_latin1(store, tmp_path):
    for i, t in enumerate(GOOD):
        write(tmp_path / "imdb" / "good" / f"{i}.txt", t)
    for i, t in enumerate(BAD):
        write(tmp_path / "imdb" / "bad" / f"{i}.txt", t)
    res = run(recipe(tmp_path, "path: imdb, val_fraction: 0.25, test_fraction: 0.25"), fast=True)
    assert res.test_metrics
    pol = tmp_path / "pol"
    pol.mkdir()
    (pol / "rt-polarity.pos").write_bytes(("\n".join(GOOD) + "\ncaf\xe9 charm\n").encode("latin-1"))
    (pol / "rt-polarity.neg").write_bytes(("\n".join(BAD) + "\nd\xe9j\xe0 vu\n").encode("latin-1"))
    path = recipe(tmp_path, "path: pol, format: files, encoding: latin-1, val_fraction: 0.25, test_fraction: 0.25")
    assert run(path, fast=True).test_metrics
    with pytest.raises(ZooError, match=r"rt-polarity.neg: line \d+: bytes that are not utf-8"):
        run(path, "data.encoding=utf-8", fast=True)


def test_bad_input_errors(store, tmp_path):
    corpus(tmp_path)
    path = recipe(tmp_path, "path: reviews.csv")
    with pytest.raises(ZooError, match=r"reviews.csv: data.label_column: no column 'stars'"):
        run(path, "data.label_column=stars", fast=True)
    write(tmp_path / "one.csv", "text,label\n" + "".join(f"fine {i},pos\n" for i in range(10)))
    with pytest.raises(ZooError, match=r"one.csv: only one label"):
        run(path, "data.path=one.csv", fast=True)
    write(tmp_path / "empty.csv", "text,label\ngood,pos\n,neg\nbad,neg\n")
    with pytest.raises(ZooError, match=r"empty.csv: line 3: empty text"):
        run(path, "data.path=empty.csv", fast=True)
    with pytest.raises(ZooError, match=r"data.path: file not found: nope.csv"):
        load_recipe(path, ["data.path=nope.csv"])
    with pytest.raises(ZooError, match=r"data.encoding: unknown encoding 'latin-99'"):
        load_recipe(path, ["data.encoding=latin-99"])
    import mlflow

    assert not mlflow.MlflowClient().search_experiments(filter_string="name = 'sentiment'")


@pytest.mark.network
def test_default_rotten_tomatoes_fast_dev_run(store):
    from conftest import RECIPES

    res = run(RECIPES / "lstm_sentiment.yaml", fast=True)
    assert res.registered_name == "lstm-sentiment"


def test_tanh_rnn_trains_on_masked_text_of_unknown_length(store, tmp_path):
    corpus(tmp_path)
    res = run(recipe(tmp_path, "path: reviews.csv", model="tanh-rnn", epochs=4))
    assert res.test_metrics["accuracy"] > 0.8
