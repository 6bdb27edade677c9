"""Every builder learns a tiny phrase set with negation perfectly, trained by the shipped
sentiment recipe with nothing changed but the data and the builder.

80 phrases: 10 adjectives (5 good, 5 bad) in 8 templates, 4 plain and 4 negated.  The 20 test
phrases are pairs never seen in training, but every test adjective was seen in training both
plain and negated, and every template with good and bad adjectives: what a model must learn is
that "not" flips the word it comes before."""

from __future__ import annotations

import pytest

from conftest import RECIPES, write
from zoo.engine import run
from zoo.recipe import load_recipe

pytestmark = pytest.mark.slow   # trains every builder

GOOD = ["good", "great", "nice", "happy", "lovely"]
BAD = ["bad", "awful", "sad", "boring", "ugly"]
TEMPLATES = ["{}", "not {}", "it is {}", "it is not {}", "i am {}", "i am not {}",
             "the film was {}", "the film was not {}"]   # even: plain, odd: negated


def phrase_sets() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    train, test = [], []
    for i, adj in enumerate(GOOD + BAD):
        held = {2 * (i % 4), 2 * ((i + 1) % 4) + 1}   # one plain, one negated template
        for t, template in enumerate(TEMPLATES):
            positive = (adj in GOOD) != (t % 2 == 1)
            row = (template.format(adj), "pos" if positive else "neg")
            (test if t in held else train).append(row)
    return train, test


def test_the_phrase_sets_are_what_the_docstring_says():
    train, test = phrase_sets()
    assert len(train) == 60 and len(test) == 20
    assert not {t for t, _ in train} & {t for t, _ in test}
    for adj in GOOD + BAD:
        seen = [t for t, _ in train if t.endswith(" " + adj) or t == adj]
        assert any("not" in t for t in seen) and any("not" not in t for t in seen)
    assert sum(lab == "pos" for _, lab in test) == 10


def _csv(path, rows):
    return write(path, "text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows))


@pytest.mark.parametrize("name", ["lstm", "gru", "simple-rnn", "tanh-rnn", "bi-lstm", "bi-gru"])
def test_every_builder_learns_negation_from_sixty_phrases(store, tmp_path, name):
    train, test = phrase_sets()
    _csv(tmp_path / "train.csv", train)
    _csv(tmp_path / "test.csv", test)
    recipe = load_recipe(RECIPES / "lstm_sentiment.yaml", [
        f"data.path={tmp_path / 'train.csv'}", f"data.test_path={tmp_path / 'test.csv'}",
        f"model.name={name}", "train.verbose=0", "track.registered_name=phrases"])
    res = run(recipe, echo=lambda *a: None)
    assert res.test_metrics["accuracy"] == 1.0, res.test_metrics
