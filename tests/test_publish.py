"""Publishing: the baseline guard that sampling noise cannot pass (its rule, in numbers), and the
one publisher that `zoo run` and `zoo sweep` share, on real runs (slow tests at the end)."""

from __future__ import annotations

import math

import pytest

from conftest import RECIPES
from zoo.publish import baseline_guard, binomial_p_value
from zoo.tasks import get_task

ECHO = get_task("echo")          # main metric accuracy: the binomial rule
CHAR = get_task("char-rnn")      # main metric bpc, a function of the loss: the loss-margin rule


def test_binomial_p_value_is_the_exact_upper_tail():
    assert binomial_p_value(8, 10, 0.5) == pytest.approx((45 + 10 + 1) / 1024)
    assert binomial_p_value(0, 10, 0.3) == 1.0 and binomial_p_value(11, 10, 0.3) == 0.0
    assert binomial_p_value(10, 10, 0.5) == pytest.approx(2 ** -10)
    # a large n, against the normal approximation: 5,100 of 10,000 at 0.5 is z = 2, p ~ 0.023
    assert binomial_p_value(5100, 10_000, 0.5) == pytest.approx(0.0228, abs=0.002)


def test_the_diverged_echo_run_of_the_issue_is_not_better_than_the_baseline():
    """Accuracy 0.4985 against 0.4934 over 9,960 positions, with a test loss of 557,969."""
    g = baseline_guard(ECHO, {"accuracy": 0.4985, "loss": 557969.25, "baseline_accuracy": 0.4934,
                              "baseline_loss": 0.6923}, 9960)
    assert not g.passed
    assert g.reason.startswith("not better than the trivial baseline: ")
    assert "test_loss 557969 does not beat" in g.reason and "within the test split's noise" in g.reason
    assert 0.1 < float(g.numbers["p_value"]) < 0.2 and g.numbers["n"] == "9960"
    tags = g.tags()
    assert tags["zoo.guard.passed"] == "false" and tags["zoo.guard.baseline_loss"] == "0.6923"


@pytest.mark.parametrize("accuracy, n, passed", [
    (0.51, 1000, False),     # half a standard error: noise
    (0.53, 1000, False),     # p ~ 0.03: not at 1 %
    (0.54, 1000, True),      # p ~ 0.007
    (0.51, 100_000, True),   # the same margin on a large split is real
    (0.45, 1000, False),     # below the baseline
])
def test_an_accuracy_must_beat_the_baseline_beyond_binomial_noise(accuracy, n, passed):
    g = baseline_guard(ECHO, {"accuracy": accuracy, "loss": 0.6, "baseline_accuracy": 0.5,
                              "baseline_loss": 0.69}, n)
    assert g.passed is passed, g.reason


def test_the_loss_must_beat_the_baseline_too():
    g = baseline_guard(ECHO, {"accuracy": 0.9, "loss": 0.7, "baseline_accuracy": 0.5,
                              "baseline_loss": 0.69}, 10_000)
    assert not g.passed and "test_loss 0.7 does not beat" in g.reason
    nan = baseline_guard(ECHO, {"accuracy": 0.9, "loss": math.nan, "baseline_accuracy": 0.5,
                                "baseline_loss": 0.69}, 10_000)
    assert not nan.passed


def test_a_loss_like_metric_must_beat_the_baseline_beyond_its_noise():
    base = {"baseline_bpc": 5.0, "baseline_loss": 5.0 * math.log(2)}
    near = {"bpc": 4.95, "loss": 4.95 * math.log(2), **base}
    assert not baseline_guard(CHAR, near, 1000).passed       # threshold 2.326 * 4.9 / 31.6 nats
    assert baseline_guard(CHAR, near, 1_000_000).passed
    far = {"bpc": 2.0, "loss": 2.0 * math.log(2), **base}
    g = baseline_guard(CHAR, far, 1000)
    assert g.passed and float(g.numbers["margin"]) > float(g.numbers["threshold"])


def test_no_baseline_no_guard():
    assert baseline_guard(ECHO, {"accuracy": 0.9, "loss": 0.1}, 100) is None


def test_every_task_declares_its_metrics_directions():
    from zoo.tasks import list_tasks

    for name in list_tasks():
        task = get_task(name)
        assert task.direction(f"val_{task.main_metric}") == ("max" if task.greater_is_better
                                                             else "min"), name
        assert task.direction("test_loss") == "min", name


# ------------------------------------------------------------------------------- real runs


@pytest.mark.slow
def test_the_diverged_echo_run_crowns_no_champion(store):
    """The run of the issue: `zoo run recipes/echo.yaml --set train.optimizer.learning_rate=1e6
    --set train.epochs=1 --set data.total_series_length=3000`."""
    import mlflow

    from zoo.engine import run
    from zoo.recipe import load_recipe

    recipe = load_recipe(RECIPES / "echo.yaml", ["train.optimizer.learning_rate=1e6",
                                                 "train.epochs=1", "train.verbose=0",
                                                 "data.total_series_length=3000"])
    res = run(recipe, echo=lambda *a: None)
    assert res.version == "1" and res.promoted is False
    assert res.promotion.startswith("not better than the trivial baseline")
    c = mlflow.MlflowClient(store)
    assert not c.get_registered_model(res.registered_name).aliases      # no champion
    mv = c.get_model_version(res.registered_name, "1")
    assert mv.tags["zoo.guard.passed"] == "false" and int(mv.tags["zoo.guard.n"]) > 9000
    assert float(mv.tags["zoo.guard.loss"]) > float(mv.tags["zoo.guard.baseline_loss"])
    assert "**not better than the trivial baseline**" in mv.description
    assert c.get_run(res.run_id).data.tags["mlflow.note.content"] == mv.description


def test_the_sweep_publishes_through_the_public_api_only():
    """No private recipe loading in the sweep, no JSON tag carrying state between the phases."""
    import re

    from conftest import ROOT

    for path in (ROOT / "zoo").glob("sweep*.py"):
        text = path.read_text()
        assert not re.search(r"from zoo\.recipe import[^\n]*\b_\w+", text), path
        assert "tracking.promote(" not in text and "tracking.register(" not in text, path
    assert not any("zoo.version_tags" in p.read_text() for p in (ROOT / "zoo").rglob("*.py"))
