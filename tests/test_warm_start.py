"""model.init_from: a sentiment model warm-started from a registered word-level language model
(its vocabulary, embedding and recurrent weights), and the ways a source can fail to fit."""

from __future__ import annotations

import random

import numpy as np
import pytest

from conftest import write
from zoo.errors import ZooError
from zoo.recipe import load_recipe

pytestmark = pytest.mark.slow   # trains and warm-starts models

GOOD = ["gripping", "moving", "superb", "warm", "wonderful", "brilliant", "lovely", "smart"]
BAD = ["dull", "boring", "awful", "tedious", "clumsy", "terrible", "flat", "messy"]


def _lm(tmp_path, model="lstm", units=16, embedding=16, name="review-lm"):
    rng = random.Random(0)
    text = " ".join(f"The film was {rng.choice(GOOD + BAD)} and {rng.choice(GOOD + BAD)}."
                    for _ in range(400))
    write(tmp_path / "unlabelled.txt", text)
    return write(tmp_path / f"{name}.yaml", f"""
task: {{name: word-lm, embedding_dim: {embedding}}}
data: {{path: unlabelled.txt, vocabulary_size: 40, max_length: 10}}
model: {{name: {model}, units: {units}}}
train: {{epochs: 2, batch_size: 32, seed: 1, verbose: 0, optimizer: {{learning_rate: 0.01}}}}
track: {{registered_name: {name}}}
""")


def _classifier(tmp_path, model="lstm", extra=""):
    rows = ["text,label"] + [f"the film was {w},{'pos' if w in GOOD else 'neg'}"
                             for w in GOOD + BAD for _ in range(3)]
    write(tmp_path / "labelled.csv", "\n".join(rows) + "\n")
    return write(tmp_path / "cls.yaml", f"""
task: {{name: sentiment, embedding_dim: 16}}
data: {{path: labelled.csv, vocabulary_size: 100, max_length: 10}}
model: {{name: {model}, units: 16, init_from: review-lm@champion{extra}}}
train: {{epochs: 1, batch_size: 8, seed: 3, verbose: 0, optimizer: {{learning_rate: 1.0e-9}}}}
track: {{registered_name: warm-cls}}
""")


def _run(path, *overrides):
    from zoo.engine import run

    return run(load_recipe(path, list(overrides)), echo=lambda *a: None)


def _weights(keras_model, kinds):
    return [w for layer in keras_model.layers if type(layer).__name__ in kinds
            for w in layer.get_weights()]


@pytest.mark.parametrize("model", ["lstm", "bi-lstm"])
def test_warm_start_takes_vocabulary_embedding_and_recurrent_weights(store, tmp_path, model):
    import mlflow

    import zoo

    _run(_lm(tmp_path))
    res = _run(_classifier(tmp_path, model))
    lm, cls = zoo.load("review-lm"), zoo.load("warm-cls")
    assert cls.preprocessing["vocab"] == lm.preprocessing["vocab"]
    assert cls.preprocessing["tokenizer"] == lm.preprocessing["tokenizer"]
    # a learning rate of 1e-9 for a few steps: what the classifier holds is the LM's weights
    src_emb = lm.keras_model.get_layer("embedding").get_weights()[0]
    assert np.allclose(cls.keras_model.get_layer("embedding").get_weights()[0], src_emb, atol=1e-6)
    src_rnn = _weights(lm.keras_model, {"LSTM"})
    got = _weights(cls.keras_model, {"LSTM", "Bidirectional"})
    assert len(got) == len(src_rnn) * (2 if model == "bi-lstm" else 1)
    for i, w in enumerate(got):
        assert np.allclose(w, src_rnn[i % len(src_rnn)], atol=1e-6)
    tags = mlflow.MlflowClient().get_run(res.run_id).data.tags
    assert tags["zoo.init_from"] == "review-lm/1"
    # the source's words are the classifier's words: all of the labelled words are known
    params = mlflow.MlflowClient().get_run(res.run_id).data.params
    assert params["model.init_from"] == "review-lm@champion"
    assert params["data_info.oov_rate"] == "0.0"
    assert cls.predict(["the film was superb"])[0]["label"] in ("pos", "neg")


def test_warm_start_changes_what_is_learned(store, tmp_path):
    """With a real learning rate the warm-started run differs from the cold one (same seed)."""
    _run(_lm(tmp_path))
    path = _classifier(tmp_path)
    warm = _run(path, "train.optimizer.learning_rate=0.01", "train.epochs=2")
    cold = _run(path, "train.optimizer.learning_rate=0.01", "train.epochs=2",
                "model.init_from=null")
    assert warm.test_metrics["loss"] != pytest.approx(cold.test_metrics["loss"], rel=1e-4)


def test_sources_that_do_not_fit_fail_before_any_run(store, tmp_path):
    import mlflow

    _run(_lm(tmp_path))
    path = _classifier(tmp_path)
    cases = [
        (["task.embedding_dim=8"], r"cls.yaml: model.init_from: review-lm@champion embeds words "
                                   r"in 16 dimensions, this recipe in 8: set task.embedding_dim: 16"),
        (["model.units=8"], r"model.init_from: review-lm@champion: its recurrent layer 1 is LSTM "
                            r"of 16 units, this recipe's is LSTM of 8 units"),
        (["model.name=gru"], r"its recurrent layer 1 is LSTM of 16 units, this recipe's is GRU"),
        (["model.layers=2"], r"has 1 recurrent layer\(s\), this recipe 2: set model.layers to at most 1"),
        (["model.init_from=no-such-lm"], r"cls.yaml: model.init_from: .*no-such-lm"),
    ]
    for overrides, message in cases:
        with pytest.raises(ZooError, match=message):
            _run(path, *overrides)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("sentiment")
    assert exp is None or not client.search_runs([exp.experiment_id])


def test_init_from_is_checked_with_the_recipe(tmp_path):
    path = _classifier(tmp_path)
    with pytest.raises(ZooError, match=r"model.init_from: expected a registered model as NAME, "
                                       r"NAME@ALIAS or NAME/VERSION"):
        load_recipe(path, ["model.init_from=[1, 2]"])
    with pytest.raises(ZooError, match=r"model.init_from: expected"):
        load_recipe(path, ["model.init_from=bad name"])
    echo = write(tmp_path / "echo.yaml", "task: echo\nmodel: {name: gru, units: 4, init_from: x}\n")
    with pytest.raises(ZooError, match=r"echo.yaml: model.init_from: task 'echo' cannot "
                                       r"warm-start from another model \(tasks that can: sentiment\)"):
        load_recipe(echo)
    r = load_recipe(path)
    assert r.init_from == "review-lm@champion"
    assert r.resolved()["model"]["init_from"] == "review-lm@champion"
    assert "init_from" not in load_recipe(path, ["model.init_from=null"]).resolved()["model"]


def test_a_source_without_words_is_refused(store, tmp_path):
    write(tmp_path / "chars.txt", "the film was warm.\n" * 200)
    write(tmp_path / "c.yaml", """
task: {name: char-rnn, embedding_dim: 16}
data: {path: chars.txt, seq_len: 20}
model: {name: lstm, units: 16}
train: {epochs: 1, batch_size: 8, verbose: 0, optimizer: {learning_rate: 0.02}}
track: {registered_name: review-lm}
""")
    assert _run(tmp_path / "c.yaml").promoted   # it learned: beyond the trivial baseline
    with pytest.raises(ZooError, match=r"model.init_from: review-lm@champion is a char-rnn "
                                       r"model, which has no word vocabulary"):
        _run(_classifier(tmp_path))
