"""Which MLflow store zoo uses, whether it can be reached, and the lock that makes creating
it safe under concurrency.  Nothing here imports MLflow or TensorFlow, so every command can
check its store in a fraction of a second before it does anything heavy.

The store is chosen in this order, the same for every command and for ``zoo.load``:

1. an explicit store: ``zoo.load(name, store=...)`` or ``--store``;
2. the environment variable ``MLFLOW_TRACKING_URI``;
3. the user's default store, kept in ``$XDG_CONFIG_HOME/zoo/config.json`` (by default
   ``~/.config/zoo/config.json``; ``zoo store`` shows it, ``zoo store use URI`` sets it; the
   first ``zoo run`` that creates a store makes it the default when none is set);
4. ``./mlruns`` in the working directory.

A store is a URI (``sqlite:///…/mlflow.db``, ``http://host:port``, ``postgresql+psycopg2://…``)
or a folder, which means the SQLite store ``FOLDER/mlflow.db`` with its artifacts beside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from zoo.errors import ZooError

DEFAULT_DIR = "mlruns"
DB_NAME = "mlflow.db"
PROBE_TIMEOUT_S = 5.0

_explicit: str | None = None     # set by the CLI's --store


@dataclass(frozen=True)
class Store:
    uri: str
    how: str          # how it was chosen, in words, for messages

    @property
    def sqlite_path(self) -> Path | None:
        return sqlite_path(self.uri)

    def exists(self) -> bool:
        """Whether there is a store there already (always assumed for a server)."""
        p = self.sqlite_path
        return p is None or p.is_file()

    def describe(self) -> str:
        return f"{self.uri} ({self.how})"


def normalize(value: str) -> str:
    """A store URI from a URI or a folder path."""
    value = value.strip()
    if not value:
        raise ZooError("store: empty store URI")
    if "://" in value or value.startswith("sqlite:"):
        return value
    p = Path(value).expanduser().resolve()
    if p.suffix == ".db":
        return f"sqlite:///{p}"
    return f"sqlite:///{p / DB_NAME}"


def sqlite_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):].split("?")[0])
    return None


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "zoo" / "config.json"


def _read_config() -> dict:
    p = config_path()
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, UnicodeDecodeError):
        raise ZooError(f"{p}: not a valid zoo config file (JSON); fix or delete it") from None
    if not isinstance(data, dict):
        raise ZooError(f"{p}: not a valid zoo config file (a JSON object)")
    return data


def default_store() -> str | None:
    value = _read_config().get("store")
    return value if isinstance(value, str) and value else None


def set_default(uri: str) -> Path:
    """Make ``uri`` the user's default store; returns the config file written."""
    p = config_path()
    data = _read_config()
    data["store"] = normalize(uri)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        tmp.replace(p)
    except OSError as exc:
        raise ZooError(f"{p.parent}: cannot write zoo's config ({exc.strerror})") from None
    return p


def use(explicit: str | None) -> None:
    """Make ``explicit`` (the CLI's --store) the store of this process."""
    global _explicit
    _explicit = normalize(explicit) if explicit else None


def resolve(explicit: str | None = None) -> Store:
    """The store to use, and how it was chosen (see the module's docstring for the order)."""
    if explicit:
        return Store(normalize(explicit), "given explicitly")
    if _explicit:
        return Store(_explicit, "given with --store")
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return Store(env, "from MLFLOW_TRACKING_URI")
    default = default_store()
    here = normalize(str(Path.cwd() / DEFAULT_DIR))
    if default:
        path = sqlite_path(default)
        if path is None or path.parent.is_dir():
            return Store(default, f"your default store, set in {config_path()}")
        _note(f"zoo: your default store's folder {path.parent} (set in {config_path()}) is "
              "gone; using ./mlruns in the working directory instead, not recreating a folder "
              f"that was removed (`zoo store use {path.parent}` creates it again)")
        return Store(here, f"./mlruns in the working directory; your default store's folder "
                           f"{path.parent} is gone")
    return Store(here, "./mlruns in the working directory")


_noted: set[str] = set()


def _note(line: str) -> None:
    """Says ``line`` on stderr, once per process."""
    if line not in _noted:
        _noted.add(line)
        print(line, file=sys.stderr, flush=True)


def read_only(s: Store) -> bool:
    """Whether ``s`` is a local SQLite store that this process can read but not write (a
    team's published store, one owned by someone else)."""
    path = s.sqlite_path
    return path is not None and path.is_file() and unwritable(s) is not None


def _probe_http(uri: str) -> str | None:
    """None when an MLflow server answers at ``uri``, else the reason in a few words."""
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as reply:
            return None if reply.status < 500 else f"HTTP {reply.status}"
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return None  # a server that wants credentials is there; MLflow will send them
        return None if exc.code < 500 else f"HTTP {exc.code}"
    except urllib.error.URLError as exc:
        reason = exc.reason
        return getattr(reason, "strerror", None) or str(reason)
    except (OSError, ValueError) as exc:
        return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def writable_folder(folder: Path) -> str | None:
    """None when ``folder`` exists and is writable or can be created, else why not."""
    p = folder
    while not p.exists():
        if p.parent == p:
            break
        p = p.parent
    if not p.is_dir():
        return f"{p} is not a folder"
    if not os.access(p, os.W_OK | os.X_OK):
        return f"{p} is not writable"
    return None


def check(s: Store, *, write: bool) -> None:
    """Raise one clear ZooError line, quickly, when the store cannot be used: a server that
    does not answer, or (to write) a local folder that cannot be written."""
    if s.uri.startswith(("http://", "https://")):
        why = _probe_http(s.uri)
        if why:
            raise ZooError(f"the tracking store {s.describe()} cannot be reached: {why}; start "
                           "the server, or choose another store with --store, "
                           "MLFLOW_TRACKING_URI or `zoo store use`")
        return
    why = unwritable(s) if write else None
    if why:
        raise ZooError(f"the tracking store {s.describe()} cannot be written: {why}")


def unwritable(s: Store) -> str | None:
    """Why this process cannot write the local store ``s`` (naming the folder or file), or
    None."""
    path = s.sqlite_path
    if path is None:
        return None
    why = writable_folder(path.parent)
    if why is None and path.exists() and not os.access(path, os.W_OK):
        why = f"{path} is read-only"
    return why


@contextlib.contextmanager
def lock(s: Store, timeout: float = 600.0) -> Iterator[None]:
    """An inter-process lock for a local SQLite store (creating, migrating, registering and
    promoting take it); a no-op for a server, which serialises writers itself."""
    path = s.sqlite_path
    if path is None:
        yield
        return
    from filelock import FileLock, Timeout

    why = unwritable(s)
    if why:
        raise ZooError(f"the store {s.uri} cannot be written: {why}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(path) + ".lock", timeout=timeout):
            yield
    except Timeout:
        raise ZooError(f"the store {s.uri} stayed locked for {timeout:.0f} s "
                       f"(by another zoo process?); lock file {path}.lock") from None


def checkpoint_root(s: Store) -> Path:
    """Where runs keep their resumable checkpoints: beside a local store, else in the user's
    cache folder."""
    path = s.sqlite_path
    if path is not None:
        return path.parent / "checkpoints"
    base = os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))
    return Path(base) / "zoo" / "checkpoints"
