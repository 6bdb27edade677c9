"""zoo.load: a registered model (champion, alias, version) or a local bundle, as a task-aware
object.  The bundle format (and its checks) is :mod:`zoo.bundle`; the store is asked through
:mod:`zoo.tracking`.

Loaded bundles are cached under :func:`model_cache_root`, per store, keyed by what identifies
their bytes: the version's run id and the bundle digest recorded at registration.  The store
is asked on every load; a copy that does not match what it says is never served.  When the
store cannot be reached, the last verified copy for that name is served, with one line saying so.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from zoo import bundle, tracking
from zoo import store as stores
from zoo.errors import ZooError

_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9_.\-]+?)(?:@(?P<alias>[A-Za-z0-9_\-]+)|/(?P<version>\d+))?$")
REFS = "refs.json"


def model_cache_root() -> Path:
    base = os.environ.get("ZOO_MODEL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "zoo", "models")
    return Path(base)


def _store_key(uri: str) -> str:
    return hashlib.sha256(uri.encode()).hexdigest()[:12]


def _ref(alias: str | None, version: str | None) -> str:
    return f"/{version}" if version else f"@{alias}" if alias else "@"


def _read_refs(cache: Path) -> dict[str, str]:
    try:
        refs = json.loads((cache / REFS).read_text())
    except (OSError, ValueError):
        return {}
    return refs if isinstance(refs, dict) else {}


def _write_refs(cache: Path, refs: dict[str, str]) -> None:
    tmp = cache / f".{REFS}.{os.getpid()}"
    tmp.write_text(json.dumps(refs, indent=1, sort_keys=True))
    tmp.replace(cache / REFS)


def load(spec: str, store: str | None = None):
    """Load ``name`` (champion, else newest), ``name@alias``, ``name/version`` or a path, from
    ``store`` (a URI or folder) or else the store chosen as :mod:`zoo.store` describes."""
    if not isinstance(spec, str) or not spec:
        raise ZooError(f"zoo.load: expected a model name or path, got {spec!r}")
    local = Path(spec).expanduser()
    if spec.startswith((".", "/", "~")) or local.is_dir():
        return bundle.load(local)
    m = _SPEC.match(spec)
    if not m:
        raise ZooError(f"zoo.load: {spec!r} is not NAME, NAME@ALIAS, NAME/VERSION or a path")
    name, alias, version = m["name"], m["alias"], m["version"]
    s = stores.resolve(store)
    uri = s.uri
    cache = model_cache_root() / _store_key(uri) / name
    ref = _ref(alias, version)
    if not s.exists():
        raise ZooError(f"model {name!r} is not registered: there is no store at {s.describe()}; "
                       "train it with `zoo run`, or choose the store that has it with --store, "
                       "MLFLOW_TRACKING_URI or `zoo store use`")
    try:
        stores.check(s, write=False)
        with tracking.quick_failing_http():
            found = tracking.resolve_version(name, alias, version, s)
    except ZooError as exc:
        if "cannot be reached" not in str(exc):
            raise
        return _offline(cache, name, ref, spec, s, exc)
    except Exception as exc:
        return _offline(cache, name, ref, spec, s, exc)
    resolved = found["version"]
    digest = found["tags"].get("zoo.bundle_digest")
    key = f"v{resolved}-{found['run_id']}" + (f"-{digest[:16]}" if digest else "")
    target = cache / key / tracking.BUNDLE_PATH
    label = f"{name} version {resolved}"
    if not (target / bundle.MANIFEST).exists():
        _fetch(name, resolved, target, label, digest, s)
    refs = _read_refs(cache)
    refs.update({ref: key, _ref(None, resolved): key})
    _write_refs(cache, refs)
    loaded = bundle.load(target, name=name, version=resolved)
    loaded.run_id, loaded.bundle_digest = found["run_id"], digest   # where exports are logged
    return loaded


def _offline(cache: Path, name: str, ref: str, spec: str, s, exc: Exception):
    key = _read_refs(cache).get(ref)
    target = cache / key / tracking.BUNDLE_PATH if key else None
    if target is None or not (target / bundle.MANIFEST).exists():
        why = str(exc) if isinstance(exc, ZooError) else type(exc).__name__
        raise ZooError(f"zoo.load({spec!r}): the tracking store {s.describe()} cannot be "
                       f"reached ({why[:300]}) and no cached copy is known") from None
    version = key.split("-")[0][1:]
    print(f"zoo: tracking store {s.uri} unreachable; loading the cached copy of {name} version "
          f"{version} verified when it was last loaded", file=sys.stderr)
    return bundle.load(target, name=name, version=version)


def _fetch(name: str, version: str, target: Path, label: str, digest: str | None, s) -> None:
    """Download a version's bundle into ``target`` atomically, verifying it (and its digest
    against the one recorded at registration) before it is put in place."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".dl-"))
    except OSError as exc:
        raise ZooError(f"zoo.load: the model cache {model_cache_root()} is not writable "
                       f"({exc.strerror}); set ZOO_MODEL_CACHE to a writable folder") from None
    try:
        try:
            got = tracking.download_bundle(name, version, tmp, s)
        except Exception as exc:
            raise ZooError(f"{label}: artifacts could not be downloaded: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:200] if str(exc) else ''}") from None
        bundle.verify(got, label)
        if digest and bundle.digest(got) != digest:
            raise ZooError(f"{label}: the artifacts differ from what was registered (bundle "
                           f"digest {bundle.digest(got)[:16]} != {digest[:16]})")
        if target.exists():
            shutil.rmtree(target)
        got.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
