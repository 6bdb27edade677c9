"""The one engine, end to end on the echo task: tracking, registration, determinism, resume,
fast dev runs of every shipped recipe, and a real `mlflow server` on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import ECHO_SMALL, RECIPES, write
from zoo.errors import ZooError
from zoo.recipe import load_recipe

pytestmark = pytest.mark.slow   # trains through the engine, starts processes

SMALL_ECHO = ECHO_SMALL + "track: {experiment: echo-test}\n"


def run_recipe(path, overrides=(), **kw):
    from zoo.engine import run

    return run(load_recipe(path, overrides), echo=lambda *a: None, **kw)


def client():
    import mlflow

    return mlflow.MlflowClient()


def test_echo_run_is_tracked_and_registered(store, tmp_path):
    recipe = write(tmp_path / "echo.yaml", SMALL_ECHO)
    res = run_recipe(recipe)
    assert res.registered_name == "tanh-rnn-echo" and res.version == "1"
    assert res.test_metrics["accuracy"] > 0.9, res.test_metrics
    c = client()
    run = c.get_run(res.run_id)
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["zoo.task"] == "echo" and tags["zoo.model"] == "tanh-rnn"
    assert tags["zoo.fast_dev_run"] == "false" and len(tags["zoo.recipe_hash"]) == 16
    assert len(tags["zoo.data_hash"]) == 16 and tags["zoo.version"]
    assert run.data.params["model.units"] == "4" and run.data.params["train.epochs"] == "3"
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        assert len(c.get_metric_history(res.run_id, key)) == 3, key
    assert run.data.metrics["test_accuracy"] == pytest.approx(res.test_metrics["accuracy"])
    files = {f.path for f in c.list_artifacts(res.run_id)} | {
        f.path for f in c.list_artifacts(res.run_id, "plots")}
    assert {"recipe.yaml", "plots/loss_curve.png", "plots/echo_batch.png"} <= files
    mv = c.get_model_version("tanh-rnn-echo", "1")
    assert mv.tags["zoo.task"] == "echo" and float(mv.tags["test_accuracy"]) > 0.9
    assert not (Path("mlruns") / "checkpoints" / res.run_id).exists()

    import zoo

    model = zoo.load("tanh-rnn-echo")
    series = [1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0, 0, 0, 1, 1, 0, 1, 0, 0]
    pred = model.predict([series])[0]
    assert pred[3:] == series[:-3]


def test_same_seed_same_metrics(store, tmp_path):
    recipe = write(tmp_path / "echo.yaml", SMALL_ECHO.replace("epochs: 3", "epochs: 1"))
    a = run_recipe(recipe)
    b = run_recipe(recipe)
    assert a.test_metrics == b.test_metrics
    c = run_recipe(recipe, ["train.seed=8"])
    assert c.test_metrics != a.test_metrics


def test_fast_dev_run_is_tagged(store, tmp_path):
    recipe = write(tmp_path / "echo.yaml", SMALL_ECHO)
    res = run_recipe(recipe, fast_dev_run=True)
    run = client().get_run(res.run_id)
    assert run.data.tags["zoo.fast_dev_run"] == "true"
    assert len(client().get_metric_history(res.run_id, "loss")) == 1
    mv = client().get_model_version(res.registered_name, res.version)
    assert mv.tags["zoo.fast_dev_run"] == "true"


def test_validation_error_creates_no_run(store, tmp_path):
    recipe = write(tmp_path / "echo.yaml", SMALL_ECHO)
    out = subprocess.run([sys.executable, "-m", "zoo.cli", "run", str(recipe),
                          "--set", "train.epochs=0"], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0, out.stderr
    assert "echo.yaml: train.epochs" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.glob("*.yaml")))
def test_fast_dev_run_every_recipe(store, recipe):
    needs_corpus = "echo" not in recipe
    if needs_corpus and os.environ.get("ZOO_OFFLINE"):
        pytest.skip("needs the package index for the default corpus")
    res = run_recipe(RECIPES / recipe, fast_dev_run=True)
    assert res.version == "1" and res.test_metrics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_resume_after_kill_matches_uninterrupted(store, tmp_path):
    """Kill a run after its first epoch; --resume ends with the metrics of a run never killed."""
    recipe = write(tmp_path / "echo.yaml", SMALL_ECHO.replace("epochs: 3", "epochs: 4")
                   .replace("total_series_length: 6000", "total_series_length: 30000")
                   .replace("units: 4", "units: 4, dropout: 0.1"))
    env = {**os.environ}
    proc = subprocess.Popen([sys.executable, "-m", "zoo.cli", "run", str(recipe)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckroot = tmp_path / "mlruns" / "checkpoints"
    deadline = time.time() + 240
    state = None
    while time.time() < deadline and proc.poll() is None:
        states = list(ckroot.glob("*/latest/state.json"))
        if states:
            state = states[0]
            break
        time.sleep(0.05)
    assert state is not None, proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_id = state.parent.parent.name
    done = json.loads(state.read_text())["epoch"] + 1
    assert done < 4, "the run finished before it could be killed"
    assert client().get_run(run_id).info.status == "RUNNING"

    resumed = run_recipe(recipe, resume=run_id)
    straight = run_recipe(recipe)
    assert resumed.run_id == run_id
    assert resumed.test_metrics == pytest.approx(straight.test_metrics, rel=1e-5, abs=1e-6)
    hist = [m.value for m in sorted(client().get_metric_history(run_id, "loss"), key=lambda m: m.step)]
    ref = [m.value for m in sorted(client().get_metric_history(straight.run_id, "loss"), key=lambda m: m.step)]
    assert hist == pytest.approx(ref, rel=1e-5)
    assert client().get_run(run_id).info.status == "FINISHED"

    with pytest.raises(ZooError, match="already finished"):
        run_recipe(recipe, resume=run_id)
    with pytest.raises(ZooError, match="different recipe"):
        run_recipe(recipe, ["train.epochs=5"], resume=straight.run_id)


def test_tracking_against_real_mlflow_server(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        import urllib.request

        url = f"http://127.0.0.1:{port}"
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.25)
        else:
            pytest.fail("mlflow server did not start")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.setenv("ZOO_MODEL_CACHE", str(tmp_path / "cache"))
        recipe = write(tmp_path / "echo.yaml", SMALL_ECHO)
        res = run_recipe(recipe, fast_dev_run=True)
        run = client().get_run(res.run_id)
        assert run.info.status == "FINISHED"
        assert "test_accuracy" in run.data.metrics
        assert client().get_model_version("tanh-rnn-echo", "1").tags["zoo.task"] == "echo"
        assert any((tmp_path / "server-artifacts").rglob("model.keras"))
        assert not (tmp_path / "mlruns" / "mlflow.db").exists()  # nothing in the default store

        import zoo

        model = zoo.load("tanh-rnn-echo/1")
        assert model.version == "1" and len(model.predict([[1, 0, 1, 1]])[0]) == 4
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_from_recipe(store, tmp_path, precision):
    import zoo

    recipe = write(tmp_path / "echo.yaml", SMALL_ECHO)
    res = run_recipe(recipe, [f"train.precision={precision}", "model.name=lstm"], fast_dev_run=True)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        model = zoo.load(f"{res.registered_name}/{res.version}").keras_model
    assert [str(w.message) for w in said] == []  # no "Skipping variable loading for optimizer"
    moments = [v for v in model.optimizer.variables if v.path.endswith("_momentum")]
    assert moments and all(np.abs(v.numpy()).sum() > 0 for v in moments)  # the trained state
    lstm = [layer for layer in model.layers if layer.__class__.__name__ == "LSTM"][0]
    assert lstm.dtype_policy.name == precision
    assert model.get_layer("head").dtype_policy.name == "float32"  # softmax stays float32
    assert model.outputs[0].dtype == "float32"


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_resume_matches_an_uninterrupted_run(store, tmp_path, precision):
    """Stopped after its first epoch (its checkpoint: weights, optimizer and loss scale) and
    resumed, a mixed-precision run ends with the metrics of a run never stopped."""
    import mlflow

    from zoo.engine import run

    recipe = load_recipe(write(tmp_path / "echo.yaml", SMALL_ECHO),
                         [f"train.precision={precision}", "train.epochs=2",
                          "data.total_series_length=1500"])

    def ctrl_c(epoch, logs):  # at the end of the first epoch
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(recipe, echo=lambda *a: None, on_epoch=ctrl_c)
    exp = mlflow.get_experiment_by_name("echo-test").experiment_id
    killed = mlflow.search_runs([exp], "attributes.status = 'KILLED'").run_id.item()
    resumed = run(recipe, echo=lambda *a: None, resume=killed)
    straight = run(recipe, echo=lambda *a: None)
    assert resumed.run_id == killed and resumed.epochs_run == 2
    assert resumed.test_metrics == pytest.approx(straight.test_metrics, rel=1e-5, abs=1e-6)


def test_precision_auto_follows_the_cpu(store, tmp_path, monkeypatch):
    """train.precision: auto is mixed_bfloat16 where the CPU has bfloat16 matrix units (AMX),
    float32 elsewhere; the run records which."""
    import mlflow

    from zoo.engine import cpu_has_bfloat16_matrix_units, resolve_precision

    amx = tmp_path / "amx"
    amx.write_text("processor\t: 0\nflags\t\t: fpu avx512f amx_bf16 amx_tile\n")
    plain = tmp_path / "plain"
    plain.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert cpu_has_bfloat16_matrix_units(str(amx))
    assert not cpu_has_bfloat16_matrix_units(str(plain))
    assert not cpu_has_bfloat16_matrix_units(str(tmp_path / "missing"))
    assert resolve_precision("float32") == "float32"
    expected = "mixed_bfloat16" if cpu_has_bfloat16_matrix_units() else "float32"
    assert resolve_precision("auto") == expected
    from zoo import layers

    with monkeypatch.context() as m:   # a visible GPU keeps float32 (cuDNN, unmeasured in bf16)
        m.setattr(layers, "_gpu_visible", lambda: True)
        assert resolve_precision("auto") == "float32"
        assert resolve_precision("mixed_bfloat16") == "mixed_bfloat16"

    recipe = write(tmp_path / "echo.yaml", SMALL_ECHO)
    res = run_recipe(recipe, ["train.precision=auto", "model.name=gru"], fast_dev_run=True)
    run = mlflow.get_run(res.run_id)
    assert run.data.tags["zoo.precision"] == expected
    assert run.data.params["train.precision"] == "auto"


def test_mirrored_strategy_on_two_logical_cpus(store, tmp_path):
    """train.distribute: mirrored, on a CPU split into two logical devices."""
    text = "".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(300))
    write(tmp_path / "corpus.txt", text)
    recipe = write(tmp_path / "char.yaml", """
task: {name: char-rnn, embedding_dim: 8, sample_length: 20}
data: {path: corpus.txt, seq_len: 20, val_fraction: 0.1, test_fraction: 0.1}
model: {name: gru, units: 16}
train: {epochs: 1, batch_size: 16, distribute: mirrored, verbose: 0}
""")
    code = f"""
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from zoo.recipe import load_recipe
from zoo.engine import run
res = run(load_recipe({str(recipe)!r}), echo=print)
import tensorflow as tf
print("REPLICAS", tf.distribute.get_strategy().num_replicas_in_sync, len(tf.config.list_logical_devices("CPU")))
print("RESULT", res.test_metrics["bpc"])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "REPLICAS 1 2" in out.stdout  # two logical CPUs existed
    assert float(out.stdout.split("RESULT")[-1]) > 0
    import mlflow

    run = mlflow.MlflowClient().search_runs(
        [mlflow.get_experiment_by_name("char-rnn").experiment_id])[0]
    assert run.data.params["train.distribute"] == "mirrored"
    assert run.data.tags["zoo.replicas"] == "2"  # the model was trained on both devices


@pytest.mark.slow
def test_a_run_says_which_path_trains_and_why(store, tmp_path, monkeypatch):
    """Every CPU run says in one line which path its recurrent layers train on.  Without a
    compiler (PATH stripped of them) it says so and how to get one, and trains correctly on
    the graph loop; with a compiler that fails it says it compiles, then why the kernels are
    not used, and a later process does not try that compiler again; with the kernels cached it
    says they are used."""
    from zoo import native
    from zoo.engine import run

    recipe = load_recipe(write(tmp_path / "echo.yaml", SMALL_ECHO))
    monkeypatch.setenv("ZOO_NATIVE_DIR", str(tmp_path / "native"))
    monkeypatch.delenv("CXX", raising=False)
    path = os.environ["PATH"]
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))  # python, no compiler
    monkeypatch.setattr(native, "_state", {})
    said = []
    res = run(recipe, echo=said.append, fast_dev_run=False)
    notes = [s for s in said if "native" in s]
    assert notes == ["zoo: recurrent layers run on the slower graph loop, not native kernels: "
                     "no C++ compiler (g++, c++ or clang++) on PATH; install g++ (or clang) or "
                     "set CXX to a C++ compiler"]
    assert res.test_metrics["accuracy"] > 0.9, res.test_metrics

    monkeypatch.setenv("CXX", "/bin/false")
    monkeypatch.setattr(native, "_state", {})
    said.clear()
    run(recipe, echo=said.append, fast_dev_run=True)
    notes = [s for s in said if "native" in s]
    assert notes[0].startswith("zoo: compiling zoo's native recurrence kernels")
    assert notes[1].startswith("zoo: recurrent layers run on the slower graph loop, not native "
                               "kernels: building rnn_ops.cc failed")
    assert notes[1].endswith("install g++ (or clang) or set CXX to a C++ compiler")
    assert len(notes) == 2
    monkeypatch.setattr(native, "_state", {})  # as a later process: the failure is recorded
    assert not native.build_due()
    assert "recorded in" in native.why_not()

    monkeypatch.setenv("PATH", path)   # the suite's compiler and kernels again
    monkeypatch.delenv("ZOO_NATIVE_DIR")
    monkeypatch.delenv("CXX")
    monkeypatch.setattr(native, "_state", {})
    assert native.rnn_ops() is not None, native.why_not()
    said.clear()
    run(recipe, echo=said.append, fast_dev_run=True)
    assert [s for s in said if "native" in s] == [
        f"zoo: recurrent layers run on zoo's native kernels (built in {native.cache_dir()})"]
