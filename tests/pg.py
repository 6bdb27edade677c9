"""A throwaway PostgreSQL server and an `mlflow server` on top of it, for the team-store test.

PostgreSQL's server binaries (initdb, pg_ctl) come from the machine; psycopg2 from the package
index.  Where either is missing the test is skipped with the reason, never silently passed.
``initdb`` refuses to run as root: as root the server runs as the ``postgres`` user (runuser),
from a data folder that user owns.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                         key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit()
                         else 0, reverse=True):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


def skip_reason() -> str | None:
    if pg_bin() is None:
        return ("PostgreSQL's server binaries (initdb, pg_ctl) are not installed: "
                "apt-get install postgresql")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run PostgreSQL as"
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return 'psycopg2 is not installed: pip install -e ".[test]"'
    return None


@contextmanager
def postgres(db: str = "mlflow"):
    """A PostgreSQL server on 127.0.0.1 with database ``db`` (user ``zoo``, trust auth);
    yields its SQLAlchemy URI for psycopg2.  Stopped and deleted at the end."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    bindir = pg_bin()
    root = Path(tempfile.mkdtemp(prefix="zoo-pg-", dir="/tmp"))  # the server user must reach it
    data = root / "data"
    data.mkdir()
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        for p in (root, data):
            os.chown(p, user.pw_uid, user.pw_gid)
    os.chmod(root, 0o755)
    port = free_port()
    run = lambda cmd: subprocess.run(_as_server_user(cmd), check=True, capture_output=True,  # noqa: E731
                                     text=True, timeout=120)
    try:
        run([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "zoo"])
        run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(data / "log"), "-w", "-t", "60",
             "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "start"])
        try:
            import psycopg2

            conn = psycopg2.connect(host="127.0.0.1", port=port, user="zoo", dbname="postgres")
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE {db}")
            conn.close()
            yield f"postgresql+psycopg2://zoo@127.0.0.1:{port}/{db}"
        finally:
            subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-w",
                                            "-m", "fast", "stop"]), capture_output=True,
                           timeout=120)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"{exc.cmd[-1]} failed: {exc.stderr or exc.stdout}") from None
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def mlflow_server(backend_uri: str, artifacts: Path):
    """``mlflow server`` on 127.0.0.1 over ``backend_uri``, serving artifacts from
    ``artifacts``; yields its http URI once it answers /health.  Terminated at the end."""
    port = free_port()
    log = open(artifacts.parent / "mlflow-server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
         "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "2"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError("mlflow server exited: "
                                   + (artifacts.parent / "mlflow-server.log").read_text()[-2000:])
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("mlflow server did not answer /health within 180 s")
            time.sleep(0.5)
        yield uri
    finally:
        try:
            os.killpg(proc.pid, 15)  # its workers are in its own session
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=30)
        log.close()
