"""A sweep's search space: its dimensions as the recipe writes them, validated before anything
runs, and the searcher that samples them on Ray Tune (Optuna's TPE, random, or a grid)."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.errors import ZooError, did_you_mean
from zoo.recipe import SECTIONS, load_recipe


DOMAINS = ("choice", "uniform", "loguniform", "randint")


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


def plain(value: Any) -> Any:
    """A Python scalar (Ray and Optuna may hand back NumPy ones)."""
    return value.item() if hasattr(value, "item") else value


def point_overrides(point: dict[str, Any]) -> list[str]:
    """A sampled point as ``--set`` overrides (values written as JSON, which YAML reads back)."""
    return [f"{k}={json.dumps(plain(v))}" for k, v in point.items()]


def dimension(path: Path, key: str, spec: Any, search: str) -> Dimension:
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


def check_space(path: Path, overrides: list[str], space: list[Dimension]) -> None:
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


def searcher(sweep, done: list, seed: int):
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
