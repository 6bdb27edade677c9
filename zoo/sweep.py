"""`zoo sweep`: hyperparameter search on Ray Tune, every trial an ordinary zoo run.

A recipe's ``sweep:`` section names a search space over any recipe keys.  Each trial applies its
sampled point as ``--set`` overrides, is validated like any recipe, and trains through the one
engine (:func:`zoo.engine.run`) in a Ray worker, reporting every epoch to Tune (so ASHA can stop
it early).  MLflow holds the whole sweep: one parent run, one nested run per trial; the store,
not Ray, is what ``--resume`` reads.  The best trial's model is registered and promoted like a
run's, through the one publisher (:mod:`zoo.publish`).  Nothing here imports TensorFlow or Ray
before the recipe and the sweep are validated.

Here: the ``sweep:`` schema, loading, the store check, running on Tune, concluding.  The search
space and its searcher are in :mod:`zoo.sweep_space`, what a trial runs and how trials are read
back in :mod:`zoo.sweep_trial`, the table, plot and progress lines in :mod:`zoo.sweep_report`.
"""

from __future__ import annotations

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
from pydantic import Field

from zoo.errors import ZooError
from zoo.recipe import Recipe, load_recipe, load_recipe_and_section
from zoo.schema import Strict
from zoo.sweep_report import Progress, fmt, log_report
from zoo.sweep_space import Dimension, check_space, dimension, point_overrides, searcher
from zoo.sweep_trial import DONE, Trial, best_trial, read_trials, trial

EXTRA_HINT = 'pip install -e ".[sweep]"'
DEFAULT_TRIALS = 8


class Resources(Strict):
    """``sweep.resources_per_trial``: what Ray reserves for each trial."""

    cpu: float = Field(1, gt=0, description=(
        "CPUs Ray reserves for each trial; TensorFlow in the trial uses this many threads. With "
        "max_concurrent, it decides how many trials fit on the machine or cluster at once."))
    gpu: float = Field(0, ge=0, description=(
        "GPUs Ray reserves for each trial (a fraction shares one GPU between trials)."))


import warnings as _warnings

_warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class SweepSection(Strict):
    """The ``sweep:`` section of a recipe."""

    metric: str | None = Field(None, description=(
        "The metric that ranks trials, as logged each epoch (e.g. val_accuracy, val_loss); "
        "null: val_ and the task's main metric."))
    mode: Literal["max", "min"] | None = Field(None, description=(
        "Whether the metric is better high (max) or low (min); null: the direction the task "
        "declares for that metric (min for losses, perplexity and bits per character, max for "
        "accuracy)."))
    trials: int | None = Field(None, ge=1, description=(
        "How many trials (--trials overrides it); null: for search: grid, every point of the "
        "grid once, else 8. With grid and a number, at most that many points."))
    max_concurrent: int = Field(2, ge=1, description=(
        "Trials running at once (each also needs resources_per_trial free). May change on "
        "--resume."))
    search: Literal["optuna", "random", "grid"] = Field("optuna", description=(
        "How points are chosen: optuna (Optuna's TPE sampler, which learns from finished "
        "trials), random, or grid (every combination; only {choice: [...]} dimensions)."))
    scheduler: Literal["asha", "none"] = Field("asha", description=(
        "asha: Ray Tune's ASHA stops trials that trail the others, judged on their per-epoch "
        "reports of the metric (their runs end KILLED, tagged as stopped early); none: every "
        "trial trains to its end. Only trials of several epochs can be stopped."))
    grace_period: int = Field(1, ge=1, description=(
        "ASHA: epochs every trial runs before it can be stopped."))
    resources_per_trial: Resources = Field(Resources(), description="What each trial reserves.")
    register: Literal["best", "all"] = Field("best", description=(
        "best: register the best finished trial's model (by the metric at its last epoch) "
        "under track.registered_name, promoted as track.promote says; all: every finished "
        "trial's model."))
    seed: int | None = Field(None, ge=0, description=(
        "The searcher's seed (null: train.seed). Each trial's training uses train.seed, "
        "unless the space searches it."))
    space: dict[str, Any] = Field(description=(
        "What is searched: recipe keys (dotted, e.g. model.units, train.optimizer."
        "learning_rate) mapped to a domain: {choice: [A, B, ...]}, {uniform: [LOW, HIGH]}, "
        "{loguniform: [LOW, HIGH]} or {randint: [LOW, HIGH]} (inclusive). Every choice and "
        "each end of a range is validated as a recipe before anything runs."))


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
    space = [dimension(path, str(k), v, section.search) for k, v in section.space.items()]
    base_overrides = [o for o in overrides if not o.strip().startswith("sweep")]
    check_space(path, base_overrides, space)

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


def check_store(address: str | None) -> None:
    """Before anything starts: the store answers and can be written (the probe of `zoo run`,
    :func:`zoo.store.check`), every node of a Ray cluster can reach it, and the cluster's
    address answers.  Each a one-line ZooError, within seconds."""
    from zoo import ray_cluster, store, tracking

    s = store.resolve()
    store.check(s, write=True)
    if not address or address in ("local", "auto"):
        return
    if tracking.is_local_store(s.uri):
        raise ZooError(f"--address {address}: the trials on a Ray cluster need a tracking store "
                       f"every node reaches, and {s.uri} is a local file; start "
                       "an MLflow tracking server (README, 'A team store') and set "
                       "MLFLOW_TRACKING_URI=http://HOST:PORT")
    ray_cluster.check_address(address)


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


# ------------------------------------------------------------------------------- the sweep


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
        for t in read_trials(resume, sweep.metric):
            if t.outcome == "running":
                tracking.end_run_by_id(t.run_id, "KILLED")
                tracking.set_run_tags(t.run_id, {"zoo.sweep.outcome": "killed"})
        done = [t for t in read_trials(resume, sweep.metric) if t.outcome in DONE]

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
        trials = read_trials(parent.run_id, sweep.metric)
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
    from zoo import ray_cluster

    env = {**ray_cluster.inherited_env(), "MLFLOW_TRACKING_URI": tracking.tracking_uri()}
    local = not address or address == "local"
    ctx = {"env": env, "cwd": str(Path.cwd()) if local else None,
           "recipe": str(Path(sweep.path).resolve()),
           "overrides": [*sweep.overrides, *([] if any(k == "train.verbose" for k in sweep.keys)
                                              else ["train.verbose=0"])],
           "keys": sweep.keys, "grid": remaining_grid, "parent": parent_id,
           "experiment": experiment, "cpus": res.cpu}
    ray_cluster.init(address, env)
    import logging

    for name in ("ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # the trials' fate is zoo's to tell
    try:
        search_alg, space = searcher(sweep, done, seed)
        if remaining_grid is not None:
            space = {"grid_point": tune.grid_search(list(range(len(remaining_grid))))}
            num_samples = 1
        else:
            num_samples = todo
        scheduler = (ASHAScheduler(time_attr="training_iteration", grace_period=sweep.section.grace_period,
                                   max_t=max(sweep.recipe.train.max_epochs, 1), reduction_factor=2)
                     if sweep.section.scheduler == "asha" else FIFOScheduler())
        trainable = tune.with_resources(tune.with_parameters(trial, ctx=ctx),
                                        {"cpu": res.cpu, "gpu": res.gpu})
        storage = tempfile.mkdtemp(prefix="zoo-sweep-")
        tuner = tune.Tuner(
            trainable, param_space=space or {},
            tune_config=tune.TuneConfig(metric=sweep.metric, mode=sweep.mode,
                                        search_alg=search_alg, scheduler=scheduler,
                                        num_samples=num_samples,
                                        max_concurrent_trials=sweep.section.max_concurrent),
            run_config=tune.RunConfig(name=f"zoo-sweep-{parent_id}", storage_path=storage,
                                      verbose=0,
                                      callbacks=[Progress(echo, len(done) + todo,
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

    best = best_trial(trials, sweep.mode)
    table = log_report(sweep, parent, trials, best, wall)
    result: dict[str, Any] = {"run_id": parent.run_id, "experiment_id": parent.experiment_id,
                              "trials": trials, "best": best, "version": None,
                              "registered_name": None, "promoted": None}
    out(table)
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
    point = ", ".join(f"{k}={fmt(v)}" for k, v in best.point.items())
    echo(f"zoo: best trial {best.run_id}: {sweep.metric}={best.value:.4f} ({point}); "
         f"registered {result['registered_name']} version {result['version']}")
    return result
