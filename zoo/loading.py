"""zoo.load: a registered model (champion, alias, version) or a local bundle, as a task-aware
object.  Nothing is unpickled: the Keras model loads with safe_mode=True, preprocessing from
JSON, the recipe from YAML read safely; every file is checked against the bundle's manifest."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from zoo.errors import ZooError

MANIFEST = "manifest.json"
BUNDLE_FILES = ("model.keras", "preprocessing.json", "recipe.yaml", "metrics.json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(bundle: Path) -> None:
    files = {name: _sha256(bundle / name) for name in BUNDLE_FILES}
    (bundle / MANIFEST).write_text(json.dumps(files, indent=1, sort_keys=True))


def verify_bundle(bundle: Path, label: str) -> None:
    """Raise a clear ZooError if a file of the bundle is missing, truncated or altered."""
    mpath = bundle / MANIFEST
    if not mpath.exists():
        raise ZooError(f"{label}: not a zoo model (no {MANIFEST} in {bundle})")
    try:
        expected = json.loads(mpath.read_text())
    except (ValueError, UnicodeDecodeError):
        raise ZooError(f"{label}: {MANIFEST} is corrupt") from None
    for name in BUNDLE_FILES:
        f = bundle / name
        if not f.exists():
            raise ZooError(f"{label}: artifact {name} is missing")
        if _sha256(f) != expected.get(name):
            raise ZooError(f"{label}: artifact {name} is truncated or altered "
                           "(its checksum does not match the one recorded at training)")


def load_bundle(path: str | Path, *, name: str | None = None, version: str | None = None):
    """Load a local zoo model bundle (a folder holding model.keras and its JSON/YAML)."""
    bundle = Path(path)
    label = f"{name} version {version}" if name else str(bundle)
    if (bundle / "artifacts" / "zoo_model").is_dir():  # an MLflow model folder
        bundle = bundle / "artifacts" / "zoo_model"
    if not bundle.is_dir():
        raise ZooError(f"{label}: no such model folder")
    verify_bundle(bundle, label)
    from zoo.tasks import get_task

    recipe = yaml.safe_load((bundle / "recipe.yaml").read_text())
    preprocessing = json.loads((bundle / "preprocessing.json").read_text())
    metrics = json.loads((bundle / "metrics.json").read_text())
    task_cls = get_task(recipe["task"]["name"])
    try:
        model = load_keras(bundle / "model.keras")
    except Exception as exc:
        raise ZooError(f"{label}: model.keras could not be loaded: {type(exc).__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    return task_cls.loaded_class(model, preprocessing, recipe, version=version, metrics=metrics,
                                 name=name)


def load_keras(path: Path):
    """Load a .keras file with safe_mode=True, zoo's own layers registered first."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    import zoo.layers  # noqa: F401  (registers TanhRNN for deserialization)

    return keras.saving.load_model(path, safe_mode=True)


# --------------------------------------------------------------------- registered models

_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9_.\-]+?)(?:@(?P<alias>[A-Za-z0-9_\-]+)|/(?P<version>\d+))?$")


def model_cache_root() -> Path:
    base = os.environ.get("ZOO_MODEL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "zoo", "models")
    return Path(base)


def _store_key(uri: str) -> str:
    return hashlib.sha256(uri.encode()).hexdigest()[:12]


def resolve_version(client, name: str, alias: str | None, version: str | None):
    """The model version a spec names: a version, an alias, else the champion, else newest."""
    from mlflow.exceptions import MlflowException

    try:
        if version is not None:
            return client.get_model_version(name, version)
        if alias is not None:
            return client.get_model_version_by_alias(name, alias)
        try:
            return client.get_model_version_by_alias(name, "champion")
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise
            versions = client.search_model_versions(f"name='{name}'")
            if not versions:
                raise
            return max(versions, key=lambda v: int(v.version))
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise  # the store could not be asked: not a statement about the model
        what = (f"version {version}" if version else f"alias {alias!r}" if alias
                else "registered version")
        raise ZooError(f"model {name!r} has no {what} in the store {client.tracking_uri} "
                       f"(see `zoo models --registered`)") from None


def _quick_failing_http():
    """Fail fast on an unreachable tracking server (MLflow retries for minutes by default)."""
    import contextlib

    @contextlib.contextmanager
    def ctx():
        saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                                                 "MLFLOW_HTTP_REQUEST_TIMEOUT")}
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    return ctx()


def load(spec: str):
    """Load ``name`` (champion, else newest), ``name@alias``, ``name/version`` or a path.

    Artifacts are cached per store under :func:`model_cache_root`; a version already cached is
    loaded without asking the store, and an alias resolved before still loads, from the cache,
    when the store cannot be reached."""
    if not isinstance(spec, str) or not spec:
        raise ZooError(f"zoo.load: expected a model name or path, got {spec!r}")
    local = Path(spec).expanduser()
    if spec.startswith((".", "/", "~")) or local.is_dir():
        return load_bundle(local)
    m = _SPEC.match(spec)
    if not m:
        raise ZooError(f"zoo.load: {spec!r} is not NAME, NAME@ALIAS, NAME/VERSION or a path")
    name, alias, version = m["name"], m["alias"], m["version"]
    from zoo import tracking

    uri = tracking.tracking_uri()
    cache = model_cache_root() / _store_key(uri) / name
    if version is not None and (cache / version / "zoo_model" / MANIFEST).exists():
        return load_bundle(cache / version / "zoo_model", name=name, version=version)
    aliases_file = cache / "aliases.json"
    alias_key = alias or ""
    mlflow = tracking.configure()
    try:
        with _quick_failing_http():
            mv = resolve_version(mlflow.MlflowClient(), name, alias, version)
        resolved = str(mv.version)
    except ZooError:
        raise
    except Exception as exc:
        known = json.loads(aliases_file.read_text()) if aliases_file.exists() else {}
        resolved = known.get(alias_key)
        if version is not None or resolved is None or not (cache / resolved / "zoo_model").is_dir():
            raise ZooError(f"zoo.load({spec!r}): the tracking store {uri} cannot be reached "
                           f"({type(exc).__name__}) and no cached copy is known") from None
        print(f"zoo: tracking store unreachable; loading cached {name} version {resolved}",
              file=sys.stderr)
        return load_bundle(cache / resolved / "zoo_model", name=name, version=resolved)
    if version is None:
        cache.mkdir(parents=True, exist_ok=True)
        known = json.loads(aliases_file.read_text()) if aliases_file.exists() else {}
        known[alias_key] = resolved
        tmp = aliases_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(known))
        tmp.replace(aliases_file)
    target = cache / resolved
    if not (target / "zoo_model" / MANIFEST).exists():
        _download(mlflow, name, resolved, target)
    return load_bundle(target / "zoo_model", name=name, version=resolved)


def _download(mlflow, name: str, version: str, target: Path) -> None:
    """Fetch a version's bundle into ``target/zoo_model`` atomically, checking it first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".dl-"))
    label = f"{name} version {version}"
    try:
        try:
            got = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}/artifacts/zoo_model", dst_path=str(tmp))
        except Exception as exc:
            raise ZooError(f"{label}: artifacts could not be downloaded: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
        verify_bundle(Path(got), label)
        if target.exists():
            shutil.rmtree(target)
        target.mkdir()
        Path(got).rename(target / "zoo_model")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
