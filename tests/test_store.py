"""Using models from another project: one documented order for choosing the store, read-only
commands that create nothing, messages that say where zoo looked; a quiet console with a
summary at the end; experiments, runs and versions that explain themselves in the MLflow UI."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ECHO_TINY, ROOT, write, zoo

pytestmark = pytest.mark.slow   # trains in other processes

ECHO = ECHO_TINY + "track: {registered_name: echo-far}\n"


def _env(config: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, "XDG_CONFIG_HOME": str(config), **extra}


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """echo-far trained in project/ with no MLFLOW_TRACKING_URI: ./mlruns becomes the default."""
    root = tmp_path_factory.mktemp("far")
    project, config = root / "project", root / "config"
    project.mkdir()
    recipe = write(project / "echo.yaml", ECHO)
    env = _env(config, ZOO_MODEL_CACHE=str(root / "cache"))
    out = zoo("run", str(recipe), cwd=project, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return {"root": root, "project": project, "config": config, "env": env, "out": out}


def test_first_run_makes_its_store_the_default_and_says_so(trained):
    store = trained["project"] / "mlruns" / "mlflow.db"
    assert f"made it your default store" in trained["out"].stderr
    config = (trained["config"] / "zoo" / "config.json").read_text()
    assert str(store) in config
    shown = zoo("store", cwd=trained["root"], env=trained["env"])
    assert str(store) in shown.stdout and "your default store" in shown.stdout


def test_load_from_another_folder_and_process(trained):
    other = trained["root"] / "elsewhere"
    other.mkdir()
    code = "import zoo; m = zoo.load('echo-far'); print(m.version, m.task)"
    out = subprocess.run([sys.executable, "-c", code], cwd=other, env=trained["env"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == ["1", "echo"]
    assert _files(other) == []          # nothing created there
    assert out.stderr.strip() == "", out.stderr   # and nothing printed but the answer


def test_explicit_store_wins_and_env_next(trained, tmp_path):
    empty = tmp_path / "empty-store"
    out = zoo("models", "--registered", "--store", str(empty), cwd=tmp_path, env=trained["env"])
    assert out.returncode == 0 and "there is no store at" in out.stdout and "given with --store" in out.stdout
    env = {**trained["env"], "MLFLOW_TRACKING_URI": f"sqlite:///{empty}/mlflow.db"}
    out = zoo("predict", "echo-far", "0 1", cwd=tmp_path, env=env)
    assert out.returncode == 2 and "from MLFLOW_TRACKING_URI" in out.stderr
    assert not empty.exists() and _files(tmp_path) == []


def test_unknown_model_lists_what_the_store_has(trained, tmp_path):
    out = zoo("predict", "echo-farr", "0 1", cwd=tmp_path, env=trained["env"])
    assert out.returncode == 2
    assert "'echo-farr' has no registered version" in out.stderr
    assert "your default store" in out.stderr and "registered there: echo-far" in out.stderr


def test_read_only_commands_create_nothing(tmp_path):
    config = tmp_path / "config"
    work = tmp_path / "work"
    work.mkdir()
    env = _env(config)
    for args in (["models", "--registered"], ["store"], ["predict", "x", "y"],
                 ["generate", "x"], ["ui", "--port", "1"]):
        zoo(*args, cwd=work, env=env, timeout=120)
    code = "import zoo\ntry:\n    zoo.load('x')\nexcept Exception as e:\n    print(e)"
    subprocess.run([sys.executable, "-c", code], cwd=work, env=env, timeout=120)
    assert _files(work) == [] and not config.exists()


def test_store_use_sets_the_default(tmp_path):
    env = _env(tmp_path / "config")
    out = zoo("store", "use", str(tmp_path / "team"), cwd=tmp_path, env=env)
    assert out.returncode == 0
    shown = zoo("store", cwd=tmp_path, env=env)
    assert f"sqlite:///{tmp_path / 'team' / 'mlflow.db'}" in shown.stdout


def test_a_captured_run_is_quiet_and_ends_with_a_summary(trained):
    out = trained["out"]
    noise = [line for line in out.stderr.splitlines() if not line.startswith("zoo: ")]
    assert noise == [], noise
    stdout = out.stdout
    for needle in ("registered echo-far version 1 (champion)", "store: sqlite:///",
                   "/#/experiments/", "became champion (no champion yet)", "next: zoo predict echo-far/1"):
        assert needle in stdout, stdout
    assert stdout.count("Epoch ") == 2   # one line an epoch (no terminal: no progress bar)
    assert "\r" not in stdout and "\x1b[" not in stdout


def test_help_shows_defaults():
    out = subprocess.run([sys.executable, "-m", "zoo.cli", "generate", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert "(default: 0.8)" in out.stdout and "--store" in out.stdout


def test_the_ui_sees_training_experiments_model_cards_and_datasets(trained):
    import mlflow

    uri = f"sqlite:///{trained['project'] / 'mlruns' / 'mlflow.db'}"
    c = mlflow.MlflowClient(uri)
    exp = c.get_experiment_by_name("echo")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    run = c.search_runs([exp.experiment_id])[0]
    card = run.data.tags["mlflow.note.content"]
    mv = c.get_model_version("echo-far", "1")
    for text in (card, mv.description):
        for needle in ("echo", "tanh-rnn", "baseline", "zoo.load(\"echo-far@champion\")",
                       "models:/echo-far/1", "->"):
            assert needle in text, text
    inputs = c.get_run(run.info.run_id).inputs.dataset_inputs
    contexts = {i.tags[0].value for i in inputs}
    assert contexts == {"train", "val", "test"}
    assert all(i.dataset.digest and i.dataset.profile for i in inputs)


AS_ANOTHER_USER = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="drops root's capabilities with setpriv")
def test_a_store_the_user_cannot_write_can_be_read(trained, tmp_path):
    """A published store owned by someone else (uid 65534), read by a user without write
    permission (root without its capabilities, for whom the store is another user's):
    registered models are listed, loaded and predicted from, with no lock taken and nothing
    written there; a run into it is one line naming what cannot be written."""
    team = tmp_path / "team"
    shutil.copytree(trained["project"] / "mlruns", team)
    for p in [team, *team.rglob("*")]:
        os.chown(p, 65534, 65534, follow_symlinks=False)
        os.chmod(p, os.stat(p).st_mode & ~0o022)
    before = {p: p.stat().st_mtime_ns for p in team.rglob("*")}
    env = {**trained["env"], "ZOO_MODEL_CACHE": str(tmp_path / "cache")}

    def as_reader(*args):
        return subprocess.run([*AS_ANOTHER_USER, sys.executable, "-m", "zoo.cli", *args,
                               "--store", str(team)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    listed = as_reader("models", "--registered")
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "echo-far" in listed.stdout and listed.stderr == ""
    example = trained["out"].stdout.split("next: zoo predict echo-far/1 ")[1].split("   |")[0]
    predicted = as_reader("predict", "echo-far/1", *shlex.split(example))
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert predicted.stdout.strip()
    ran = as_reader("run", str(trained["project"] / "echo.yaml"))
    assert ran.returncode == 2
    assert ran.stderr.strip().splitlines() == [
        f"zoo: error: the tracking store sqlite:///{team / 'mlflow.db'} (given with --store) "
        f"cannot be written: {team} is not writable"]
    assert {p: p.stat().st_mtime_ns for p in team.rglob("*")} == before  # nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "team"]  # nor beside it


def test_a_deleted_default_store_is_not_recreated(tmp_path):
    """The default store's folder was removed: a read command says so in one line and reads
    ./mlruns; a run says so, trains into ./mlruns and does not recreate the removed folder."""
    gone = tmp_path / "old-project" / "mlruns"
    here = tmp_path / "here"
    here.mkdir()
    env = _env(tmp_path / "config")
    assert zoo("store", "use", str(gone), cwd=here, env=env).returncode == 0
    note = (f"zoo: your default store's folder {gone} (set in "
            f"{tmp_path / 'config' / 'zoo' / 'config.json'}) is gone; using ./mlruns in the "
            "working directory instead, not recreating a folder that was removed "
            f"(`zoo store use {gone}` creates it again)")
    listed = zoo("models", "--registered", cwd=here, env=env)
    assert listed.returncode == 0 and listed.stderr.splitlines() == [note]
    assert "there is no store at" in listed.stdout
    recipe = write(tmp_path / "echo.yaml", ECHO)
    ran = zoo("run", str(recipe), "--fast-dev-run", cwd=here, env=env)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert ran.stderr.splitlines()[0] == note
    assert not gone.parent.exists()
    assert (here / "mlruns" / "mlflow.db").is_file()
