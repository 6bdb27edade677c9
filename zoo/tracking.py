"""MLflow tracking: where the store is, what a run logs, and how a model is registered."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

DEFAULT_DIR = "mlruns"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the SQLite store ``mlruns/mlflow.db`` in the cwd."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    root = Path.cwd() / DEFAULT_DIR
    root.mkdir(exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def configure():
    """Point mlflow at zoo's store and return the mlflow module."""
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri())
    return mlflow


def checkpoint_dir(run_id: str) -> Path:
    """Where a run's resumable checkpoint lives (local, beside the default store)."""
    return Path.cwd() / DEFAULT_DIR / "checkpoints" / run_id


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def run_tags(recipe, data_hash: str, fast_dev_run: bool) -> dict[str, str]:
    from zoo import __version__

    tags = {
        "zoo.task": recipe.task,
        "zoo.model": recipe.model,
        "zoo.version": __version__,
        "zoo.recipe_hash": recipe.digest(),
        "zoo.data_hash": data_hash,
        "zoo.fast_dev_run": str(fast_dev_run).lower(),
        "zoo.recipe_path": recipe.path,
    }
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["zoo.git_commit"] = commit
    return tags


def log_params(mlflow, params: dict[str, str]) -> None:
    # MLflow caps a param value at 6000 characters and a batch at 100 params.
    items = [(k, v[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        mlflow.log_params(dict(items[i:i + 100]))


def save_bundle(outdir: Path, keras_model, preprocessing: dict[str, Any], recipe_yaml: str,
                metrics: dict[str, float]) -> Path:
    """Write everything needed to use a trained model into ``outdir``: the .keras model,
    preprocessing as JSON, the resolved recipe as YAML, the test metrics as JSON."""
    outdir.mkdir(parents=True, exist_ok=True)
    keras_model.save(outdir / "model.keras")
    (outdir / "preprocessing.json").write_text(json.dumps(preprocessing, indent=1))
    (outdir / "recipe.yaml").write_text(recipe_yaml)
    (outdir / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
    from zoo.loading import write_manifest

    write_manifest(outdir)
    return outdir


def log_and_register(mlflow, bundle: Path, registered_name: str, input_example: Any,
                     tags: dict[str, str]) -> tuple[str, str]:
    """Log the bundle as a pyfunc model (models-from-code: nothing pickled) and register it.
    Returns (registered name, version)."""
    import warnings

    code = Path(__file__).resolve().parent / "mlflow_model.py"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Add type hints.*")
        info = _log_pyfunc(mlflow, code, bundle, input_example, registered_name)
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(registered_name, version, key, value)
    return registered_name, version


def _log_pyfunc(mlflow, code: Path, bundle: Path, input_example: Any, registered_name: str):
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=str(code),
        artifacts={"zoo_model": str(bundle)},
        input_example=input_example,
        registered_model_name=registered_name,
        pip_requirements=["zoo", "tensorflow", "keras", "mlflow"],
    )
