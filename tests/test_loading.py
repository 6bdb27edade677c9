"""Picking and loading: promotion and its history, every form of name from another process
and directory, the artifact cache, MLflow's own pyfunc loader and `mlflow models serve`,
and tampered artifacts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ECHO_SMALL, write
from zoo.errors import ZooError
from zoo.recipe import load_recipe

pytestmark = pytest.mark.slow   # trains and loads in other processes

ECHO = ECHO_SMALL
SERIES = "1 0 1 1 0 0 1 0 1 1 1 0 0 0 1 1 0 1 0 0"
ECHOED = "0 0 0 " + " ".join(SERIES.split()[:-3])


def train(recipe, *overrides):
    from zoo.engine import run

    return run(load_recipe(recipe, list(overrides)), echo=lambda *a: None)


def py(code: str, cwd: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Three versions of tanh-rnn-echo in one SQLite store: v1 champion, v2 worse (kept out),
    v3 promoted with track.promote=always."""
    import mlflow

    root = tmp_path_factory.mktemp("registry")
    old_cwd = os.getcwd()
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "ZOO_MODEL_CACHE")}
    os.chdir(root)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    os.environ["ZOO_MODEL_CACHE"] = str(root / "cache")
    (root / "mlruns").mkdir()
    recipe = write(root / "echo.yaml", ECHO)
    try:
        r1 = train(recipe)
        r2 = train(recipe, "train.optimizer.learning_rate=0.00001", "train.seed=3")
        # worse than v1 yet better than the trivial baseline (never promoted below it)
        r3 = train(recipe, "track.promote=always", "train.optimizer.learning_rate=0.004")
        yield {"root": root, "uri": os.environ["MLFLOW_TRACKING_URI"], "runs": (r1, r2, r3),
               "client": mlflow.MlflowClient()}
    finally:
        os.chdir(old_cwd)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_promotion_and_its_history(registry):
    r1, r2, r3 = registry["runs"]
    c = registry["client"]
    assert (r1.promoted, r2.promoted, r3.promoted) == (True, False, True)
    v1, v2, v3 = (c.get_model_version("tanh-rnn-echo", v) for v in "123")
    assert v1.tags["zoo.replaced_champion"] == "none" and "zoo.champion_since" in v1.tags
    assert "zoo.replaced_champion" not in v2.tags
    assert "does not beat" in v2.tags["zoo.promotion"]
    assert v3.tags["zoo.replaced_champion"] == "1"
    assert str(c.get_model_version_by_alias("tanh-rnn-echo", "champion").version) == "3"
    run2 = c.get_run(r2.run_id).data.tags
    assert run2["zoo.promotion.metric"] == "test_accuracy"
    assert float(run2["zoo.promotion.champion_value"]) > float(run2["zoo.promotion.new_value"])
    for v in (v1, v2, v3):
        for key in ("zoo.task", "zoo.model", "test_accuracy", "zoo.recipe_hash",
                    "zoo.data_hash", "zoo.version", "zoo.fast_dev_run"):
            assert key in v.tags, key


def test_alias_set_by_hand_is_respected(registry, tmp_path):
    c = registry["client"]
    c.set_registered_model_alias("tanh-rnn-echo", "staging", "2")
    out = py("import zoo; m = zoo.load('tanh-rnn-echo@staging'); print(m.version)", tmp_path,
             MLFLOW_TRACKING_URI=registry["uri"], ZOO_MODEL_CACHE=str(tmp_path / "c"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "2"


def test_every_form_of_name_from_another_directory(registry, tmp_path):
    env = {"MLFLOW_TRACKING_URI": registry["uri"], "ZOO_MODEL_CACHE": str(tmp_path / "cache")}
    code = ("import zoo, json; out = {}\n"
            "for spec in ['tanh-rnn-echo', 'tanh-rnn-echo@champion', 'tanh-rnn-echo/1']:\n"
            "    m = zoo.load(spec); out[spec] = [m.version, m.task, m.predict([%r])[0]]\n"
            "print(json.dumps(out))" % SERIES)
    out = py(code, tmp_path, **env)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["tanh-rnn-echo"][0] == "3" and got["tanh-rnn-echo@champion"][0] == "3"
    assert got["tanh-rnn-echo/1"][:2] == ["1", "echo"]
    assert " ".join(map(str, got["tanh-rnn-echo/1"][2])) == ECHOED  # v1 learned the echo

    # a local copy loads by path, with no store at all
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "cache", copy)
    bundle = next(copy.rglob("manifest.json")).parent
    shutil.move(str(bundle), tmp_path / "my_model")
    out = py("import zoo; m = zoo.load('./my_model'); print(m.task, m.recipe['model']['name'])",
             tmp_path, MLFLOW_TRACKING_URI="http://127.0.0.1:9")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == ["echo", "tanh-rnn"]


def test_unknown_names(registry):
    import zoo

    with pytest.raises(ZooError, match="has no version 99"):
        zoo.load("tanh-rnn-echo/99")
    with pytest.raises(ZooError, match="has no alias 'nope'"):
        zoo.load("tanh-rnn-echo@nope")
    with pytest.raises(ZooError,
                       match="'no-such-model' has no registered version in the store sqlite:"):
        zoo.load("no-such-model")


def test_tampered_artifact_gives_clear_error(registry, tmp_path, monkeypatch):
    import zoo

    monkeypatch.setenv("ZOO_MODEL_CACHE", str(tmp_path / "fresh"))
    m = zoo.load("tanh-rnn-echo/1")
    cached = next((tmp_path / "fresh").rglob("model.keras"))
    cached.write_bytes(cached.read_bytes()[:100])                  # truncate the cached copy
    with pytest.raises(ZooError, match=r"tanh-rnn-echo version 1: artifact model.keras is truncated or altered"):
        zoo.load("tanh-rnn-echo/1")
    # altered in the store itself: a fresh cache downloads it and refuses it
    c = registry["client"]
    src = c.get_model_version("tanh-rnn-echo", "2").source
    store_files = [p for p in (registry["root"] / "mlruns").rglob("preprocessing.json")
                   if "zoo_model" in p.parts]
    assert store_files and m.version == "1"
    mv2 = [p for p in store_files if json.loads(p.read_text())]  # all bundles
    target = None
    for p in mv2:
        if c.get_model_version("tanh-rnn-echo", "2").run_id in str(p) or src.split("/")[-1] in str(p):
            target = p
    target = target or mv2[0]
    original = target.read_text()
    try:
        target.write_text(original.replace("3", "4"))
        monkeypatch.setenv("ZOO_MODEL_CACHE", str(tmp_path / "fresh2"))
        with pytest.raises(ZooError, match=r"tanh-rnn-echo version \d: artifact preprocessing.json is truncated or altered"):
            for v in "123":
                zoo.load(f"tanh-rnn-echo/{v}")
    finally:
        target.write_text(original)


def test_registered_listing(registry):
    from zoo.cli import main

    import io
    import contextlib

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["models", "--registered", "tanh-*"]) == 0
    out = buf.getvalue()
    assert "tanh-rnn-echo" in out and "champion→v3" in out and "test_accuracy=" in out


def test_mlflow_pyfunc_and_serve(registry, tmp_path):
    import mlflow

    model = mlflow.pyfunc.load_model("models:/tanh-rnn-echo/1")
    assert model.predict([SERIES]) == [ECHOED]
    import pandas as pd

    assert list(model.predict(pd.DataFrame({"series": [SERIES]}))) == [ECHOED]

    port = _free_port()
    serve = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/tanh-rnn-echo/1",
         "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path, env={**os.environ, "MLFLOW_TRACKING_URI": registry["uri"],
                           # the server is started with the environment's own uvicorn
                           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        body = json.dumps({"inputs": [SERIES]}).encode()
        for _ in range(360):
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                             headers={"Content-Type": "application/json"})
                reply = json.loads(urllib.request.urlopen(req, timeout=5).read())
                break
            except OSError:
                assert serve.poll() is None, "mlflow models serve exited"
                time.sleep(0.5)
        else:
            pytest.fail("mlflow models serve did not answer")
        assert reply["predictions"] == [ECHOED]
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=30)


def test_load_from_server_then_offline(tmp_path, monkeypatch):
    """Against a real `mlflow server`: load by alias, stop the server, load again in a new
    process: the cached copy answers and no artifact is read again."""
    monkeypatch.chdir(tmp_path)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "art"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    env = {"MLFLOW_TRACKING_URI": url, "ZOO_MODEL_CACHE": str(tmp_path / "cache")}
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.25)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        recipe = write(tmp_path / "echo.yaml", ECHO)
        res = train(recipe)
        assert res.promoted
        out = py("import zoo; print(zoo.load('tanh-rnn-echo@champion').version)", tmp_path, **env)
        assert out.returncode == 0 and out.stdout.split()[-1] == "1", out.stderr
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    shutil.rmtree(tmp_path / "art")  # nothing may be read from the store again
    code = ("import zoo; m = zoo.load('tanh-rnn-echo@champion'); "
            "print(m.version, ' '.join(map(str, m.predict([%r])[0])))" % SERIES)
    out = py(code, tmp_path, **env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1].startswith("1 ")
    assert "unreachable" in out.stderr
    out = py("import zoo; zoo.load('tanh-rnn-echo/1')", tmp_path, **env)
    assert out.returncode == 0, out.stderr
