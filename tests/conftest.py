"""Shared fixtures: an isolated MLflow store per test, the shared corpus cache, CPU only; the
`zoo` command in a subprocess; small echo recipes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"

# Small echo recipes (add a track: line): TINY trains in a few seconds, SMALL learns the echo.
ECHO_TINY = """
task: echo
data: {total_series_length: 3000, eval_series_length: 1500, truncated_backprop_length: 15}
model: {name: tanh-rnn, units: 4}
train: {epochs: 2, batch_size: 5, seed: 1, optimizer: {learning_rate: 0.02}}
"""
ECHO_SMALL = """
task: echo
data: {total_series_length: 6000, eval_series_length: 1500, truncated_backprop_length: 15}
model: {name: tanh-rnn, units: 4}
train: {epochs: 3, batch_size: 5, seed: 7, verbose: 0, optimizer: {learning_rate: 0.02}}
"""


def zoo(*args: str, cwd: Path | str | None = None, env: dict | None = None,
        timeout: float = 900) -> subprocess.CompletedProcess:
    """`zoo ARGS` in a new process (this checkout's zoo), output captured as text; ``env`` is
    its whole environment (default: this process's)."""
    return subprocess.run([sys.executable, "-m", "zoo.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(autouse=True, scope="session")
def _corpus_cache(tmp_path_factory):
    """Real corpora are fetched once per session (or reused from ZOO_CACHE_DIR if set)."""
    if "ZOO_CACHE_DIR" not in os.environ:
        os.environ["ZOO_CACHE_DIR"] = str(ROOT / "datasets" / "cache")
    os.environ.setdefault("ZOO_MODEL_CACHE", str(tmp_path_factory.mktemp("model-cache")))
    yield


@pytest.fixture(autouse=True)
def _user_config(tmp_path_factory, monkeypatch):
    """Each test has its own (empty) user config folder: no default store leaks between tests
    or from the machine's user."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh working directory with its own SQLite MLflow store; returns its tracking URI."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlruns").mkdir()
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("ZOO_MODEL_CACHE", str(tmp_path / "model-cache"))
    import mlflow

    # An in-process run of an earlier test set MLflow's global URI; clients made directly by a
    # test (whose run happened in a subprocess) must read this test's store, not that one.
    mlflow.set_tracking_uri(uri)
    return uri


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
