"""Shared fixtures: an isolated MLflow store per test, the shared corpus cache, CPU only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"


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
