"""A sweep's trials: the function each Ray worker runs (an ordinary zoo run nested under the
sweep's parent run, reporting each epoch to Tune), and the trials read back from the store."""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.errors import ZooError
from zoo.recipe import load_recipe
from zoo.sweep_space import plain, point_overrides

DONE = ("finished", "stopped early", "failed", "invalid")


def trial(config: dict[str, Any], ctx: dict[str, Any]) -> None:
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
        point = {k: plain(config[k]) for k in ctx["keys"]}
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
        from zoo.engine import train_and_log

        result = train_and_log(recipe, echo=lambda msg: print(msg, file=sys.stderr),
                               on_epoch=on_epoch, parent_run_id=ctx["parent"])
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


@dataclass
class Trial:
    run_id: str
    point: dict[str, Any]
    outcome: str                # finished, stopped early, failed, invalid, killed
    value: float | None         # the sweep metric, last epoch
    epochs: int
    test: dict[str, float]
    model_uri: str | None


def read_trials(parent_id: str, metric: str) -> list[Trial]:
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


def best_trial(trials: list[Trial], mode: str) -> Trial | None:
    candidates = [t for t in trials if t.outcome == "finished" and t.value is not None
                  and t.model_uri]
    if not candidates:
        return None
    return (max if mode == "max" else min)(candidates, key=lambda t: t.value)
