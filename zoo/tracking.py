"""MLflow, in one place: where the store is, what a run logs, how a model is registered,
promoted, listed and fetched.  Every MLflow call of zoo is in this module (and the pyfunc entry
``zoo.mlflow_model``); the engine, loading and the CLI talk to the functions and the
:class:`TrackedRun` here and never import mlflow."""

from __future__ import annotations

import contextlib
import fnmatch
import io
import math
import os
import socket
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from zoo import store
from zoo.errors import ZooError

CHAMPION = "champion"
BUNDLE_PATH = "zoo_model"    # the bundle's folder inside the logged MLflow model's data
EXPERIMENT_KIND = "custom_model_development"   # the MLflow UI opens such experiments on runs

_ready: set[str] = set()     # stores created/migrated (under the lock) by this process


# ------------------------------------------------------------------------------- the store


def tracking_uri() -> str:
    """The URI of the store zoo uses now (see :mod:`zoo.store` for how it is chosen)."""
    return store.resolve().uri


def _mlflow(s: store.Store | None = None, *, create: bool = False):
    """The mlflow module, pointed at the store ``s`` (default: the resolved one), its loggers
    and progress bars quiet.  A store that does not exist yet is created only when ``create``;
    creating and migrating a local store happens under the store's lock, once per process."""
    import logging

    s = s or store.resolve()
    if not create and not s.exists():
        raise ZooError(f"there is no store at {s.describe()}; train a model with `zoo run`, or "
                       "choose the store that has it with --store, MLFLOW_TRACKING_URI or "
                       "`zoo store use`")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    mlflow.set_tracking_uri(s.uri)
    if not create and store.read_only(s):  # read as it is: no lock, no migration, no writes
        return mlflow
    if s.uri not in _ready and s.sqlite_path is not None:  # created/upgraded by one process at a time
        with store.lock(s):
            c = mlflow.MlflowClient()
            _retrying(lambda: c.search_experiments(max_results=1))
            _retrying(lambda: c.search_registered_models(max_results=1))
        _ready.add(s.uri)
    return mlflow


def client(s: store.Store | None = None):
    return _mlflow(s).MlflowClient()


DATASET_RETRIES = 5


def _retrying(fn, *, seconds: float = 120.0):
    """``fn()``, retried with backoff while SQLite says the database is locked."""
    delay, waited = 0.05, 0.0
    while True:
        try:
            return fn()
        except Exception as exc:
            if "database is locked" not in str(exc) or waited >= seconds:
                raise
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, 2.0)


@contextlib.contextmanager
def quick_failing_http() -> Iterator[None]:
    """Fail fast on an unreachable tracking server (MLflow retries for minutes by default)."""
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


def checkpoint_dir(run_id: str) -> Path:
    """Where a run's resumable checkpoint lives (beside a local store)."""
    return store.checkpoint_root(store.resolve()) / run_id


# ----------------------------------------------------------------- runs whose process died


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot), None if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return "?"
        return "?"


def _owner_tags() -> dict[str, str]:
    pid = os.getpid()
    return {"zoo.host": socket.gethostname(), "zoo.pid": str(pid),
            "zoo.pid_start": _process_start(pid) or "?"}


def reap_dead_runs(c) -> list[str]:
    """Mark KILLED every RUNNING run started on this host whose process is gone (it can still
    be resumed if it has a checkpoint), where the store can be written (skipped quietly on a
    store this process can only read).  Returns their ids."""
    if store.read_only(store.Store(c.tracking_uri or "", "the client's")):
        return []
    host = socket.gethostname().replace("'", "")
    try:
        exps = [e.experiment_id for e in c.search_experiments()]
        runs = c.search_runs(exps, filter_string=f"attributes.status = 'RUNNING' and "
                             f"tags.`zoo.host` = '{host}'", max_results=1000) if exps else []
    except Exception:  # reaping is housekeeping: never the reason a command fails
        return []
    dead = []
    for r in runs:
        tags = r.data.tags
        try:
            pid = int(tags.get("zoo.pid", ""))
        except ValueError:
            continue
        started = _process_start(pid)
        if started is None or (started != "?" and tags.get("zoo.pid_start") not in (started, "?")):
            c.set_terminated(r.info.run_id, "KILLED")
            c.set_tag(r.info.run_id, "zoo.killed", "its process was gone when zoo next used the store")
            dead.append(r.info.run_id)
    return dead


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


# The tags run_tags() sets: on the run, and on the version registered from it.
RUN_TAG_KEYS = ("zoo.task", "zoo.model", "zoo.version", "zoo.recipe_hash", "zoo.data_hash",
                "zoo.fast_dev_run", "zoo.recipe_path", "mlflow.source.git.commit",
                "zoo.git_commit")


def run_tags(recipe, data_hash: str, fast_dev_run: bool) -> dict[str, str]:
    from zoo.version import __version__

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


# -------------------------------------------------------------------------------- a run


def find_run(run_id: str) -> dict[str, Any]:
    """A run's status and tags (for --resume checks); ZooError if the store has no such run."""
    c = client()
    reap_dead_runs(c)
    try:
        run = c.get_run(run_id)
    except Exception:
        raise ZooError(f"--resume {run_id}: no such run in {tracking_uri()}") from None
    return {"status": run.info.status, "tags": dict(run.data.tags)}


class TrackedRun:
    """One MLflow run: start (or resume) it, log to it, finish it.

    Used as a context manager: leaving the block normally marks the run FINISHED, an exception
    FAILED, an interrupt KILLED."""

    def __init__(self, experiment: str, resume: str | None = None,
                 parent_run_id: str | None = None, s: store.Store | None = None) -> None:
        self.store = s or store.resolve()
        self._mlflow = _mlflow(self.store, create=True)
        self.client = self._mlflow.MlflowClient()
        reap_dead_runs(self.client)
        if resume is None:
            exp_id = self._experiment(experiment)
            self._active = _retrying(lambda: self._mlflow.start_run(
                experiment_id=exp_id, parent_run_id=parent_run_id,
                nested=parent_run_id is not None, tags=_owner_tags()))
        else:
            self._active = _retrying(lambda: self._mlflow.start_run(run_id=resume))
            self.set_tags(_owner_tags())
        self.run_id: str = self._active.info.run_id
        self.experiment_id: str = self._active.info.experiment_id

    def _experiment(self, name: str) -> str:
        """The experiment's id, created (as a model-training experiment) under the store's lock
        when it does not exist yet."""
        with store.lock(self.store):
            exp = _retrying(lambda: self.client.get_experiment_by_name(name))
            if exp is None:
                exp_id = _retrying(lambda: self.client.create_experiment(
                    name, tags={"mlflow.experimentKind": EXPERIMENT_KIND}))
            else:
                exp_id = exp.experiment_id
                if exp.tags.get("mlflow.experimentKind") is None:
                    self.client.set_experiment_tag(exp_id, "mlflow.experimentKind", EXPERIMENT_KIND)
        return exp_id

    def __enter__(self) -> "TrackedRun":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        status = "FINISHED" if exc_type is None else \
            "KILLED" if issubclass(exc_type, (KeyboardInterrupt, SystemExit)) else "FAILED"
        _retrying(lambda: self._mlflow.end_run(status))

    # ----- logging ---------------------------------------------------------------------------
    def set_tags(self, tags: dict[str, str]) -> None:
        _retrying(lambda: self._mlflow.set_tags(tags))

    def log_params(self, params: dict[str, str]) -> None:
        # MLflow caps a param value at 6000 characters and a batch at 100 params.
        items = [(k, v[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            _retrying(lambda: self._mlflow.log_params(dict(items[i:i + 100])))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        finite = {k: v for k, v in metrics.items() if math.isfinite(v)}
        _retrying(lambda: self._mlflow.log_metrics(finite, step=step))

    def log_text(self, text: str, path: str) -> None:
        _retrying(lambda: self._mlflow.log_text(text, path))

    def log_artifact(self, path: Path, folder: str) -> None:
        _retrying(lambda: self._mlflow.log_artifact(str(path), folder))

    def log_datasets(self, splits: dict[str, Any], source: str, name: str, digest: str) -> None:
        """Each split as an MLflow dataset input of the run (context train / val / test): the
        run page's Datasets panel then names the corpus, its split sizes and digest."""
        from mlflow.data.http_dataset_source import HTTPDatasetSource
        from mlflow.data.numpy_dataset import from_numpy

        for context, split in splits.items():
            if source.startswith(("http://", "https://")):
                src: Any = HTTPDatasetSource(url=source)
            elif os.path.exists(source):
                src = source
            else:
                from mlflow.data.code_dataset_source import CodeDatasetSource

                src = CodeDatasetSource(tags={"zoo.source": source})
            import warnings

            with warnings.catch_warnings():  # a local path matches two equal source kinds
                warnings.filterwarnings("ignore", message=".*can be interpreted in multiple ways.*")
                ds = from_numpy(split.x, source=src, targets=split.y, name=f"{name}-{context}",
                                digest=f"{digest}-{context}"[:36])
            for attempt in range(DATASET_RETRIES):
                try:
                    _retrying(lambda: self._mlflow.log_input(ds, context=context))
                    break
                except Exception as exc:
                    # Concurrent runs (a sweep's trials) logging the same dataset race to insert
                    # it; the loser's retry finds it and only links it to its run.
                    text = str(exc)
                    if attempt == DATASET_RETRIES - 1 or not any(
                            k in text for k in ("INSERT INTO datasets", "UniqueViolation",
                                                "duplicate key", "UNIQUE constraint failed")):
                        raise
                    time.sleep(0.2 * (attempt + 1))

    # ----- the model ---------------------------------------------------------------------------
    def log_model(self, bundle: Path, input_example: Any) -> str:
        """Log the bundle as an MLflow pyfunc model whose code is the installed zoo package
        (``loader_module``; the artifacts hold only data).  Returns the model's URI, also kept
        on the run as the tag ``zoo.model_uri`` (what publishing a sweep's trial reads)."""
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Add type hints.*")
            info = self._mlflow.pyfunc.log_model(
                name="model", loader_module="zoo.mlflow_model", data_path=str(bundle),
                input_example=input_example,
                pip_requirements=["zoo", "tensorflow", "keras", "mlflow"])
        self.set_tags({"zoo.model_uri": info.model_uri})
        return info.model_uri


def describe_run(run_id: str, markdown: str) -> None:
    """The run's description (its model card), shown on the run page."""
    set_run_tags(run_id, {"mlflow.note.content": markdown})


def load_run_text(run_id: str, path: str) -> str:
    """A text artifact of a run."""
    mlflow = _mlflow()
    return _retrying(lambda: mlflow.artifacts.load_text(f"runs:/{run_id}/{path}"))


def describe_version(name: str, version: str, markdown: str) -> None:
    """The registered version's description (its model card), shown in the MLflow UI."""
    c = client()
    _retrying(lambda: c.update_model_version(name, version, description=markdown))


def register(model_uri: str, name: str, tags: dict[str, str]) -> str:
    """Register a logged model under ``name`` with ``tags`` on the new version; its number.
    Under the store's lock, so concurrent runs get distinct versions."""
    s = store.resolve()
    mlflow = _mlflow(s)
    c = mlflow.MlflowClient()
    with store.lock(s), contextlib.redirect_stderr(io.StringIO()):  # MLflow's "Successfully …"
        mv = _retrying(lambda: mlflow.register_model(model_uri, name))
        for key, value in tags.items():
            _retrying(lambda: c.set_model_version_tag(name, str(mv.version), key, value))
    return str(mv.version)


# ------------------------------------------------------------------------------ promotion


def _version_metric(mv, metric: str) -> float | None:
    try:
        return float(mv.tags[metric])
    except (KeyError, ValueError):
        return None


def promote_run(run_id: str, name: str, version: str, **rule) -> dict[str, Any]:
    """:func:`promote` under the store's lock (concurrent runs and sweeps on one store), the
    decision recorded on the run (``zoo.promotion.*``)."""
    s = store.resolve()
    c = client(s)
    with store.lock(s):
        decision = _retrying(lambda: promote(c, name, version, **rule))
    set_run_tags(run_id, {f"zoo.promotion.{k}": "" if v is None else str(v)
                          for k, v in decision.items()})
    return decision


def promote(client, name: str, version: str, *, metric: str, greater_is_better: bool,
            policy: str, fast_dev_run: bool, guard=None) -> dict[str, Any]:
    """Move the champion alias to a new version when the policy says so, and never to a
    version that fails the baseline ``guard`` (:func:`zoo.publish.baseline_guard`).  Every move
    is recorded on the new version (which version it replaced, and when).  Returns the
    decision, with the metric and both values, for the run's log."""
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
    elif guard is not None and not guard.passed:
        promoted, why = False, guard.reason
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


# -------------------------------------------------------------------- registered models


REGISTERED_HEADER = ["registered model", "versions", "latest", "aliases", "main metric", "task"]


def registered_rows(pattern: str = "*", s: store.Store | None = None) -> list[list[str]]:
    """Registered models matching ``pattern``: name, versions, latest, aliases, the champion's
    (else the latest's) main metric, task; one row each."""
    c = client(s)
    reap_dead_runs(c)
    rows = []
    for rm in sorted(c.search_registered_models(), key=lambda m: m.name):
        if not fnmatch.fnmatchcase(rm.name, pattern):
            continue
        versions = c.search_model_versions(f"name='{rm.name}'")
        latest = max(versions, key=lambda v: int(v.version)) if versions else None
        aliases = getattr(rm, "aliases", {}) or {}
        shown = c.get_model_version(rm.name, aliases[CHAMPION]) if CHAMPION in aliases else latest
        metric = shown.tags.get("zoo.main_metric", "") if shown else ""
        value = shown.tags.get(metric, "") if shown else ""
        rows.append([rm.name, str(len(versions)), latest.version if latest else "-",
                     ", ".join(f"{a}→v{v}" for a, v in sorted(aliases.items())) or "-",
                     f"{metric}={value} (v{shown.version})" if metric else "-",
                     shown.tags.get("zoo.task", "") if shown else ""])
    return rows


def resolve_version(name: str, alias: str | None, version: str | None,
                    s: store.Store | None = None) -> dict[str, Any]:
    """The model version a spec names (a version, an alias, else the champion, else the
    newest): ``{"version", "run_id", "tags"}``.  A name, alias or version the store does not
    have is a ZooError naming the store, how it was chosen and what it holds; a store that
    cannot be asked raises what MLflow raised."""
    from mlflow.exceptions import MlflowException

    s = s or store.resolve()
    c = client(s)
    not_found = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
    try:
        if version is not None:
            mv = c.get_model_version(name, version)
        elif alias is not None:
            mv = c.get_model_version_by_alias(name, alias)
        else:
            try:
                mv = c.get_model_version_by_alias(name, CHAMPION)
            except MlflowException as exc:
                if exc.error_code not in not_found:
                    raise
                versions = c.search_model_versions(f"name='{name}'")
                if not versions:
                    raise
                mv = max(versions, key=lambda v: int(v.version))
    except MlflowException as exc:
        if exc.error_code not in not_found:
            raise  # the store could not be asked: not a statement about the model
        what = (f"version {version}" if version else f"alias {alias!r}" if alias
                else "registered version")
        names = sorted(m.name for m in c.search_registered_models())
        held = f"registered there: {', '.join(names[:20])}" + (" …" if len(names) > 20 else "") \
            if names else "it holds no registered models"
        raise ZooError(f"model {name!r} has no {what} in the store {s.uri} ({s.how}); {held}; "
                       "choose another store with --store, MLFLOW_TRACKING_URI or "
                       "`zoo store use`") from None
    return {"version": str(mv.version), "run_id": mv.run_id, "tags": dict(mv.tags or {})}


def download_bundle(name: str, version: str, dst: Path, s: store.Store | None = None) -> Path:
    """Fetch a version's bundle folder into ``dst``; returns its local path.  Models logged
    before zoo used ``loader_module`` keep their bundle under ``artifacts/``."""
    mlflow = _mlflow(s)
    last: Exception | None = None
    for sub in (f"data/{BUNDLE_PATH}", f"artifacts/{BUNDLE_PATH}"):
        try:
            return Path(mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}/{sub}", dst_path=str(dst)))
        except Exception as exc:  # noqa: PERF203
            last = exc
    assert last is not None
    raise last


# ---- sweeps
# What `zoo sweep` (zoo.sweep) needs from MLflow: the sweep's parent run and its nested trial
# runs, found by the parent's id; a store every Ray node can reach.

SWEEP_TAG = "zoo.sweep"                  # "true" on a sweep's parent run
SWEEP_PARENT_TAG = "mlflow.parentRunId"  # MLflow's own nesting tag, on every trial run


def is_local_store(uri: str | None = None) -> bool:
    """Whether the store is a file on this machine (SQLite or a folder), which the trials on
    other Ray nodes cannot reach."""
    uri = uri or tracking_uri()
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def run_info(run_id: str) -> dict[str, Any] | None:
    """A run's status, experiment, tags, params and latest metrics; None if the store has none."""
    try:
        run = client().get_run(run_id)
    except Exception:
        return None
    return {"run_id": run.info.run_id, "status": run.info.status,
            "experiment_id": run.info.experiment_id, "tags": dict(run.data.tags),
            "params": dict(run.data.params), "metrics": dict(run.data.metrics),
            "start_time": run.info.start_time}


def child_runs(parent_run_id: str) -> list[dict[str, Any]]:
    """The runs nested under a parent (a sweep's trials), oldest first, as :func:`run_info`."""
    c = client()
    parent = c.get_run(parent_run_id)
    runs, token = [], None
    while True:
        page = c.search_runs([parent.info.experiment_id],
                             filter_string=f"tags.{SWEEP_PARENT_TAG} = '{parent_run_id}'",
                             max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    out = [{"run_id": r.info.run_id, "status": r.info.status,
            "experiment_id": r.info.experiment_id, "tags": dict(r.data.tags),
            "params": dict(r.data.params), "metrics": dict(r.data.metrics),
            "start_time": r.info.start_time} for r in runs]
    return sorted(out, key=lambda r: (r["start_time"] or 0, r["run_id"]))


def set_run_tags(run_id: str, tags: dict[str, str]) -> None:
    c = client()
    for key, value in tags.items():
        c.set_tag(run_id, key, value)


def end_run_by_id(run_id: str, status: str) -> None:
    """Mark a run that its process can no longer end (a trial stopped early, a killed one)."""
    client().set_terminated(run_id, status)


def tag_current_run(tags: dict[str, str]) -> str | None:
    """Tag the run this process has active (else the one it ran last); returns its id."""
    mlflow = _mlflow()
    run = mlflow.active_run() or mlflow.last_active_run()
    if run is None:
        return None
    set_run_tags(run.info.run_id, tags)
    return run.info.run_id
