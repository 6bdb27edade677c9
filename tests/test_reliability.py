"""Nothing lost, nothing wrong: concurrent runs on a new store, an unreachable server, the model
cache, validation before anything runs, runs whose process died, the trivial baseline, bad
input at use time, and no code in the store.  Real processes, real SQLite stores, real MLflow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import ECHO_TINY, ROOT, write, zoo
from zoo.errors import ZooError

pytestmark = pytest.mark.slow   # trains, starts and kills processes

ECHO = ECHO_TINY + "track: {registered_name: echo-rel}\n"


def _client(uri: str):
    """A client of a store that zoo processes may be creating right now: it opens the store
    under zoo's lock, as zoo itself does."""
    import mlflow

    from zoo import store

    mlflow.set_tracking_uri(uri)
    with store.lock(store.Store(uri, "test")):
        c = mlflow.MlflowClient(uri)
        c.search_experiments(max_results=1)
    return c


# ----------------------------------------------------------------- 1. a new store, 4 writers


def test_four_runs_at_once_on_a_store_that_does_not_exist(tmp_path):
    recipe = write(tmp_path / "echo.yaml", ECHO)
    uri = f"sqlite:///{tmp_path / 'fresh' / 'store' / 'mlflow.db'}"
    env = {"MLFLOW_TRACKING_URI": uri}
    procs = [subprocess.Popen([sys.executable, "-m", "zoo.cli", "run", str(recipe), "--set",
                               f"train.seed={seed}"], cwd=tmp_path, env={**os.environ, **env},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in (1, 2, 3, 4)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    c = _client(uri)
    versions = c.search_model_versions("name='echo-rel'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3, 4]
    champion = c.get_model_version_by_alias("echo-rel", "champion")
    scores = {v.version: float(v.tags["test_accuracy"]) for v in versions}
    assert scores[champion.version] == max(scores.values())
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()])
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}


# -------------------------------------------------------------- 2. a server that is not there


@pytest.mark.parametrize("args", [("run", "recipes/echo.yaml"), ("models", "--registered"),
                                  ("predict", "echo-rel", "1 0 1")])
def test_unreachable_server_is_one_line_in_seconds(tmp_path, args):
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    t = time.perf_counter()
    out = zoo(*args, cwd=ROOT, env=env, timeout=120)
    seconds = time.perf_counter() - t
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "http://127.0.0.1:9" in lines[0] and "cannot be reached" in lines[0]
    assert seconds < 10, f"took {seconds:.1f} s"  # measured about 1-2 s here


# --------------------------------------------------------- 3. the cache never serves old bytes


def test_cache_follows_the_store_after_it_is_recreated(tmp_path):
    """Train, load (cached), delete the store, train again in the same folder: the next load
    is the new model, not the cached old version 1."""
    import shutil

    recipe = write(tmp_path / "echo.yaml", ECHO)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}",
           "ZOO_MODEL_CACHE": str(tmp_path / "cache")}
    code = "import json, zoo; m = zoo.load('echo-rel'); print(json.dumps([m.version, m.metrics]))"

    def load():
        out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                             text=True, env={**os.environ, **env}, timeout=300)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])

    assert zoo("run", str(recipe), cwd=tmp_path, env=env).returncode == 0
    v1, first = load()
    shutil.rmtree(tmp_path / "mlruns")               # a new store at the same address
    out = zoo("run", str(recipe), "--set", "train.seed=2", "--set", "train.epochs=1",
              cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    v2, second = load()
    assert v1 == v2 == "1" and second != first
    c = _client(env["MLFLOW_TRACKING_URI"])
    tags = c.get_model_version("echo-rel", "1").tags
    assert second["accuracy"] == pytest.approx(float(tags["test_accuracy"]), rel=1e-5)


# ------------------------------------------------------------ 4. validation before anything


CHAR = """
task: {name: char-rnn, embedding_dim: 8, sample_length: 0}
data: {path: text.txt, seq_len: 20, val_fraction: 0.1, test_fraction: 0.1}
model: {name: lstm, units: 16}
train: {epochs: 1, batch_size: 16}
"""


@pytest.mark.parametrize("overrides, message", [
    (["train.optimizer.learning_rate=.inf"], "train.optimizer.learning_rate: input should be a finite number"),
    (["train.epochs=1000000000000"], "train.epochs: input should be less than or equal to 100000"),
    (["model.units=1000000000"], "model.units: must be at most 8192"),
    (["model.layers=32", "model.units=8192"], "GiB to train, more than this machine's"),
    (["model.activation=tanhh"], "model.activation: unknown value 'tanhh'"),
    (["model.merge_mode=cat"], "has no hyperparameter 'merge_mode'"),
    (["track.registered_name=my model/v1"], "track.registered_name: a registered name is letters"),
    (["train.batch_size=100000", "train.distribute=mirrored"],
     "train.batch_size: 100000 is larger than the training set"),
    (["task.sample_prime=ZZZ#"], "task.sample_prime: characters not in the training text"),
])
def test_refused_before_anything_is_written(tmp_path, overrides, message):
    write(tmp_path / "text.txt", "ALICE: the cat sat on the mat.\nBOB: and the dog sat too.\n" * 20)
    recipe = write(tmp_path / "char.yaml", CHAR)
    sets = [a for o in overrides for a in ("--set", o)]
    out = zoo("run", str(recipe), *sets, cwd=tmp_path,
              env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"})
    assert out.returncode == 2, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("zoo: error:")]
    assert len(errors) == 1 and message in errors[0], out.stderr
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.parametrize("text, message", [
    ("task: echo\nmodel: {name: lstm}\nmodel: {name: gru}\n", "key 'model' is given twice"),
    ("task: echo\nmodel: {name: lstm, units: 3, units: 4}\n", "key 'units' is given twice"),
    ("task: echo\nmodel: {name: lstm}\ndata: " + "[" * 200 + "]" * 200 + "\n", "nested more than"),
    ("a: &a [x, x, x]\nb: &b [*a, *a, *a]\nc: [*b, *b, *b]\n", "an alias (*a) is not allowed"),
])
def test_yaml_that_is_wrong_in_new_ways(tmp_path, text, message):
    recipe = write(tmp_path / "bad.yaml", text)
    out = zoo("run", str(recipe), cwd=tmp_path)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert len(out.stderr) < 700 and len(out.stderr.strip().splitlines()) == 1


def test_data_errors_leave_no_store(tmp_path):
    folder = tmp_path / "data.csv"
    folder.mkdir()
    write(tmp_path / "one.csv", "text,label\ngood,pos\nfine,pos\nnice,pos\ngreat,pos\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"}
    for path in ("one.csv", "data.csv"):
        out = zoo("run", str(ROOT / "recipes" / "sentiment.yaml"), "--set",
                  f"data.path={tmp_path / path}", cwd=tmp_path, env=env)
        assert out.returncode == 2, out.stderr
    assert not (tmp_path / "mlruns").exists()


# ----------------------------------------------------------- 5. dead processes and baselines


def test_killed_run_is_marked_killed_next_time(tmp_path):
    # epochs enough that neither run can end by itself while the other is still starting
    recipe = write(tmp_path / "echo.yaml", ECHO.replace("epochs: 2", "epochs: 50000"))
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    hard = subprocess.Popen([sys.executable, "-m", "zoo.cli", "run", str(recipe)], cwd=tmp_path,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    soft = subprocess.Popen([sys.executable, "-m", "zoo.cli", "run", str(recipe)], cwd=tmp_path,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    c = None
    for _ in range(600):
        time.sleep(0.5)
        if (tmp_path / "mlruns" / "mlflow.db").exists():
            c = c or _client(uri)
            try:
                runs = c.search_runs([e.experiment_id for e in c.search_experiments()])
            except Exception:
                continue
            if len(runs) == 2 and all(r.data.metrics for r in runs):  # both past an epoch
                break
    else:
        pytest.fail("the runs did not start")
    hard.kill()                                # SIGKILL: the run cannot say anything
    soft.send_signal(signal.SIGTERM)           # SIGTERM: the run ends itself as KILLED
    hard.wait(timeout=60)
    _, err = soft.communicate(timeout=120)
    assert soft.returncode == 130, err[-3000:]
    out = zoo("models", "--registered", cwd=tmp_path, env={**os.environ, "MLFLOW_TRACKING_URI": uri})
    assert out.returncode == 0, out.stderr
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()])
    assert {r.info.status for r in runs} == {"KILLED"}, [r.info.status for r in runs]


def test_never_promoted_unless_it_beats_the_baseline(store):
    from zoo import tracking
    from zoo.publish import baseline_guard
    from zoo.tasks import get_task

    echo = get_task("echo")
    c = _client(store)
    c.create_registered_model("base-test")
    for value in ("0.40", "0.55"):
        mv = c.create_model_version("base-test", "file:///nowhere", run_id=None)
        c.set_model_version_tag("base-test", mv.version, "test_accuracy", value)
    below = baseline_guard(echo, {"accuracy": 0.4, "baseline_accuracy": 0.5}, 1000)
    d = tracking.promote(c, "base-test", "1", metric="test_accuracy", greater_is_better=True,
                         policy="always", fast_dev_run=False, guard=below)
    assert not d["promoted"] and "does not beat the trivial baseline 0.5" in d["reason"]
    above = baseline_guard(echo, {"accuracy": 0.55, "baseline_accuracy": 0.5}, 1000)
    d = tracking.promote(c, "base-test", "2", metric="test_accuracy", greater_is_better=True,
                         policy="if-better", fast_dev_run=False, guard=above)
    assert d["promoted"]


def test_baselines_are_recorded(store, tmp_path):
    from zoo.engine import run
    from zoo.recipe import load_recipe

    res = run(load_recipe(write(tmp_path / "echo.yaml", ECHO)), echo=lambda *a: None)
    base = res.test_metrics["baseline_accuracy"]
    assert 0.4 < base < 0.6
    assert float(_client(store).get_model_version("echo-rel", res.version).tags[
        "test_baseline_accuracy"]) == pytest.approx(base, rel=1e-5)


# --------------------------------------------------------------- 6. bad input at use time


@pytest.fixture(scope="module")
def char_model(tmp_path_factory):
    """A tiny char-rnn bundle on a short text, trained in a subprocess, loaded from a folder."""
    tmp = tmp_path_factory.mktemp("char")
    write(tmp / "text.txt", "ALICE: the cat sat on the mat.\nBOB: and the dog sat too.\n" * 60)
    recipe = write(tmp / "char.yaml", textwrap.dedent("""
        task: {name: char-rnn, embedding_dim: 8, sample_length: 0}
        data: {path: text.txt, seq_len: 20, val_fraction: 0.1, test_fraction: 0.1}
        model: {name: lstm, units: 16}
        train: {epochs: 1, batch_size: 16}
        track: {registered_name: char-rel}
        """))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}",
           "ZOO_MODEL_CACHE": str(tmp / "cache")}
    out = zoo("run", str(recipe), cwd=tmp, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return {"tmp": tmp, "env": env}


def test_generate_streams_long_texts_and_checks_the_range(char_model):
    tmp, env = char_model["tmp"], char_model["env"]
    out = zoo("generate", "char-rel", "--prime", "BOB", "--length", "45000", "--seed", "3",
              cwd=tmp, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("BOB") and len(out.stdout.rstrip("\n")) == 3 + 45000
    again = zoo("generate", "char-rel", "--prime", "BOB", "--length", "45000", "--seed", "3",
                cwd=tmp, env=env)
    assert again.stdout == out.stdout
    bad = zoo("generate", "char-rel", "--length", "10000000000", cwd=tmp, env=env)
    assert bad.returncode == 2 and "length must be a whole number from 0 to 1,000,000,000" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("file, content, message", [
    ("preprocessing.json", b"\x80\x04\x95pickle", "preprocessing.json is not valid JSON"),
    ("preprocessing.json", b"{not json", "preprocessing.json is not valid JSON"),
    ("recipe.yaml", b"task: !!python/object/apply:os.system [echo hi]\n", "recipe.yaml: line 1: invalid YAML"),
])
def test_bundle_with_bad_files_behind_a_matching_manifest(char_model, tmp_path, file, content, message):
    import shutil

    from zoo import bundle
    from zoo.hashing import sha256_file

    import zoo as zoo_api

    src = next((char_model["tmp"] / "mlruns").rglob("zoo_model"))
    copy = tmp_path / "model"
    shutil.copytree(src, copy)
    (copy / file).write_bytes(content)
    manifest = json.loads((copy / bundle.MANIFEST).read_text())
    manifest[file] = sha256_file(copy / file)
    (copy / bundle.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ZooError, match=message) as exc:
        zoo_api.load(str(copy))
    assert str(copy) in str(exc.value) and "\n" not in str(exc.value)


def test_unwritable_places_are_one_line(char_model, tmp_path):
    blocker = write(tmp_path / "a-file", "not a folder")
    tmp, env = char_model["tmp"], char_model["env"]
    out = zoo("predict", "char-rel", "x", cwd=tmp, env={**env, "ZOO_MODEL_CACHE": str(blocker / "cache")})
    assert out.returncode == 2 and "model cache" in out.stderr, out.stderr
    run = zoo("run", str(ROOT / "recipes" / "echo.yaml"), cwd=tmp_path,
              env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{blocker}/store/mlflow.db"})
    assert run.returncode == 2 and "cannot be written" in run.stderr and str(blocker) in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- 7. no code from the store


def test_the_store_holds_no_code(char_model):
    root = char_model["tmp"] / "mlruns"
    mlmodel = next(root.rglob("MLmodel")).read_text()
    assert "loader_module: zoo.mlflow_model" in mlmodel and "python_model" not in mlmodel
    assert not [p for p in root.rglob("*") if p.suffix in (".py", ".pkl", ".pickle", ".cloudpickle")]
