"""Training that fits the corpus and the clock: epochs: auto, train.time_budget, learning-rate
schedules, and the reason a run stopped, recorded on the run."""

from __future__ import annotations

import re

import pytest

from conftest import write
from zoo.engine import run
from zoo.recipe import load_recipe

pytestmark = pytest.mark.slow   # trains through the engine

ECHO = """
task: echo
data: {total_series_length: 1500, eval_series_length: 750, truncated_backprop_length: 15}
model: {name: tanh-rnn, units: 4}
train: {batch_size: 5, seed: 1, verbose: 0, optimizer: {learning_rate: 0.02}}
track: {registered_name: echo-fit, promote: never}
"""


def _run(tmp_path, *overrides):
    recipe = write(tmp_path / "echo.yaml", ECHO)
    return run(load_recipe(recipe, list(overrides)), echo=lambda *a: None)


def _tags(store, run_id):
    import mlflow

    return mlflow.MlflowClient(store).get_run(run_id).data.tags


def test_epochs_auto_stops_when_validation_stops_improving(store, tmp_path):
    res = _run(tmp_path, "train.epochs=auto", "train.optimizer.learning_rate=0.05")
    stopped = _tags(store, res.run_id)["zoo.stopped"]
    assert 2 < res.epochs_run < 1000
    m = re.match(r"no val_loss improvement for (\d+) epochs \(best epoch (\d+) of (\d+), its "
                 r"weights kept\)$", stopped)
    assert m, stopped
    since, best, of = map(int, m.groups())
    assert of == res.epochs_run and since == of - best and since >= 2   # patience 2


def test_time_budget_stops_training_where_it_runs_out(store, tmp_path):
    res = _run(tmp_path, "train.epochs=500", "train.time_budget=0.1")
    tags = _tags(store, res.run_id)
    assert tags["zoo.stopped"].startswith("the time budget of 0.1 min")
    assert 1 <= res.epochs_run < 500 and float(tags["zoo.train_seconds"]) > 0


def test_learning_rate_schedules(store, tmp_path):
    import mlflow

    cos = _run(tmp_path, "train.epochs=3", "train.lr_schedule={name: cosine, final_fraction: 0.1}")
    assert _tags(store, cos.run_id)["zoo.stopped"] == "all 3 epochs"
    lrs = [m.value for m in mlflow.MlflowClient(store).get_metric_history(cos.run_id, "learning_rate")]
    assert len(lrs) == 3 and lrs[0] > lrs[1] > lrs[2] >= 0.02 * 0.1
    # epochs: auto with a time budget: the cosine runs by the clock, over the budget
    clock = _run(tmp_path, "train.epochs=auto", "train.time_budget=0.15",
                 "train.early_stopping={patience: 1000}", "train.lr_schedule={name: cosine}")
    lrs = [m.value for m in mlflow.MlflowClient(store).get_metric_history(clock.run_id, "learning_rate")]
    assert len(lrs) >= 2 and all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] < 0.02 * 0.5
    plateau = _run(tmp_path, "train.epochs=4", "train.optimizer.learning_rate=1.0",
                   "train.lr_schedule={name: plateau, factor: 0.5, patience: 0}")
    hist = mlflow.MlflowClient(store).get_metric_history(plateau.run_id, "learning_rate")
    assert hist and hist[-1].value < hist[0].value   # patience 0: it was cut at least once


@pytest.mark.parametrize("override, message", [
    ("train.epochs=soon", "train.epochs: input should be"),
    ("train.time_budget=-1", "train.time_budget: input should be greater than 0"),
])
def test_bad_values_named(tmp_path, override, message):
    from zoo.errors import ZooError

    with pytest.raises(ZooError, match=message):
        load_recipe(write(tmp_path / "echo.yaml", ECHO), [override])
    with pytest.raises(ZooError, match="lr_schedule cosine decays over a known number of epochs "
                                       "or a time budget"):
        load_recipe(write(tmp_path / "echo.yaml", ECHO),
                    ["train.epochs=auto", "train.lr_schedule={name: cosine}"])


@pytest.mark.parametrize("pooling", ["attention", "max"])
def test_sentiment_pooling_heads_train_save_and_load(store, tmp_path, pooling):
    import zoo

    write(tmp_path / "data" / "pos.txt", "\n".join(f"a good {w} film" for w in "abcdefghij") + "\n")
    write(tmp_path / "data" / "neg.txt", "\n".join(f"a bad {w} film" for w in "abcdefghij") + "\n")
    recipe = write(tmp_path / "s.yaml", f"""
task: {{name: sentiment, embedding_dim: 8, pooling: {pooling}, embedding_dropout: 0.1}}
data: {{path: data, format: files, val_fraction: 0.2, test_fraction: 0.2}}
model: {{name: gru, units: 8}}
train: {{epochs: 30, batch_size: 4, verbose: 0, optimizer: {{learning_rate: 0.02}}}}
track: {{registered_name: pool-{pooling}}}
""")
    res = run(load_recipe(recipe), echo=lambda *a: None)
    assert res.test_metrics["accuracy"] >= 0.75   # 4 test sentences
    m = zoo.load(f"pool-{pooling}/{res.version}")
    layer = m.keras_model.get_layer(f"{pooling}_pooling")
    assert layer is not None
    got = m.predict(["a good a film", "a bad b film"])
    assert [g["label"] for g in got] == ["pos", "neg"]


def test_auto_epochs_of_several_passes_resume_as_if_never_stopped(store, tmp_path):
    """On data of 20 steps a pass, an auto epoch is 3 passes; a run stopped (Ctrl+C) after its
    second epoch and resumed ends with the history and metrics of a run never stopped."""
    import mlflow

    overrides = ["train.epochs=auto", "train.optimizer.learning_rate=0.05"]
    recipe = load_recipe(write(tmp_path / "echo.yaml", ECHO), overrides)

    def interrupt(epoch, logs):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(recipe, echo=lambda *a: None, on_epoch=interrupt)
    c = mlflow.MlflowClient(store)
    exp = c.get_experiment_by_name("echo")
    (killed,) = c.search_runs([exp.experiment_id], "attributes.status = 'KILLED'")
    resumed = run(recipe, echo=lambda *a: None, resume=killed.info.run_id)
    straight = run(recipe, echo=lambda *a: None)
    assert resumed.run_id == killed.info.run_id and resumed.epochs_run == straight.epochs_run > 2

    def losses(run_id):
        return [m.value for m in sorted(c.get_metric_history(run_id, "loss"), key=lambda m: m.step)]

    assert losses(resumed.run_id) == pytest.approx(losses(straight.run_id), rel=1e-5)
    assert resumed.test_metrics == pytest.approx(straight.test_metrics, rel=1e-5, abs=1e-6)
    tags = _tags(store, resumed.run_id)
    assert tags["zoo.passes_per_epoch"] == "3" and tags["zoo.stopped"] == _tags(
        store, straight.run_id)["zoo.stopped"]


def test_the_console_tells_the_truth_about_auto_epochs_and_the_budget(store, tmp_path, capsys):
    """Under epochs: auto no `Epoch 1/1000` but what ends training and the time left; an epoch
    that the budget cuts short says after how many of its steps."""
    res = _run(tmp_path, "train.epochs=auto", "train.time_budget=0.02", "train.verbose=2",
               "data.total_series_length=60000")
    out = capsys.readouterr().out
    assert "Epoch " not in out and "/1000" not in out, out
    headers = [ln for ln in out.splitlines() if ln.startswith("epoch ")]
    assert len(headers) == res.epochs_run >= 1, out
    assert re.fullmatch(r"epoch 1 \(auto: until val_loss stops improving, [\d.]+ of 0\.02 min "
                        r"left\)", headers[0]), headers
    m = re.search(r"stopped by the time budget after (\d+) of (\d+) steps", out)
    assert m and int(m.group(1)) < int(m.group(2)) == 800, out
    assert _tags(store, res.run_id)["zoo.stopped"].endswith("the last one cut short)")
