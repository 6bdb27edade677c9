"""Publishing: the one way a trained model becomes a registered version.

Training is two phases.  *Train and log* (:func:`zoo.engine.train_and_log`) fits, evaluates and
logs one run, and returns a :class:`Logged`: the run, its test metrics, the logged model and what
its model card needs.  *Publish* (:func:`publish`, here) registers that model with its tags,
writes the model card on the run and on the version, and promotes the version to champion under
the store's lock, never past the :func:`baseline_guard`.  ``zoo run`` is one of each; a sweep is
N trainings then one publish of its best trial (or of every trial, ``register: all``), through
this same function.  Nothing here imports TensorFlow.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

from zoo.card import model_card
from zoo.errors import ZooError

ALPHA = 0.01                 # the guard's one-sided significance level
Z_ALPHA = NormalDist().inv_cdf(1 - ALPHA)  # the standard normal's upper ALPHA point (2.326)
CARD_INPUTS = "model_card.json"   # the run artifact holding what the card is written from


@dataclass
class RunResult:
    run_id: str
    experiment_id: str
    test_metrics: dict[str, float]
    registered_name: str
    version: str | None            # None when the run was not registered
    epochs_run: int
    promoted: bool | None = None
    model_uri: str | None = None   # the logged model (MLflow URI)
    store: str = ""                # the store's URI
    promotion: str = ""            # why the champion alias moved or not
    task: str = ""
    main_metric: str = ""
    generates: bool = False
    example: str = ""              # an input to try the model with

    def summary(self) -> str:
        metrics = ", ".join(f"test_{k}={v:.4f}" for k, v in sorted(self.test_metrics.items()))
        champion = " (champion)" if self.promoted else ""
        where = (f"registered {self.registered_name} version {self.version}{champion}"
                 if self.version else f"logged {self.model_uri} (not registered)")
        return f"run {self.run_id} (experiment {self.experiment_id}): {metrics}\n{where}"


# --------------------------------------------------------------------------- the guard


@dataclass(frozen=True)
class Guard:
    """Whether a model beats its task's trivial baseline beyond the test split's noise, why,
    and the numbers compared (recorded on the version as ``zoo.guard.*`` tags)."""

    passed: bool
    reason: str
    numbers: dict[str, str] = field(default_factory=dict)

    def tags(self) -> dict[str, str]:
        return {"zoo.guard.passed": str(self.passed).lower(), "zoo.guard.reason": self.reason,
                **{f"zoo.guard.{k}": v for k, v in self.numbers.items()}}


def binomial_p_value(successes: int, n: int, p0: float) -> float:
    """P(X >= successes) for X ~ Binomial(n, p0): the one-sided p-value of ``successes`` out
    of ``n`` against a success rate of ``p0`` (exact, summed in log space)."""
    if successes <= 0:
        return 1.0
    if successes > n or p0 <= 0.0:
        return 0.0
    if p0 >= 1.0:
        return 1.0
    lp, lq = math.log(p0), math.log1p(-p0)
    logs = [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * lp + (n - k) * lq
            for k in range(successes, n + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def _g(v: float) -> str:
    return f"{v:.6g}"


def baseline_guard(task_cls, metrics: dict[str, float], n: int) -> Guard | None:
    """Whether a model with test ``metrics`` (bare names, with the task's ``baseline_*``) over
    ``n`` scored test items may become champion; None for a task without a baseline.

    The rule: the model must beat the trivial baseline on the task's loss (``loss`` below
    ``baseline_loss``) *and* on its main metric, and the main metric's margin must lie beyond
    the test split's sampling noise, tested one-sided at ALPHA = 1 %:

    * a proportion (accuracy): an exact binomial test: the chance that a predictor exactly as
      good as the baseline (success rate ``baseline_accuracy``) gets at least the model's
      ``round(accuracy * n)`` of ``n`` items right must be below 1 %;
    * a metric that is a monotone function of the loss (bits per character, perplexity;
      ``Task.main_metric_from_loss``): the margin in nats per item, ``baseline_loss - loss``,
      must exceed ``Z * sqrt(loss**2 + baseline_loss**2) / sqrt(n)``, Z = 2.326 the normal's
      1 % point.  That is a one-sided z-test on the mean per-item loss difference, with the
      difference's standard deviation estimated from the two means alone (the per-item losses
      are not kept): per-item cross-entropies are non-negative and skewed, spreading about as
      much as their mean (an exponential's spread is exactly its mean), and two independent
      such differ with spread ``sqrt(loss**2 + baseline_loss**2)``.  A model's and the
      baseline's losses are positively correlated (the same words are hard for both), which
      narrows the real spread, so the estimate errs on the side of refusing.  Losses reduced
      over all positions while only ``n`` are scored (padding) scale margin and threshold
      alike, so the rule holds as is.
    """
    main = task_cls.main_metric
    base = metrics.get(f"baseline_{main}")
    if base is None:
        return None
    up = task_cls.greater_is_better
    value = metrics.get(main)
    loss, base_loss = metrics.get("loss"), metrics.get("baseline_loss")
    numbers = {"metric": f"test_{main}", "value": "", "baseline": _g(base), "n": str(n)}
    failures: list[str] = []
    main_beats = False
    if value is None or not math.isfinite(value):
        failures.append(f"test_{main} is {value}")
    else:
        numbers["value"] = _g(value)
        main_beats = value > base if up else value < base
        if not main_beats:
            failures.append(f"test_{main} {value:.6g} does not beat the trivial baseline {base:.6g}")
    if loss is not None and base_loss is not None:
        numbers.update(loss=_g(loss), baseline_loss=_g(base_loss))
        if not (math.isfinite(loss) and loss < base_loss):
            failures.append(f"test_loss {loss:.6g} does not beat the trivial baseline's "
                            f"{base_loss:.6g}")
    if task_cls.main_metric_from_loss:
        numbers["rule"] = "loss margin > 2.326 sqrt(loss^2 + baseline_loss^2) / sqrt(n)"
        if loss is not None and base_loss is not None and math.isfinite(loss) and n > 0:
            margin = base_loss - loss
            threshold = Z_ALPHA * math.hypot(loss, base_loss) / math.sqrt(n)
            numbers.update(margin=_g(margin), threshold=_g(threshold))
            if main_beats and margin <= threshold:
                failures.append(f"test_loss is below the trivial baseline's {base_loss:.6g} by "
                                f"{margin:.3g} nats, within the test split's noise "
                                f"({threshold:.3g} over {n} items, 1 %)")
    else:
        numbers["rule"] = "one-sided exact binomial test at 1 %"
        if value is not None and math.isfinite(value) and n > 0:
            # the proportion that counts: right answers (or, for an error rate, wrong ones)
            rate, p0 = (value, base) if up else (1 - value, 1 - base)
            p = binomial_p_value(round(rate * n), n, p0)
            numbers["p_value"] = f"{p:.3g}"
            if main_beats and p >= ALPHA:
                failures.append(f"test_{main} {value:.4g} against the trivial baseline's "
                                f"{base:.4g} is within the test split's noise (one-sided "
                                f"binomial p = {p:.2g} over {n} items, needs < {ALPHA:g})")
    if n <= 0:
        failures.append("the test split scores no items")
    if failures:
        return Guard(False, "not better than the trivial baseline: " + "; ".join(failures),
                     numbers)
    beyond = (f"binomial p = {numbers['p_value']}" if "p_value" in numbers
              else f"margin {numbers.get('margin')} > {numbers.get('threshold')} nats")
    return Guard(True, f"beats the trivial baseline: test_{main} {value:.6g} against "
                       f"{base:.6g}, {beyond} over {n} items"
                       + (f"; test_loss {loss:.6g} against {base_loss:.6g}"
                          if loss is not None and base_loss is not None else ""), numbers)


# ----------------------------------------------------------------------- train and log's result


@dataclass
class Logged:
    """What train-and-log hands to publish: the run, its test metrics, the logged model, the
    tags its version gets, and what its model card is written from."""

    recipe: Any                    # zoo.recipe.Recipe
    run_id: str
    experiment_id: str
    store: str
    model_uri: str
    test_metrics: dict[str, float]
    test_items: int                # scored test items: the guard's n
    tags: dict[str, str]           # the run's zoo tags, given to the version too
    bundle_digest: str
    card: dict[str, Any]           # model_card()'s inputs but name, version and guard
    fast_dev_run: bool = False
    epochs_run: int = 0
    example: str = ""

    @property
    def task(self):
        from zoo.tasks import get_task

        return get_task(self.recipe.task)

    def guard(self) -> Guard | None:
        return baseline_guard(self.task, self.test_metrics, self.test_items)

    def card_text(self, version: str | None = None) -> str:
        return model_card(name=self.recipe.registered_name, version=version, guard=self.guard(),
                          **self.card)

    def result(self, version: str | None = None, decision: dict[str, Any] | None = None) -> RunResult:
        task = self.task
        return RunResult(self.run_id, self.experiment_id, self.test_metrics,
                         self.recipe.registered_name, version, self.epochs_run,
                         None if decision is None else decision["promoted"], self.model_uri,
                         self.store, "" if decision is None else decision["reason"],
                         self.recipe.task, f"test_{task.main_metric}", task.generates,
                         self.example)

    @classmethod
    def from_run(cls, run_id: str, recipe) -> "Logged":
        """The Logged of a finished run, read back from the store (a sweep's trial, trained in
        another process, perhaps before a ``--resume``).  ``recipe`` is the one it trained."""
        from zoo import tracking

        info = tracking.run_info(run_id)
        if info is None:
            raise ZooError(f"run {run_id} is not in the store {tracking.tracking_uri()}")
        tags = info["tags"]
        try:
            card = json.loads(tracking.load_run_text(run_id, CARD_INPUTS))
            model_uri, digest = tags["zoo.model_uri"], tags["zoo.bundle_digest"]
        except (KeyError, ValueError, OSError) as exc:
            raise ZooError(f"run {run_id} has no complete logged model to publish "
                           f"({type(exc).__name__}: {exc})") from None
        return cls(recipe, run_id, info["experiment_id"], tracking.tracking_uri(), model_uri,
                   {k[5:]: v for k, v in info["metrics"].items() if k.startswith("test_")},
                   int(tags.get("zoo.test_items", "0")),
                   {k: tags[k] for k in tracking.RUN_TAG_KEYS if k in tags}, digest, card,
                   tags.get("zoo.fast_dev_run") == "true")


# ------------------------------------------------------------------------------- publish


def publish(logged: Logged, *, promote: bool = True, extra_tags: dict[str, str] | None = None,
            echo=print) -> RunResult:
    """Register the logged model, write its card on the run and the version, and (unless
    ``promote`` is False) apply ``track.promote`` under the store's lock, never crowning a
    version that fails the baseline guard.  The guard's decision and numbers are tags of the
    version; the promotion's, of the run."""
    from zoo import tracking

    recipe, task = logged.recipe, logged.task
    name = recipe.registered_name
    metric = f"test_{task.main_metric}"
    guard = logged.guard()
    tags = {**logged.tags, **{f"test_{k}": f"{v:.6g}" for k, v in logged.test_metrics.items()},
            "zoo.run_id": logged.run_id, "zoo.main_metric": metric,
            "zoo.bundle_digest": logged.bundle_digest, **(guard.tags() if guard else {}),
            **(extra_tags or {})}
    echo(f"zoo: registering {name}")
    version = tracking.register(logged.model_uri, name, tags)
    tracking.set_run_tags(logged.run_id, {"zoo.registered_version": f"{name}/{version}"})
    decision = None
    if promote:
        decision = tracking.promote_run(logged.run_id, name, version, metric=metric,
                                        greater_is_better=task.greater_is_better,
                                        policy=recipe.track.promote,
                                        fast_dev_run=logged.fast_dev_run, guard=guard)
        echo(f"zoo: {'promoted to champion' if decision['promoted'] else 'not promoted'}: "
             f"{decision['reason']}")
    card = logged.card_text(version)
    tracking.describe_run(logged.run_id, card)
    tracking.describe_version(name, version, card)
    return logged.result(version, decision)
