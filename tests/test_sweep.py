"""`zoo sweep`: validation before anything starts, a real local Ray sweep (parent and trial runs in
MLflow, a failing trial tolerated, the best registered), resume after an interrupt, the refusal
of a local store on a cluster, and a sweep against an MLflow server on PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import pg
from conftest import RECIPES, write, zoo

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]   # runs sweeps on Ray

# Tiny echo data: a trial trains in seconds; a learning rate of 1e39 overflows to NaN (a
# failing trial, as a diverging or out-of-memory one would).
TINY = """\
task: echo
data: {{total_series_length: 3000, eval_series_length: 1000, truncated_backprop_length: 10}}
model: {{name: tanh-rnn, units: 4}}
train: {{epochs: 2, batch_size: 5, optimizer: {{name: sgd, learning_rate: 0.1}}, seed: 1}}
track: {{experiment: tiny-sweep, registered_name: tiny-echo}}
sweep:
{sweep}
"""
# the second trial is long (30 epochs), so that Ctrl+C after the first one finishes always
# lands while the second is still running
GRID2 = """\
  search: grid
  scheduler: none
  max_concurrent: 1
  space:
    train.epochs: {choice: [2, 30]}
"""
GRID = """\
  search: grid
  scheduler: none
  max_concurrent: {conc}
  space:
    train.optimizer.learning_rate: {{choice: [0.3, 1.0e+39, 1.0]}}
"""


def recipe(tmp_path, sweep: str, name="tiny.yaml"):
    return write(tmp_path / name, TINY.format(sweep=sweep))


def children(client, parent_id):
    exp = client.get_run(parent_id).info.experiment_id
    return client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_id}'")


def parent_id_of(stdout: str) -> str:
    line = [ln for ln in stdout.splitlines() if ln.startswith("sweep ")][-1]
    return line.split()[1]


# ------------------------------------------------------------------- before anything runs


@pytest.mark.parametrize("sweep, message", [
    ("  space: {model.units: {choise: [2, 4]}}",
     "sweep.space.model.units: unknown kind 'choise' (did you mean: choice?)"),
    ("  serach: grid\n  space: {model.units: {choice: [2, 4]}}",
     "sweep.serach: unknown key (did you mean: search"),
    ("  space: {train.batch_size: {choice: [5, 100000]}}",
     "sweep.space.train.batch_size: choice value 100000 makes no valid recipe"),
    ("  space: {model.dropout: {uniform: [0.0, 1.5]}}",
     "sweep.space.model.dropout: uniform value 1.5 makes no valid recipe"),
    ("  space: {model.unitz: {choice: [2, 4]}}",
     "sweep.space.model.unitz: choice value 2 makes no valid recipe"),
    ("  search: grid\n  space: {model.dropout: {uniform: [0.0, 0.5]}}",
     "sweep.space.model.dropout: search: grid takes only {choice: [...]}"),
    ("  space: {units: {choice: [2, 4]}}", "sweep.space.units: a searched key must be"),
    ("  space: {}", "sweep.space: name at least one recipe key"),
])
def test_mistakes_are_one_line_before_ray_or_tensorflow(tmp_path, sweep, message):
    path = recipe(tmp_path, sweep)
    code = ("import sys; from zoo.cli import main; rc = main(['sweep', sys.argv[1]]); "
            "print('HEAVY' if any(m.split('.')[0] in ('tensorflow', 'keras', 'ray', 'optuna') "
            "for m in sys.modules) else 'LIGHT'); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith(f"zoo: error: {path}: ") and message in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and out.stdout.strip() == "LIGHT"
    assert not (tmp_path / "mlruns").exists()


def test_recipe_without_a_sweep_section_is_refused(tmp_path):
    out = zoo("sweep", str(RECIPES / "echo.yaml"))
    assert out.returncode == 2 and "sweep: the recipe has no sweep section" in out.stderr


def test_the_shipped_sweep_recipes_validate():
    from zoo.sweep import load_sweep

    echo = load_sweep(RECIPES / "sweep_echo.yaml", trials=4)
    assert (echo.metric, echo.mode, echo.trials) == ("val_accuracy", "max", 4)
    sent = load_sweep(RECIPES / "sweep_sentiment.yaml")
    assert sent.keys == ["model.name", "model.units", "model.dropout",
                         "train.optimizer.learning_rate"] and sent.trials == 16


def test_a_cluster_refuses_a_local_sqlite_store(store, tmp_path):
    path = recipe(tmp_path, GRID.format(conc=2))
    for args, env in [(["--address", "10.1.2.3:6379"], None),
                      ([], {**os.environ, "RAY_ADDRESS": "ray://10.1.2.3:10001"})]:
        t0 = time.time()
        out = zoo("sweep", str(path), *args, env=env, timeout=60)
        assert out.returncode == 2, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "10.1.2.3" in lines[0], out.stderr
        assert "local file" in lines[0] and "MLFLOW_TRACKING_URI=http://" in lines[0]
        assert time.time() - t0 < 30  # refused at once: no attempt to reach the cluster
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()   # nothing was created


def _sweep_in_process(args, capsys):
    from zoo.cli import main

    t0 = time.time()
    rc = main(["sweep", *args])
    err = capsys.readouterr().err
    return rc, err.strip().splitlines(), time.time() - t0


def test_an_unreachable_store_fails_in_one_line(store, tmp_path, monkeypatch, capsys):
    path = str(recipe(tmp_path, GRID.format(conc=2)))
    for args, env in [(["--store", "http://127.0.0.1:9"], None),
                      ([], "http://127.0.0.1:9"),
                      (["--address", "10.1.2.3:6379"], "http://127.0.0.1:9")]:
        if env:
            monkeypatch.setenv("MLFLOW_TRACKING_URI", env)
        rc, lines, took = _sweep_in_process([path, *args], capsys)
        assert rc == 2 and len(lines) == 1, lines
        assert "http://127.0.0.1:9" in lines[0] and "cannot be reached" in lines[0], lines
        assert took < 10


def test_an_unreachable_ray_cluster_fails_in_one_line(tmp_path, monkeypatch, capsys):
    import http.server
    import threading

    class Health(http.server.BaseHTTPRequestHandler):   # a tracking server's /health, no more
        def do_GET(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{server.server_port}")
        path = str(recipe(tmp_path, GRID.format(conc=2)))
        for address in ("127.0.0.1:9", "ray://127.0.0.1:9"):
            rc, lines, took = _sweep_in_process([path, "--address", address], capsys)
            assert rc == 2 and len(lines) == 1, lines
            assert f"--address {address}: the Ray cluster cannot be reached" in lines[0], lines
            assert took < 10
    finally:
        server.shutdown()


def test_without_ray_it_names_the_extra(store, tmp_path):
    path = recipe(tmp_path, GRID.format(conc=2))
    code = ("import sys; sys.modules['ray'] = None; from zoo.cli import main; "
            "sys.exit(main(['sweep', sys.argv[1]]))")  # as if Ray were not installed
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip() == ('zoo: error: zoo sweep needs Ray Tune, which is not installed: '
                                  'pip install -e ".[sweep]"')


# --------------------------------------------------------------------------- real sweeps


def test_local_sweep_tracks_every_trial_tolerates_a_failure_and_registers_the_best(store, tmp_path):
    path = recipe(tmp_path, GRID.format(conc=2))
    out = zoo("sweep", str(path))
    assert out.returncode == 0, out.stderr[-3000:]
    from zoo.tracking import client

    c = client()
    parent_id = parent_id_of(out.stdout)
    parent = c.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["zoo.sweep"] == "true"
    assert parent.data.params["space.train.optimizer.learning_rate"] == "{choice: [0.3, 1e+39, 1.0]}"
    runs = children(c, parent_id)
    by_lr = {json.loads(r.data.tags["zoo.sweep.point"])["train.optimizer.learning_rate"]: r
             for r in runs}
    assert len(runs) == 3 and set(by_lr) == {0.3, 1e39, 1.0}
    failed = by_lr[1e39]
    assert failed.info.status == "FAILED" and failed.data.tags["zoo.sweep.outcome"] == "failed"
    assert "NaN" in failed.data.tags["zoo.sweep.error"]
    for lr in (0.3, 1.0):
        r = by_lr[lr]
        assert r.info.status == "FINISHED" and r.data.params["train.optimizer.learning_rate"] == str(lr)
        hist = c.get_metric_history(r.info.run_id, "val_accuracy")
        assert sorted(m.step for m in hist) == [0, 1]           # per-epoch metrics
        assert "test_accuracy" in r.data.metrics
    best_id = parent.data.tags["zoo.sweep.best_run_id"]
    best = c.get_run(best_id)
    others = [r for lr, r in by_lr.items() if lr != 1e39 and r.info.run_id != best_id]
    assert best.data.metrics["val_accuracy"] >= others[0].data.metrics["val_accuracy"]
    assert parent.data.metrics["best_val_accuracy"] == best.data.metrics["val_accuracy"]
    versions = c.search_model_versions("name='tiny-echo'")
    assert len(versions) == 1 and versions[0].run_id == best_id        # only the best
    assert versions[0].tags["zoo.sweep.parent"] == parent_id
    assert versions[0].tags["zoo.guard.passed"] == "true"
    card = versions[0].description               # the same model card as `zoo run` writes
    assert card.startswith(f"# tiny-echo version {versions[0].version}\n")
    assert "better than the trivial baseline" in card and "## How to use it" in card
    assert c.get_run(best_id).data.tags["mlflow.note.content"] == card
    assert c.get_model_version_by_alias("tiny-echo", "champion").version == versions[0].version
    artifacts = {a.path for a in c.list_artifacts(parent_id, "sweep")}
    artifacts |= {a.path for a in c.list_artifacts(parent_id, "plots")}
    assert {"sweep/trials.csv", "sweep/trials.txt", "plots/sweep_val_accuracy.png"} <= artifacts
    table = out.stdout.splitlines()
    assert table[0].split()[:4] == ["#", "run", "outcome", "train.optimizer.learning_rate"]
    assert sum("finished" in ln for ln in table) == 2 and sum(" failed " in ln for ln in table) == 1


def test_a_sweep_worse_than_the_baseline_registers_its_versions_but_crowns_none(store, tmp_path):
    path = recipe(tmp_path, """\
  search: grid
  scheduler: none
  max_concurrent: 2
  register: all
  space:
    train.optimizer.learning_rate: {choice: [1.0e+5, 1.0e+6]}
""")
    out = zoo("sweep", str(path), "--set", "train.optimizer.name=adam", "--set", "train.epochs=1")
    assert out.returncode == 0, out.stderr[-3000:]
    from zoo.tracking import client

    c = client()
    versions = c.search_model_versions("name='tiny-echo'")
    assert len(versions) == 2                                   # both registered (all)
    assert not c.get_registered_model("tiny-echo").aliases      # and neither crowned
    for v in versions:
        assert v.tags["zoo.guard.passed"] == "false"
        assert "**not better than the trivial baseline**" in v.description
    assert "not promoted: not better than the trivial baseline" in out.stderr


def test_an_interrupted_sweep_resumes_without_rerunning_finished_trials(store, tmp_path):
    path = recipe(tmp_path, GRID2)
    import mlflow

    c = mlflow.MlflowClient(store)
    # Ctrl+C reaches a program started from a terminal; one started in the background by a
    # script (CI launched with `&`) inherits SIGINT ignored, so restore what a terminal gives
    proc = subprocess.Popen([sys.executable, "-m", "zoo.cli", "sweep", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 300
        finished = []
        while not finished:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.time() < deadline, "no trial finished in 300 s"
            time.sleep(0.5)
            try:
                exps = [e.experiment_id for e in c.search_experiments()]
                finished = c.search_runs(exps, "tags.`zoo.sweep.outcome` = 'finished'")
            except Exception:  # the store is being created by the sweep
                continue
        proc.send_signal(signal.SIGINT)                # Ctrl+C midway
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    parent_id = finished[0].data.tags["mlflow.parentRunId"]
    assert c.get_run(parent_id).info.status == "KILLED"
    done_before = {r.info.run_id: r.data.tags["zoo.sweep.point"] for r in children(c, parent_id)
                   if r.info.status in ("FINISHED", "FAILED")}
    assert len(done_before) == 1

    out = zoo("sweep", str(path), "--resume", parent_id)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "1 done before, 1 to run" in out.stderr
    assert c.get_run(parent_id).info.status == "FINISHED"
    runs = children(c, parent_id)
    ended = [r for r in runs if r.info.status in ("FINISHED", "FAILED")]
    points = [r.data.tags["zoo.sweep.point"] for r in ended]
    assert len(points) == 2 and len(set(points)) == 2              # each point once, none twice
    assert all(r.info.run_id in {x.info.run_id for x in ended} for r in runs
               if r.info.run_id in done_before)
    # whatever was running at the interrupt is recorded as killed, not left running
    assert all(r.info.status in ("FINISHED", "FAILED", "KILLED") for r in runs)
    assert len(c.search_model_versions("name='tiny-echo'")) == 1


def test_sweep_with_concurrent_trials_on_a_postgresql_backed_mlflow_server(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "artifacts").mkdir()
    with pg.postgres() as db_uri, pg.mlflow_server(db_uri, tmp_path / "artifacts") as server:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        path = recipe(tmp_path, """\
  search: optuna
  scheduler: asha
  trials: 2
  max_concurrent: 2
  space:
    model.units: {choice: [3, 4]}
    train.optimizer.learning_rate: {loguniform: [0.1, 0.5]}
""")
        out = zoo("sweep", str(path))
        assert out.returncode == 0, out.stderr[-3000:]
        import mlflow

        c = mlflow.MlflowClient(server)
        parent_id = parent_id_of(out.stdout)
        runs = children(c, parent_id)
        outcomes = sorted(r.data.tags["zoo.sweep.outcome"] for r in runs)
        assert outcomes in (["finished", "finished"], ["finished", "stopped early"]), \
            [(r.data.tags["zoo.sweep.outcome"], r.data.tags.get("zoo.sweep.error")) for r in runs]
        for r in runs:  # ASHA may stop the slower of the two after its first epoch
            assert r.info.status == ("FINISHED" if r.data.tags["zoo.sweep.outcome"] == "finished"
                                     else "KILLED")
        starts = sorted((r.info.start_time, r.info.end_time) for r in runs)
        assert starts[1][0] < starts[0][1]                     # the two trials overlapped
        version = c.get_model_version_by_alias("tiny-echo", "champion")
        assert version.run_id == c.get_run(parent_id).data.tags["zoo.sweep.best_run_id"]
        import psycopg2

        conn = psycopg2.connect(db_uri.replace("postgresql+psycopg2", "postgresql"))
        try:
            with conn.cursor() as cur:                         # it really is in PostgreSQL
                cur.execute("SELECT count(*) FROM runs")
                assert cur.fetchone()[0] == 3
                cur.execute("SELECT count(*) FROM model_versions")
                assert cur.fetchone()[0] == 1
        finally:
            conn.close()
