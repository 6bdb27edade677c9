"""The model card: a short Markdown page that explains a trained model in the MLflow UI (on its
run and on its registered version): task, data, builder and hyperparameters, test metrics
against the trivial baseline, what it produces, and how to use it."""

from __future__ import annotations

from typing import Any


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def model_card(*, name: str, version: str | None, task: str, main_metric: str,
               greater_is_better: bool, data_info: dict[str, Any], data_hash: str,
               model: dict[str, Any], metrics: dict[str, float], examples: list[str],
               generates: bool, recipe_path: str, guard=None) -> str:
    """The card's Markdown.  ``guard`` is the baseline guard's decision
    (:class:`zoo.publish.Guard`): the card says "not better than the trivial baseline" where
    the model is not, beyond the test split's noise."""
    hp = ", ".join(f"{k}={_value(v)}" for k, v in model.items() if k != "name")
    rows = [f"| {k} | {_value(v)} |" for k, v in sorted(metrics.items())
            if not k.startswith("baseline_")]
    main = metrics.get(main_metric)
    base = metrics.get(f"baseline_{main_metric}")
    vs = ""
    if main is not None and base is not None:
        verdict = ("" if guard is None else
                   "better than the trivial baseline" if guard.passed else
                   "**not better than the trivial baseline**")
        vs = (f"**{main_metric} {main:.4g}** against the trivial baseline's {base:.4g} "
              f"({'higher' if greater_is_better else 'lower'} is better): {verdict}"
              + (f" ({guard.reason.split(': ', 1)[-1]})." if guard is not None else "."))
    data = ", ".join(f"{k}: {_value(v)}" for k, v in data_info.items())
    spec = f"{name}/{version}" if version else name
    lines = [
        f"# {name}" + (f" version {version}" if version else ""),
        "",
        f"A zoo **{task}** model: builder `{model.get('name')}` ({hp}), trained from "
        f"`{recipe_path}`.",
        "",
        "## Data",
        f"{data} (data digest `{data_hash}`).",
        "",
        "## Test metrics",
        vs,
        "",
        "| metric | value |",
        "|---|---|",
        *rows,
        "",
        "## What it produces" if generates else "## Example predictions",
        "",
        *[f"    {line}" for ex in examples for line in (ex.splitlines() or [""]) + [""]],
        "## How to use it",
        "",
        f"    import zoo; m = zoo.load(\"{name}@champion\")   # or \"{spec}\"",
        f"    zoo {'generate' if generates else 'predict'} {spec}"
        + ("" if generates else " \"your input\""),
        f"    mlflow.pyfunc.load_model(\"models:/{spec}\")",
    ]
    return "\n".join(lines) + "\n"
