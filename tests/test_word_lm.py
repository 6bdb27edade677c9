"""The word-level language model on a small text the tests write."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from conftest import write
from zoo.errors import ZooError
from zoo.recipe import load_recipe

pytestmark = pytest.mark.slow   # trains word models

SUBJECTS = ["the king", "the queen", "my lord", "the fool", "a soldier"]
VERBS = ["speaks", "laughs", "weeps", "waits", "sings"]
ENDS = ["in the hall.", "at the gate.", "by the sea.", "with the night.", "for the crown."]


def text(n=600, seed=0):
    rng = random.Random(seed)
    return " ".join(f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} {rng.choice(ENDS)}"
                    for _ in range(n)) + " Zyzzyva quux."


def recipe(tmp_path, epochs=3):
    write(tmp_path / "corpus.txt", text())
    return write(tmp_path / "lm.yaml", f"""
task: {{name: word-lm, embedding_dim: 16}}
data: {{path: corpus.txt, vocabulary_size: 30, max_length: 12, val_fraction: 0.1, test_fraction: 0.1}}
model: {{name: gru, units: 32}}
train: {{epochs: {epochs}, batch_size: 32, seed: 1, verbose: 0, optimizer: {{learning_rate: 0.01}}}}
""")


def test_trains_beats_unigram_and_generates(store, tmp_path):
    import mlflow

    import zoo
    from zoo.engine import run

    res = run(load_recipe(recipe(tmp_path)), echo=lambda *a: None)
    m = res.test_metrics
    assert m["perplexity"] == pytest.approx(math.exp(m["loss"]), rel=1e-4)
    assert m["perplexity"] < 0.6 * m["unigram_perplexity"]
    hist = mlflow.MlflowClient().get_metric_history(res.run_id, "val_perplexity")
    assert len(hist) == 3
    model = zoo.load("gru-word-lm")
    sents = model.generate(n_sentences=5, min_length=4, temperature=1.0, seed=3)
    assert len(sents) == 5
    vocab = set(model.preprocessing["vocab"]["words"])
    for s in sents:
        words = s.replace(".", " .").split()
        assert len(words) >= 4 and "<unk>" not in words and "<s>" not in words and "</s>" not in words
        assert set(words) <= vocab
    assert model.generate(n_sentences=5, min_length=4, seed=3) == sents
    assert model.generate(n_sentences=5, min_length=4, seed=4) != sents
    assert model.generate(n_sentences=2, temperature=0, seed=1)[0] == model.generate(
        n_sentences=2, temperature=0, seed=9)[0]
    with pytest.raises(ZooError, match="n_sentences must be"):
        model.generate(n_sentences=0)
    with pytest.raises(ZooError, match="temperature must be"):
        model.generate(temperature=-1)


def test_padding_is_excluded_from_the_loss(tmp_path):
    """The loss the engine reports equals the mean cross-entropy over real words only."""
    import keras

    import zoo
    from zoo.tasks.word_lm import WordLMTask

    task = WordLMTask(load_recipe(recipe(tmp_path)))
    prep = task.prepare(fast=True)
    model = task.build(prep, zoo.build_model("lstm", units=8, return_sequences=True), None)
    model.compile(optimizer="adam", **task.compile_args())
    s = prep.test
    loss = model.evaluate(s.x, s.y, sample_weight=s.sample_weight, verbose=0, return_dict=True)["loss"]
    logits = model.predict(s.x, verbose=0)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(logp, s.y[..., None], -1)[..., 0]
    real = s.y != 0
    assert real.sum() < real.size  # there is padding
    assert loss == pytest.approx(-picked[real].mean(), rel=1e-4)
    _ = keras


def test_rejects_bidirectional_and_bad_files(tmp_path):
    path = recipe(tmp_path)
    with pytest.raises(ZooError, match="bidirectional"):
        load_recipe(path, ["model.name=bi-lstm"])
    write(tmp_path / "empty.txt", "\n\n")
    from zoo.tasks.word_lm import WordLMTask

    with pytest.raises(ZooError, match="empty.txt: file is empty"):
        WordLMTask(load_recipe(path, ["data.path=empty.txt"])).prepare()
