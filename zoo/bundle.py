"""The model bundle: everything needed to use a trained model, in one folder of plain data.

A bundle holds ``model.keras`` (loaded with ``safe_mode=True``), ``preprocessing.json``,
``recipe.yaml`` (the resolved recipe, read with a safe loader), ``metrics.json`` and
``manifest.json`` with the sha256 of each of those files.  Nothing in it is pickled and nothing
in it is code.  This module writes it, verifies it and loads it; tracking logs it and loading
fetches it, through these functions only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from zoo.errors import ZooError
from zoo.hashing import sha256_file

MANIFEST = "manifest.json"
FILES = ("model.keras", "preprocessing.json", "recipe.yaml", "metrics.json")


def save(outdir: Path, keras_model, preprocessing: dict[str, Any], recipe_yaml: str,
         metrics: dict[str, float]) -> Path:
    """Write a bundle into ``outdir`` and its manifest last; returns ``outdir``."""
    outdir.mkdir(parents=True, exist_ok=True)
    with _without_loss_scale(keras_model):
        keras_model.save(outdir / "model.keras")
    (outdir / "preprocessing.json").write_text(json.dumps(preprocessing, indent=1))
    (outdir / "recipe.yaml").write_text(recipe_yaml)
    (outdir / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
    files = {name: sha256_file(outdir / name) for name in FILES}
    (outdir / MANIFEST).write_text(json.dumps(files, indent=1, sort_keys=True))
    return outdir


@contextlib.contextmanager
def _without_loss_scale(keras_model):
    """While saving, a mixed_float16 model's optimizer is its inner one (Adam, say) without the
    LossScaleOptimizer around it: a loaded bundle is compiled with the plain optimizer (the
    loaded model's own policy is float32), which then gets the saved moments instead of Keras
    skipping all of them with a warning; the loss scale's step counter and scale are training
    state that a checkpoint keeps and a bundle does not need."""
    optimizer = getattr(keras_model, "optimizer", None)
    inner = getattr(optimizer, "inner_optimizer", None)
    if inner is None:
        yield
        return
    keras_model.optimizer = inner
    try:
        yield
    finally:
        keras_model.optimizer = optimizer


def digest(bundle: Path) -> str:
    """One digest for the whole bundle: of its manifest's file digests, in a fixed order.
    Recorded on the model version at registration; a cached copy must match it."""
    files = _manifest(bundle, str(bundle))
    text = json.dumps({k: files.get(k) for k in FILES}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _manifest(bundle: Path, label: str) -> dict[str, str]:
    mpath = bundle / MANIFEST
    if not mpath.is_file():
        raise ZooError(f"{label}: not a zoo model (no {MANIFEST} in {bundle})")
    try:
        files = json.loads(mpath.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise ZooError(f"{label}: {MANIFEST} is corrupt") from None
    if not isinstance(files, dict):
        raise ZooError(f"{label}: {MANIFEST} is corrupt")
    return files


def verify(bundle: Path, label: str) -> None:
    """Raise a clear ZooError if a file of the bundle is missing, truncated or altered."""
    expected = _manifest(bundle, label)
    for name in FILES:
        f = bundle / name
        if not f.is_file():
            raise ZooError(f"{label}: artifact {name} is missing")
        if sha256_file(f) != expected.get(name):
            raise ZooError(f"{label}: artifact {name} is truncated or altered "
                           "(its checksum does not match the one recorded at training)")


def _read_json(path: Path, label: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ZooError(f"{label}: {path.name} is not valid JSON ({type(exc).__name__})") from None


def _read_recipe(path: Path, label: str) -> dict[str, Any]:
    from zoo.recipe import load_yaml

    try:
        recipe = load_yaml(path.read_text(encoding="utf-8"), f"{label}: {path.name}")
    except UnicodeDecodeError:
        raise ZooError(f"{label}: {path.name} is not UTF-8 text") from None
    ok = isinstance(recipe, dict) and isinstance(recipe.get("task"), dict) and \
        isinstance(recipe.get("model"), dict) and "name" in recipe["task"]
    if not ok:
        raise ZooError(f"{label}: {path.name} is not a resolved zoo recipe")
    return recipe


def load(path: str | Path, *, name: str | None = None, version: str | None = None):
    """Load a bundle (or an MLflow model folder holding one) as the task's loaded-model object."""
    bundle = Path(path)
    label = f"{name} version {version}" if name else str(bundle)
    for inner in ("data", "artifacts"):  # an MLflow model folder (loader_module, or older)
        if (bundle / inner / "zoo_model").is_dir():
            bundle = bundle / inner / "zoo_model"
            break
    if not bundle.is_dir():
        raise ZooError(f"{label}: no such model folder")
    verify(bundle, label)
    from zoo.tasks import get_task

    recipe = _read_recipe(bundle / "recipe.yaml", label)
    preprocessing = _read_json(bundle / "preprocessing.json", label)
    metrics = _read_json(bundle / "metrics.json", label)
    if not isinstance(preprocessing, dict) or not isinstance(metrics, dict):
        raise ZooError(f"{label}: preprocessing.json and metrics.json must hold JSON objects")
    task_cls = get_task(str(recipe["task"]["name"]), where=f"{label}: recipe.yaml: task.name")
    try:
        model = load_keras(bundle / "model.keras", policy="float32")
    except Exception as exc:
        raise ZooError(f"{label}: model.keras could not be loaded: {type(exc).__name__}: "
                       f"{str(exc).splitlines()[0][:200] if str(exc) else ''}") from None
    return task_cls.loaded_class(model, preprocessing, recipe, version=version, metrics=metrics,
                                 name=name)


def load_keras(path: Path, policy: str | None = None):
    """Load a .keras file with safe_mode=True, zoo's own layers registered first.  With
    ``policy``, under that global dtype policy (the model's own, which decides whether it is
    compiled with a LossScaleOptimizer) whatever the process has set: a bundle is loaded alike
    in a user's process and inside a mixed-precision run; a checkpoint under the run's."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    import zoo.heads  # noqa: F401  (registers zoo's layers for deserialization)
    import zoo.layers  # noqa: F401

    if policy is None:
        return keras.saving.load_model(path, safe_mode=True)
    ambient = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        return keras.saving.load_model(path, safe_mode=True)
    finally:
        keras.mixed_precision.set_global_policy(ambient)
