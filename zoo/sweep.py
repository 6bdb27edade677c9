"""`zoo sweep`: hyperparameter search on Ray Tune, every trial an ordinary zoo run.

A recipe's ``sweep:`` section names a search space over any recipe keys.  Each trial applies its
sampled point as ``--set`` overrides, is validated like any recipe, and trains through the one
engine (:func:`zoo.engine.run`) in a Ray worker, reporting every epoch to Tune (so ASHA can stop
it early).  MLflow holds the whole sweep: one parent run, one nested run per trial; the store,
not Ray, is what ``--resume`` reads.  The best trial's model is registered and promoted like a
run's.  Nothing here imports TensorFlow or Ray before the recipe and the sweep are validated.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from zoo.errors import ZooError, did_you_mean
from zoo.recipe import SECTIONS, Recipe, load_recipe, load_recipe_and_section

EXTRA_HINT = 'pip install -e ".[sweep]"'
DOMAINS = ("choice", "uniform", "loguniform", "randint")
DEFAULT_TRIALS = 8


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Resources(_Strict):
    cpu: float = Field(1, gt=0)
    gpu: float = Field(0, ge=0)


import warnings as _warnings

_warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class SweepSection(_Strict):
    """The ``sweep:`` section of a recipe."""

    metric: str | None = None             # default: val_<the task's main metric>
    mode: Literal["max", "min"] | None = None   # default: the task's direction for its metric
    trials: int | None = Field(None, ge=1)      # default: the grid's size, else 8
    max_concurrent: int = Field(2, ge=1)
    search: Literal["optuna", "random", "grid"] = "optuna"
    scheduler: Literal["asha", "none"] = "asha"
    grace_period: int = Field(1, ge=1)    # ASHA: epochs every trial runs before it can be stopped
    resources_per_trial: Resources = Resources()
    register: Literal["best", "all"] = "best"
    seed: int | None = Field(None, ge=0)  # the searcher's seed; default train.seed
    space: dict[str, Any]


@dataclass
class Dimension:
    key: str                    # a recipe key path, e.g. model.units
    kind: str                   # choice, uniform, loguniform, randint
    args: list[Any]

    def describe(self) -> str:
        return f"{{{self.kind}: {json.dumps(self.args)}}}"

    def probes(self) -> list[Any]:
        """Values whose validity stands for the dimension's (choices; a range's ends)."""
        return list(self.args)


@dataclass
class Sweep:
    """A validated sweep: the base recipe, the section, the space, the metric and direction."""

    path: Path
    overrides: list[str]
    recipe: Recipe
    section: SweepSection
    space: list[Dimension]
    metric: str
    mode: str
    trials: int
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def keys(self) -> list[str]:
        return [d.key for d in self.space]

    def grid(self) -> list[dict[str, Any]]:
        return [dict(zip(self.keys, values))
                for values in itertools.product(*(d.args for d in self.space))]

    def digest(self) -> str:
        """What a resumed sweep must share with the one it continues."""
        import hashlib

        # How many trials, and how many at once, may change on --resume; what is searched may not.
        section = {k: v for k, v in self.raw.items() if k not in ("trials", "max_concurrent")}
        text = json.dumps({"recipe": self.recipe.digest(), "sweep": section,
                           "metric": self.metric, "mode": self.mode}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------ validation


def _plain(value: Any) -> Any:
    """A Python scalar (Ray and Optuna may hand back NumPy ones)."""
    return value.item() if hasattr(value, "item") else value


def point_overrides(point: dict[str, Any]) -> list[str]:
    """A sampled point as ``--set`` overrides (values written as JSON, which YAML reads back)."""
    return [f"{k}={json.dumps(_plain(v))}" for k, v in point.items()]


def _dimension(path: Path, key: str, spec: Any, search: str) -> Dimension:
    where = f"{path}: sweep.space.{key}"
    section = key.split(".")[0]
    if section not in SECTIONS or section in ("extends", "sweep") or "." not in key:
        allowed = [s for s in SECTIONS if s not in ("extends", "sweep")]
        raise ZooError(f"{where}: a searched key must be a recipe key path SECTION.KEY, e.g. "
                       f"model.units (sections: {', '.join(allowed)})"
                       f"{did_you_mean(section, allowed)}")
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ZooError(f"{where}: expected one of {{choice: [...]}}, {{uniform: [LOW, HIGH]}}, "
                       f"{{loguniform: [LOW, HIGH]}}, {{randint: [LOW, HIGH]}}, got {spec!r}")
    (kind, args), = spec.items()
    if kind not in DOMAINS:
        raise ZooError(f"{where}: unknown kind {kind!r}{did_you_mean(str(kind), DOMAINS)}; "
                       f"one of: {', '.join(DOMAINS)}")
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ZooError(f"{where}.choice: expected a non-empty list of values, got {args!r}")
        if search == "optuna" and not all(isinstance(a, (str, int, float, bool)) for a in args):
            raise ZooError(f"{where}.choice: search: optuna takes only plain values (numbers, "
                           f"strings, booleans) as choices, got {args!r}")
        if len({json.dumps(a, sort_keys=True) for a in args}) != len(args):
            raise ZooError(f"{where}.choice: a value is given twice in {args!r}")
    else:
        if search == "grid":
            raise ZooError(f"{where}: search: grid takes only {{choice: [...]}}, got {kind}")
        numeric = (int,) if kind == "randint" else (int, float)
        if (not isinstance(args, list) or len(args) != 2
                or not all(isinstance(a, numeric) and not isinstance(a, bool) for a in args)):
            what = "integers" if kind == "randint" else "numbers"
            raise ZooError(f"{where}.{kind}: expected [LOW, HIGH], two {what}, got {args!r}")
        low, high = args
        if not low < high:
            raise ZooError(f"{where}.{kind}: LOW must be below HIGH, got {args!r}")
        if kind == "loguniform" and low <= 0:
            raise ZooError(f"{where}.loguniform: LOW must be above 0, got {args!r}")
    return Dimension(key, kind, list(args))


def _check_point(path: Path, overrides: list[str], point: dict[str, Any]) -> ZooError | None:
    try:
        load_recipe(path, [*overrides, *point_overrides(point)])
    except ZooError as exc:
        return exc
    return None


def _check_space(path: Path, overrides: list[str], space: list[Dimension]) -> None:
    """Refuse, before anything runs, a dimension with a value no recipe accepts (each value tried
    on the base recipe, and with the other dimensions' values), and a space whose first values
    together make no valid recipe."""
    first_ok: dict[str, Any] = {}
    for dim in space:
        good = None
        for value in dim.probes():
            alone = _check_point(path, overrides, {dim.key: value})
            if alone is None:
                good = value if good is None else good
                continue
            # Valid with some value of the other keys (e.g. a hyperparameter that only one of
            # the searched builders takes)?  Then the searcher may sample it; the trial's own
            # validation records it as failed if the combination is wrong.
            others = [d for d in space if d is not dim]
            rescued = any(
                _check_point(path, overrides, {**dict(zip([d.key for d in others], combo)),
                                               dim.key: value}) is None
                for combo in itertools.islice(itertools.product(*(d.probes() for d in others)), 64))
            if not rescued:
                raise ZooError(f"{path}: sweep.space.{dim.key}: {dim.kind} value {value!r} makes "
                               f"no valid recipe: {_strip(str(alone), path)}")
            good = value if good is None else good
        first_ok[dim.key] = good
    error = _check_point(path, overrides, first_ok)
    if error is not None and not any(
            _check_point(path, overrides, dict(zip([d.key for d in space], combo))) is None
            for combo in itertools.islice(itertools.product(*(d.probes() for d in space)), 256)):
        raise ZooError(f"{path}: sweep.space: no combination of the searched values makes a "
                       f"valid recipe: {_strip(str(error), path)}")


def _strip(message: str, path: Path) -> str:
    prefix = f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def load_sweep(path: str | Path, overrides: list[str] | tuple[str, ...] = (),
               trials: int | None = None) -> Sweep:
    """Read and validate a recipe's sweep: the base recipe (with ``--set`` overrides; a
    ``sweep.…`` override changes the section), the section, every dimension of the space.
    One ZooError line on any mistake; imports neither TensorFlow nor Ray."""
    from zoo.tasks import get_task

    path = Path(path)
    overrides = list(overrides)
    recipe, section, raw = load_recipe_and_section(path, overrides, "sweep", SweepSection)
    if section is None:
        raise ZooError(f"{path}: sweep: the recipe has no sweep section (see README, "
                       "'Sweeps'); `zoo run` trains it as it is")
    assert isinstance(section, SweepSection)
    if not section.space:
        raise ZooError(f"{path}: sweep.space: name at least one recipe key to search, e.g. "
                       "model.units: {choice: [32, 64]}")
    space = [_dimension(path, str(k), v, section.search) for k, v in section.space.items()]
    base_overrides = [o for o in overrides if not o.strip().startswith("sweep")]
    _check_space(path, base_overrides, space)

    task = get_task(recipe.task)
    metric = section.metric or f"val_{task.main_metric}"
    mode = section.mode or task.direction(metric)
    if mode is None:
        raise ZooError(f"{path}: sweep.mode: say whether {metric!r} is better high or low "
                       f"(max or min); task {recipe.task!r} names the way of "
                       f"{', '.join(task.directions)}")
    if trials is not None and trials < 1:
        raise ZooError("--trials: must be at least 1")
    n = trials or section.trials
    if section.search == "grid":
        size = math.prod(len(d.args) for d in space)
        n = min(n, size) if n else size
    n = n or DEFAULT_TRIALS
    return Sweep(path, base_overrides, recipe, section, space, metric, mode, n,
                 raw=json.loads(json.dumps(raw, default=str)))


# -------------------------------------------------------------------------------- the store


def check_store(address: str | None) -> None:
    """Before anything starts: the store answers and can be written (the probe of `zoo run`,
    :func:`zoo.store.check`), every node of a Ray cluster can reach it, and the cluster's
    address answers.  Each a one-line ZooError, within seconds."""
    from zoo import store, tracking

    s = store.resolve()
    store.check(s, write=True)
    if not address or address in ("local", "auto"):
        return
    if tracking.is_local_store(s.uri):
        raise ZooError(f"--address {address}: the trials on a Ray cluster need a tracking store "
                       f"every node reaches, and {s.uri} is a local file; start "
                       "an MLflow tracking server (README, 'A team store') and set "
                       "MLFLOW_TRACKING_URI=http://HOST:PORT")
    hostport = address.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return   # a form Ray resolves itself
    import socket

    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=store.PROBE_TIMEOUT_S).close()
    except OSError as exc:
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise ZooError(f"--address {address}: the Ray cluster cannot be reached: {why}; start "
                       "it (`ray start --head`), or leave --address and RAY_ADDRESS out to run "
                       "on this machine") from None


def _import_ray():
    try:
        import ray  # noqa: F401
        from ray import tune  # noqa: F401
    except ImportError:
        raise ZooError(f"zoo sweep needs Ray Tune, which is not installed: {EXTRA_HINT}") from None


def _import_optuna():
    try:
        import optuna  # noqa: F401
        from ray.tune.search.optuna import OptunaSearch  # noqa: F401
    except ImportError:
        raise ZooError(f"sweep.search: optuna needs Optuna, which is not installed: "
                       f"{EXTRA_HINT}") from None


# -------------------------------------------------------------------------------- a trial


def _trial(config: dict[str, Any], ctx: dict[str, Any]) -> None:
    """One trial, in a Ray worker: the sampled point as overrides, validated, then an ordinary
    zoo run nested under the sweep's parent run, reporting each epoch to Tune."""
    os.environ.update(ctx["env"])
    if ctx["cwd"] and Path(ctx["cwd"]).is_dir():
        os.chdir(ctx["cwd"])  # the default store and the run checkpoints live beside the driver's
    from ray import tune

    from zoo import tracking

    if ctx["grid"] is not None:
        point = ctx["grid"][config["grid_point"]]
    else:
        point = {k: _plain(config[k]) for k in ctx["keys"]}
    tags = {"zoo.sweep.parent": ctx["parent"], "zoo.sweep.point": json.dumps(point, sort_keys=True),
            "zoo.sweep.trial_id": tune.get_context().get_trial_id() or ""}
    try:
        recipe = load_recipe(ctx["recipe"], [*ctx["overrides"], *point_overrides(point)])
    except ZooError as exc:  # recorded as a failed trial; the sweep goes on
        _record_failure(ctx, point, tags, "invalid", exc)
        raise

    tagged = {"done": False}
    last: dict[str, Any] = {}

    def on_epoch(epoch: int, logs: dict[str, float]) -> None:
        if not tagged["done"]:
            tracking.tag_current_run(tags)
            tagged["done"] = True
        if epoch + 1 >= recipe.train.max_epochs:
            # The last epoch is reported once the run has finished (test split, model logged):
            # a scheduler that stops a trial at its last report would cut that short.
            last["logs"] = {**logs, "epoch": epoch + 1}
        else:
            tune.report({**logs, "epoch": epoch + 1})

    try:
        cpus = max(1, int(ctx["cpus"]))
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(cpus)
            tf.config.threading.set_inter_op_parallelism_threads(min(cpus, 2))
        except RuntimeError:  # already initialised (a reused worker): keep its settings
            pass
        from zoo.engine import run

        result = run(recipe, echo=lambda msg: print(msg, file=sys.stderr), on_epoch=on_epoch,
                     parent_run_id=ctx["parent"], register=False)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        if isinstance(exc, SystemExit):  # Ray ending the trial: its scheduler stopped it
            run_id = tracking.tag_current_run({**tags, "zoo.sweep.outcome": "stopped early"})
            if run_id is not None:
                tracking.end_run_by_id(run_id, "KILLED")
            raise
        failure = {**tags, "zoo.sweep.outcome": "failed",
                   "zoo.sweep.error": f"{type(exc).__name__}: {exc}"[:500]}
        if tracking.tag_current_run(failure) is None:  # it failed before its run began
            _record_failure(ctx, point, tags, "failed", exc)
        raise
    tracking.set_run_tags(result.run_id, {"zoo.sweep.outcome": "finished"})
    if last:
        tune.report({**last["logs"], **{f"test_{k}": v for k, v in result.test_metrics.items()}})


def _record_failure(ctx: dict[str, Any], point: dict[str, Any], tags: dict[str, str],
                    outcome: str, exc: BaseException) -> None:
    """A trial that failed before the engine started its run still gets one, marked FAILED."""
    from zoo import tracking

    try:
        with tracking.TrackedRun(ctx["experiment"], parent_run_id=ctx["parent"]) as run:
            run.set_tags({**tags, "zoo.sweep.outcome": outcome,
                          "zoo.sweep.error": f"{type(exc).__name__}: {exc}"[:500]})
            run.log_params({k: str(v) for k, v in point.items()})
            run.log_text(f"{type(exc).__name__}: {exc}\n", "error.txt")
            raise _Recorded()
    except _Recorded:
        pass


class _Recorded(Exception):
    """Ends a recording run as FAILED."""


# ------------------------------------------------------------------------------- the sweep


@dataclass
class Trial:
    run_id: str
    point: dict[str, Any]
    outcome: str                # finished, stopped early, failed, invalid, killed
    value: float | None         # the sweep metric, last epoch
    epochs: int
    test: dict[str, float]
    model_uri: str | None


def _trials(parent_id: str, metric: str) -> list[Trial]:
    from zoo import tracking

    out = []
    for r in tracking.child_runs(parent_id):
        tags = r["tags"]
        if "zoo.sweep.point" not in tags:
            point: dict[str, Any] = {}
        else:
            point = json.loads(tags["zoo.sweep.point"])
        outcome = tags.get("zoo.sweep.outcome") or {
            "FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}.get(r["status"],
                                                                               "running")
        value = r["metrics"].get(metric)
        test = {k[5:]: v for k, v in r["metrics"].items() if k.startswith("test_")}
        out.append(Trial(r["run_id"], point, outcome,
                         value if value is not None and math.isfinite(value) else None,
                         _epochs(r, metric), test,
                         tags.get("zoo.model_uri") if outcome == "finished" else None))
    return out


def _epochs(run: dict[str, Any], metric: str) -> int:
    """Epochs that reported the sweep metric."""
    from zoo import tracking

    try:
        hist = tracking.client().get_metric_history(run["run_id"], metric)
    except Exception:
        return 0
    return len({m.step for m in hist})


DONE = ("finished", "stopped early", "failed", "invalid")


def _best(trials: list[Trial], mode: str) -> Trial | None:
    candidates = [t for t in trials if t.outcome == "finished" and t.value is not None
                  and t.model_uri]
    if not candidates:
        return None
    return (max if mode == "max" else min)(candidates, key=lambda t: t.value)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def trials_table(sweep: Sweep, trials: list[Trial], best: Trial | None) -> tuple[list[str], list[list[str]]]:
    main = _main_metric(sweep)
    header = ["#", "run", "outcome", *sweep.keys, sweep.metric, "epochs", f"test_{main}"]
    rows = []
    for i, t in enumerate(trials, 1):
        mark = " *" if best is not None and t.run_id == best.run_id else ""
        rows.append([str(i), t.run_id[:8] + mark, t.outcome,
                     *(_fmt(t.point.get(k)) for k in sweep.keys), _fmt(t.value), str(t.epochs),
                     _fmt(t.test.get(main))])
    return header, rows


def _main_metric(sweep: Sweep) -> str:
    from zoo.tasks import get_task

    return get_task(sweep.recipe.task).main_metric


def _table_text(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _plot(sweep: Sweep, trials: list[Trial], out: Path) -> Path:
    """The sweep metric against each searched key, one panel per key."""
    from zoo import plots

    dims = sweep.space
    fig, axes = plots.figure(1, len(dims), figsize=(4 * len(dims), 3.5), squeeze=False)
    scored = [t for t in trials if t.value is not None]
    for ax, dim in zip(axes[0], dims):
        xs, ys, colors = [], [], []
        labels = None
        if dim.kind == "choice":
            labels = [json.dumps(a) if not isinstance(a, str) else a for a in dim.args]
        for t in scored:
            if dim.key not in t.point:
                continue
            v = t.point[dim.key]
            xs.append(dim.args.index(v) if labels is not None and v in dim.args else v)
            ys.append(t.value)
            colors.append("tab:blue" if t.outcome == "finished" else "tab:gray")
        ax.scatter(xs, ys, c=colors)
        if labels is not None:
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels(labels, rotation=30)
        if dim.kind == "loguniform":
            ax.set_xscale("log")
        ax.set_xlabel(dim.key)
        ax.set_ylabel(sweep.metric)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{sweep.metric} per trial (grey: stopped early)")
    path = out / f"sweep_{sweep.metric}.png"
    plots.save(fig, path)
    return path


def _searcher(sweep: Sweep, done: list[Trial], seed: int):
    """The search algorithm and the param space Tune samples from."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if sweep.section.search == "grid":
        return None, None
    if sweep.section.search == "random":
        space = {d.key: _ray_domain(d) for d in sweep.space}
        return BasicVariantGenerator(random_state=seed), space
    import optuna
    from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                      IntDistribution)
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {}
    for d in sweep.space:
        if d.kind == "choice":
            dists[d.key] = CategoricalDistribution(d.args)
        elif d.kind == "uniform":
            dists[d.key] = FloatDistribution(d.args[0], d.args[1])
        elif d.kind == "loguniform":
            dists[d.key] = FloatDistribution(d.args[0], d.args[1], log=True)
        else:
            dists[d.key] = IntDistribution(d.args[0], d.args[1])
    # What earlier runs of this sweep learned (on --resume) goes to the sampler first.
    known = [t for t in done if t.value is not None and set(t.point) == set(sweep.keys)]
    kwargs: dict[str, Any] = {}
    if known:
        kwargs = {"points_to_evaluate": [t.point for t in known],
                  "evaluated_rewards": [t.value for t in known]}
    return OptunaSearch(space=dists, metric=sweep.metric, mode=sweep.mode,
                        sampler=optuna.samplers.TPESampler(seed=seed), **kwargs), None


def _ray_domain(d: Dimension):
    from ray import tune

    if d.kind == "choice":
        return tune.choice(d.args)
    if d.kind == "uniform":
        return tune.uniform(*d.args)
    if d.kind == "loguniform":
        return tune.loguniform(*d.args)
    return tune.randint(d.args[0], d.args[1] + 1)  # inclusive, like Optuna's


class _Progress:
    """One line per ended trial on stderr (Tune's own status tables are turned off)."""

    def __init__(self, echo, total: int, offset: int) -> None:
        self.echo, self.total, self.offset, self.ended = echo, total, offset, 0

    def callback(self):
        from ray.tune import Callback

        progress = self

        class _Cb(Callback):
            def on_trial_complete(self, iteration, trials, trial, **info):
                progress.ended += 1
                it = (trial.last_result or {}).get("training_iteration", 0)
                progress.echo(f"zoo: trial {progress.offset + progress.ended}/{progress.total} "
                              f"ended after {it} epoch(s)")

            def on_trial_error(self, iteration, trials, trial, **info):
                progress.ended += 1
                progress.echo(f"zoo: trial {progress.offset + progress.ended}/{progress.total} "
                              "failed (recorded; the sweep goes on)")

        return _Cb()


def run_sweep(sweep: Sweep, *, address: str | None = None, resume: str | None = None,
              echo=print, out=print) -> dict[str, Any]:
    """Run (or resume) a validated sweep; returns the parent run id, the trials and the best."""
    from zoo import tracking

    address = address or os.environ.get("RAY_ADDRESS") or None
    check_store(address)
    _import_ray()
    if sweep.section.search == "optuna":
        _import_optuna()
    done: list[Trial] = []
    if resume is not None:
        info = tracking.run_info(resume)
        if info is None:
            raise ZooError(f"--resume {resume}: no such run in {tracking.tracking_uri()}")
        if info["tags"].get(tracking.SWEEP_TAG) != "true":
            raise ZooError(f"--resume {resume}: not a sweep's parent run (for a run, use "
                           "`zoo run RECIPE --resume RUN_ID`)")
        if info["tags"].get("zoo.sweep.hash") != sweep.digest():
            raise ZooError(f"--resume {resume}: the sweep was made from a different recipe or "
                           f"sweep section (hash {info['tags'].get('zoo.sweep.hash')}, this one "
                           f"{sweep.digest()})")
        # Trials that were running when the sweep died cannot end themselves: mark them.
        for t in _trials(resume, sweep.metric):
            if t.outcome == "running":
                tracking.end_run_by_id(t.run_id, "KILLED")
                tracking.set_run_tags(t.run_id, {"zoo.sweep.outcome": "killed"})
        done = [t for t in _trials(resume, sweep.metric) if t.outcome in DONE]

    remaining_grid = None
    if sweep.section.search == "grid":
        done_points = {json.dumps(t.point, sort_keys=True) for t in done}
        remaining_grid = [p for p in sweep.grid()[:sweep.trials]
                          if json.dumps(p, sort_keys=True) not in done_points]
        todo = len(remaining_grid)
    else:
        todo = max(0, sweep.trials - len(done))

    started = time.time()
    with tracking.TrackedRun(sweep.recipe.experiment, resume=resume) as parent:
        if resume is None:
            parent.set_tags({tracking.SWEEP_TAG: "true", "zoo.sweep.hash": sweep.digest(),
                             "zoo.task": sweep.recipe.task, "zoo.recipe_path": str(sweep.path),
                             "zoo.sweep.metric": sweep.metric, "zoo.sweep.mode": sweep.mode,
                             "mlflow.runName": f"sweep-{sweep.path.stem}"})
            parent.log_params({f"sweep.{k}": json.dumps(v) if not isinstance(v, str) else v
                               for k, v in sweep.section.model_dump(mode="json",
                                                                    exclude={"space"}).items()}
                              | {"sweep.trials": str(sweep.trials), "sweep.metric": sweep.metric,
                                 "sweep.mode": sweep.mode}
                              | {f"space.{d.key}": d.describe() for d in sweep.space})
            parent.log_text(yaml.safe_dump({"sweep": sweep.raw}, sort_keys=False), "sweep.yaml")
            parent.log_text(sweep.recipe.to_yaml(), "recipe.yaml")
        echo(f"zoo: sweep {parent.run_id} (experiment {parent.experiment_id}): "
             f"{sweep.trials} trial(s) of {sweep.section.search} search over "
             f"{', '.join(sweep.keys)}, {sweep.metric} ({sweep.mode})"
             + (f"; {len(done)} done before, {todo} to run" if resume else ""))
        if todo > 0:
            try:
                _tune(sweep, parent.run_id, sweep.recipe.experiment, address,
                      done, remaining_grid, todo, echo)
            except KeyboardInterrupt:
                for t in tracking.child_runs(parent.run_id):  # cut off: their workers are gone
                    if t["status"] == "RUNNING":
                        tracking.end_run_by_id(t["run_id"], "KILLED")
                        tracking.set_run_tags(t["run_id"], {"zoo.sweep.outcome": "killed"})
                echo(f"zoo: sweep {parent.run_id} interrupted; continue it with "
                     f"`zoo sweep {sweep.path} --resume {parent.run_id}`")
                raise
        trials = _trials(parent.run_id, sweep.metric)
        result = _conclude(sweep, parent, trials, echo, out, time.time() - started)
    return result


def _tune(sweep: Sweep, parent_id: str, experiment: str, address: str | None, done: list[Trial],
          remaining_grid: list[dict[str, Any]] | None, todo: int, echo) -> None:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from zoo import tracking

    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")   # Ctrl+C ends the sweep, KILLED
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")   # the legacy reporter honours verbose=0
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    res = sweep.section.resources_per_trial
    seed = sweep.section.seed if sweep.section.seed is not None else sweep.recipe.train.seed
    env = {k: v for k, v in os.environ.items()
           if k.startswith(("ZOO_", "MLFLOW_", "TF_CPP_")) or k == "CUDA_VISIBLE_DEVICES"}
    env["MLFLOW_TRACKING_URI"] = tracking.tracking_uri()
    local = not address or address == "local"
    ctx = {"env": env, "cwd": str(Path.cwd()) if local else None,
           "recipe": str(Path(sweep.path).resolve()),
           "overrides": [*sweep.overrides, *([] if any(k == "train.verbose" for k in sweep.keys)
                                              else ["train.verbose=0"])],
           "keys": sweep.keys, "grid": remaining_grid, "parent": parent_id,
           "experiment": experiment, "cpus": res.cpu}
    if local:
        # Workers import zoo from where this process did (a checkout on PYTHONPATH included).
        root = str(Path(__file__).resolve().parent.parent)
        pythonpath = os.pathsep.join(p for p in [root, os.environ.get("PYTHONPATH", "")] if p)
        ray.init(address="local", num_cpus=os.cpu_count() or 1,
                 num_gpus=None, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
                 configure_logging=True, logging_level="ERROR")
    else:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    import logging

    for name in ("ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # the trials' fate is zoo's to tell
    try:
        searcher, space = _searcher(sweep, done, seed)
        if remaining_grid is not None:
            space = {"grid_point": tune.grid_search(list(range(len(remaining_grid))))}
            num_samples = 1
        else:
            num_samples = todo
        scheduler = (ASHAScheduler(time_attr="training_iteration", grace_period=sweep.section.grace_period,
                                   max_t=max(sweep.recipe.train.max_epochs, 1), reduction_factor=2)
                     if sweep.section.scheduler == "asha" else FIFOScheduler())
        trainable = tune.with_resources(tune.with_parameters(_trial, ctx=ctx),
                                        {"cpu": res.cpu, "gpu": res.gpu})
        storage = tempfile.mkdtemp(prefix="zoo-sweep-")
        tuner = tune.Tuner(
            trainable, param_space=space or {},
            tune_config=tune.TuneConfig(metric=sweep.metric, mode=sweep.mode,
                                        search_alg=searcher, scheduler=scheduler,
                                        num_samples=num_samples,
                                        max_concurrent_trials=sweep.section.max_concurrent),
            run_config=tune.RunConfig(name=f"zoo-sweep-{parent_id}", storage_path=storage,
                                      verbose=0,
                                      callbacks=[_Progress(echo, len(done) + todo,
                                                           len(done)).callback()]))
        import contextlib

        with contextlib.redirect_stdout(sys.stderr):   # stdout is zoo's table
            grid = tuner.fit()
        # Ray knows how each trial ended; a trial that the scheduler stopped could not end its
        # own MLflow run (left RUNNING, or FAILED by the interrupted training thread).
        ended = {(r.metrics or {}).get("trial_id"): r.error for r in grid if r.metrics}
        for t in tracking.child_runs(parent_id):
            if t["status"] == "FINISHED":
                continue
            trial_id = t["tags"].get("zoo.sweep.trial_id")
            outcome = t["tags"].get("zoo.sweep.outcome")
            if (outcome == "stopped early" or (trial_id in ended and ended[trial_id] is None)
                    or t["tags"].get("zoo.sweep.error", "").startswith("SystemExit")):
                tracking.end_run_by_id(t["run_id"], "KILLED")
                tracking.set_run_tags(t["run_id"], {"zoo.sweep.outcome": "stopped early"})
            elif t["status"] == "RUNNING" or outcome is None:  # its worker died without a word
                tracking.end_run_by_id(t["run_id"], "FAILED")
                tracking.set_run_tags(t["run_id"], {"zoo.sweep.outcome": "failed"})
        import shutil

        shutil.rmtree(storage, ignore_errors=True)
    finally:
        ray.shutdown()


def _conclude(sweep: Sweep, parent, trials: list[Trial], echo, out, wall: float) -> dict[str, Any]:
    """Log the table, plot and best trial on the parent; register (and promote) the best."""
    from zoo import tracking

    best = _best(trials, sweep.mode)
    header, rows = trials_table(sweep, trials, best)
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["run_id", "outcome", *sweep.keys, sweep.metric, "epochs",
                    *sorted({k for t in trials for k in t.test})])
        tests = sorted({k for t in trials for k in t.test})
        for t in trials:
            w.writerow([t.run_id, t.outcome, *(json.dumps(t.point.get(k)) for k in sweep.keys),
                        "" if t.value is None else t.value, t.epochs,
                        *(t.test.get(k, "") for k in tests)])
        parent.log_text(buf.getvalue(), "sweep/trials.csv")
        parent.log_text(_table_text(header, rows) + "\n", "sweep/trials.txt")
        if any(t.value is not None for t in trials):
            parent.log_artifact(_plot(sweep, trials, tmpdir), "plots")
    counts = {o: sum(t.outcome == o for t in trials) for o in DONE + ("killed",)}
    parent.log_metrics({f"trials_{o.replace(' ', '_')}": float(n) for o, n in counts.items()})
    parent.log_metrics({"trials": float(len(trials)), "sweep_wall_s": wall})
    result: dict[str, Any] = {"run_id": parent.run_id, "experiment_id": parent.experiment_id,
                              "trials": trials, "best": best, "version": None,
                              "registered_name": None, "promoted": None}
    out(_table_text(header, rows))
    if best is None:
        parent.set_tags({"zoo.sweep.best_run_id": ""})
        echo("zoo: no trial finished: nothing to register")
        return result
    parent.log_metrics({f"best_{sweep.metric}": best.value,
                        **{f"best_test_{k}": v for k, v in best.test.items()}})
    parent.set_tags({"zoo.sweep.best_run_id": best.run_id,
                     **{f"zoo.sweep.best.{k}": json.dumps(v) for k, v in best.point.items()}})
    from zoo.publish import Logged, publish

    to_register = [t for t in trials if t.model_uri] if sweep.section.register == "all" else [best]
    for t in to_register:
        if tracking.run_info(t.run_id)["tags"].get("zoo.registered_version"):
            continue  # registered by an earlier run of this sweep (--resume)
        trained = load_recipe(sweep.path, [*sweep.overrides, *point_overrides(t.point)])
        published = publish(Logged.from_run(t.run_id, trained), promote=t is best,
                            extra_tags={"zoo.sweep.parent": parent.run_id}, echo=echo)
        if t is best:
            result.update(version=published.version, registered_name=published.registered_name,
                          promoted=published.promoted)
    if result["version"] is None:  # registered before (--resume): report that version
        reg = tracking.run_info(best.run_id)["tags"].get("zoo.registered_version", "")
        if "/" in reg:
            result["registered_name"], result["version"] = reg.rsplit("/", 1)
    parent.set_tags({"zoo.sweep.best_version": f"{result['registered_name']}/{result['version']}"})
    point = ", ".join(f"{k}={_fmt(v)}" for k, v in best.point.items())
    echo(f"zoo: best trial {best.run_id}: {sweep.metric}={best.value:.4f} ({point}); "
         f"registered {result['registered_name']} version {result['version']}")
    return result
