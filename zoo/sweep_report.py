"""What a sweep tells: one line per ended trial as it goes, then the table of trials (on stdout
and, with a CSV and a plot of the metric against each searched key, on the parent run)."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path
from typing import Any

from zoo.sweep_trial import DONE, Trial



def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def trials_table(sweep, trials: list[Trial], best: Trial | None) -> tuple[list[str], list[list[str]]]:
    main = _main_metric(sweep)
    header = ["#", "run", "outcome", *sweep.keys, sweep.metric, "epochs", f"test_{main}"]
    rows = []
    for i, t in enumerate(trials, 1):
        mark = " *" if best is not None and t.run_id == best.run_id else ""
        rows.append([str(i), t.run_id[:8] + mark, t.outcome,
                     *(fmt(t.point.get(k)) for k in sweep.keys), fmt(t.value), str(t.epochs),
                     fmt(t.test.get(main))])
    return header, rows


def _main_metric(sweep) -> str:
    from zoo.tasks import get_task

    return get_task(sweep.recipe.task).main_metric


def table_text(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def plot(sweep, trials: list[Trial], out: Path) -> Path:
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


class Progress:
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


def log_report(sweep, parent, trials: list[Trial], best: Trial | None, wall: float) -> str:
    """Log the trials' table (CSV and text), the plot and the counts on the sweep's parent run;
    returns the table's text."""
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
        parent.log_text(table_text(header, rows) + "\n", "sweep/trials.txt")
        if any(t.value is not None for t in trials):
            parent.log_artifact(plot(sweep, trials, tmpdir), "plots")
    counts = {o: sum(t.outcome == o for t in trials) for o in DONE + ("killed",)}
    parent.log_metrics({f"trials_{o.replace(' ', '_')}": float(n) for o, n in counts.items()})
    parent.log_metrics({"trials": float(len(trials)), "sweep_wall_s": wall})
    return table_text(header, rows)
