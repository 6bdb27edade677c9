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


# ------------------------------------------------------------------------- promotion

CHAMPION = "champion"


def _version_metric(mv, metric: str) -> float | None:
    try:
        return float(mv.tags[metric])
    except (KeyError, ValueError):
        return None


def promote(client, name: str, version: str, *, metric: str, greater_is_better: bool,
            policy: str, fast_dev_run: bool) -> dict[str, Any]:
    """Apply ``track.promote`` to a new version: move the champion alias to it when the policy
    says so.  Every move is recorded on the new version (which version it replaced, and when).
    Returns the decision, with the metric and both values, for the run's log."""
    from datetime import datetime, timezone

    from mlflow.exceptions import MlflowException

    new = client.get_model_version(name, version)
    new_value = _version_metric(new, metric)
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        current = None
    old_value = _version_metric(current, metric) if current is not None else None
    decision: dict[str, Any] = {"policy": policy, "metric": metric, "new_value": new_value,
                                "champion_version": str(current.version) if current else None,
                                "champion_value": old_value}
    if fast_dev_run:
        promoted, why = False, "fast dev runs are never promoted"
    elif policy == "never":
        promoted, why = False, "track.promote is 'never'"
    elif policy == "always" or current is None:
        promoted, why = True, "track.promote is 'always'" if policy == "always" else "no champion yet"
    elif new_value is None:
        promoted, why = False, f"the new version has no {metric}"
    elif old_value is None:
        promoted, why = True, f"the champion (version {current.version}) has no {metric}"
    else:
        better = new_value > old_value if greater_is_better else new_value < old_value
        op = ">" if greater_is_better else "<"
        promoted = better
        why = (f"{metric} {new_value:.6g} {op} {old_value:.6g} of version {current.version}"
               if better else
               f"{metric} {new_value:.6g} does not beat {old_value:.6g} of version {current.version}")
    decision.update(promoted=promoted, reason=why)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        client.set_model_version_tag(name, version, "zoo.champion_since", now)
        client.set_model_version_tag(name, version, "zoo.replaced_champion",
                                     str(current.version) if current else "none")
    client.set_model_version_tag(name, version, "zoo.promotion", why)
    return decision


def registered_table(pattern: str = "*") -> str:
    """Registered models matching ``pattern``: versions, aliases and the champion's metric."""
    import fnmatch

    mlflow = configure()
    client = mlflow.MlflowClient()
    rows = []
    for rm in sorted(client.search_registered_models(), key=lambda m: m.name):
        if not fnmatch.fnmatchcase(rm.name, pattern):
            continue
        versions = client.search_model_versions(f"name='{rm.name}'")
        latest = max(versions, key=lambda v: int(v.version)) if versions else None
        aliases = getattr(rm, "aliases", {}) or {}
        shown = client.get_model_version(rm.name, aliases[CHAMPION]) if CHAMPION in aliases else latest
        metric = shown.tags.get("zoo.main_metric", "") if shown else ""
        value = shown.tags.get(metric, "") if shown else ""
        rows.append([rm.name, str(len(versions)), latest.version if latest else "-",
                     ", ".join(f"{a}→v{v}" for a, v in sorted(aliases.items())) or "-",
                     f"{metric}={value} (v{shown.version})" if metric else "-",
                     shown.tags.get("zoo.task", "") if shown else ""])
    if not rows:
        return f"no registered models match {pattern!r} in {tracking_uri()}"
    from zoo.cli import _table

    return _table(rows, ["registered model", "versions", "latest", "aliases", "main metric", "task"])
