"""The one registry of model builders.

A builder is a function that returns the recurrent body of a model (a list of Keras layers).
Each declares its hyperparameters as a typed schema (a pydantic model: type, default, bounds,
allowed names, a short description each), recorded with the builder when it registers, so
listing, describing and validating builders never imports TensorFlow: builders import Keras
inside their bodies.

The registry imports no builder.  Every builder, zoo's own included, arrives through the
entry-point group ``zoo.models``: each entry point names a module (or callable) that registers
its builders with :func:`register_model` when loaded.  zoo's built-ins are the entry point
``builtin = zoo.models`` in zoo's own package metadata, so a plug-in is exactly as first-class.
"""

from __future__ import annotations

import fnmatch
import inspect
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable

from pydantic import ConfigDict, ValidationError, create_model

from zoo.errors import ZooError, did_you_mean
from zoo.schema import Strict, bounds_text

ENTRY_POINT_GROUP = "zoo.models"
# Arguments that the task, not the recipe, decides.
TASK_ARGS = ("return_sequences", "stateful")


class Params(Strict):
    """Base of every builder's hyperparameter schema: unknown keys are refused, types are
    strict (``"128"`` is not a number, ``1.5`` is not a whole number) and floats finite."""

    model_config = ConfigDict(strict=True, frozen=True)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    layer: str
    description: str
    cudnn: bool
    schema: type[Params]
    fn: Callable[..., Any] = field(repr=False, compare=False)
    source: str = "zoo"

    @property
    def params(self) -> dict[str, Any]:
        """Each hyperparameter with its default."""
        return {k: f.default for k, f in self.schema.model_fields.items()}

    def describe(self) -> list[tuple[str, str, str, str]]:
        """(name, type, default, description) of each hyperparameter, for `zoo models NAME`."""
        rows = []
        for key, f in self.schema.model_fields.items():
            kind = getattr(f.annotation, "__name__", None) or str(f.annotation).replace("typing.", "")
            bounds = bounds_text(f)
            desc = (f.description or "") + (f" ({bounds})" if bounds else "")
            rows.append((key, kind, repr(f.default), desc))
        return rows


_REGISTRY: dict[str, ModelInfo] = {}
_loaded = False


def _schema_from_signature(fn: Callable[..., Any], name: str) -> type[Params]:
    """A schema for a plug-in builder that declares none: its keyword-only parameters, typed by
    their annotations (else by their defaults)."""
    fields: dict[str, Any] = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY or p.name in TASK_ARGS:
            continue
        if p.default is inspect.Parameter.empty:
            raise ZooError(f"model builder {name!r}: hyperparameter {p.name!r} needs a default")
        ann = p.annotation if p.annotation is not inspect.Parameter.empty and not isinstance(
            p.annotation, str) else type(p.default) if p.default is not None else Any
        fields[p.name] = (ann, p.default)
    return create_model(f"{name}_params", __base__=Params, **fields)


def register_model(
    name: str, *, layer: str, description: str, cudnn: bool = False,
    params: type[Params] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``fn`` as the builder called ``name``.

    ``params`` is the builder's hyperparameter schema (a :class:`Params` subclass); without it,
    the builder's keyword-only parameters (besides ``return_sequences`` and ``stateful``, which
    the task sets) make one.  ``fn`` is called with ``return_sequences``, ``stateful`` and the
    validated hyperparameters as keyword arguments."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ZooError(f"model builder {name!r} is already registered (by {_REGISTRY[name].source})")
        schema = params if params is not None else _schema_from_signature(fn, name)
        source = fn.__module__.split(".")[0]
        _REGISTRY[name] = ModelInfo(name, layer, description, cudnn, schema, fn, source)
        return fn

    return decorate


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    eps = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    if not any(ep.value == "zoo.models" for ep in eps):
        raise ZooError("zoo's built-in builders are not registered: zoo's package metadata lacks "
                       "the `zoo.models` entry point; reinstall zoo (pip install -e .)")
    for ep in sorted(eps, key=lambda e: (e.value != "zoo.models", e.name)):
        try:
            ep.load()
        except ZooError:
            raise
        except Exception as exc:  # a broken plugin must not break zoo
            raise ZooError(f"plugin entry point {ep.name!r} ({ep.value}) failed to load: {exc}") from None


def list_models(pattern: str = "*") -> list[str]:
    """Registered builder names matching a shell-style wildcard, sorted."""
    _ensure_loaded()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def model_info(name: str) -> ModelInfo:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ZooError(f"unknown model builder {name!r}{did_you_mean(name, _REGISTRY)}; "
                       f"registered: {', '.join(sorted(_REGISTRY))}") from None


def validate_params(name: str, hparams: dict[str, Any], where: str = "") -> Params:
    """The builder's schema applied to ``hparams``: validated values with defaults filled in.
    A mistake is one ZooError line naming the key (prefixed with ``where``, e.g. the recipe)."""
    info = model_info(name)
    try:
        return info.schema(**hparams)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        lead = f"{where}model.{key}: " if where else ""
        if err["type"] == "extra_forbidden":
            raise ZooError(f"{lead}model {name!r} has no hyperparameter {key!r}"
                           f"{did_you_mean(key, info.params)}; accepted: {', '.join(info.params)}") from None
        field_info = info.schema.model_fields.get(str(err["loc"][0]))
        raise ZooError(f"{lead or f'model {name!r}: {key}: '}{explain(err, field_info)}") from None


def explain(err: dict[str, Any], field_info: Any = None) -> str:
    """One pydantic error as a short phrase: what the value must be, and what it was."""
    got = repr(err.get("input"))
    got = got if len(got) <= 60 else got[:57] + "..."
    kind = err["type"]
    if kind.endswith("_type") or kind.endswith("_parsing"):
        want = kind.split("_")[0]
        want = {"string": "str", "bool": "bool", "int": "int", "float": "float"}.get(want, want)
        return f"expected {want}, got {got}"
    if kind == "finite_number":
        return f"must be a finite number (got {got})"
    if kind == "literal_error":
        allowed = err.get("ctx", {}).get("expected", "")
        word = str(err.get("input"))
        choices = [c.strip(" '") for c in allowed.replace(" or ", ", ").split(",")]
        return f"unknown value {got}{did_you_mean(word, choices)}; one of: {', '.join(choices)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bounds = {}
        for m in getattr(field_info, "metadata", []) or []:
            for attr in ("ge", "gt", "le", "lt"):
                if getattr(m, attr, None) is not None:
                    bounds[attr] = getattr(m, attr)
        lo = bounds.get("ge", bounds.get("gt"))
        hi = bounds.get("le", bounds.get("lt"))
        if isinstance(err.get("input"), float) and lo is not None and hi is not None:
            return (f"must be in {'[' if 'ge' in bounds else '('}{lo:g}, {hi:g}"
                    f"{']' if 'le' in bounds else ')'} (got {got})")
        ctx = err.get("ctx", {})
        phrases = {"greater_than": "above", "greater_than_equal": "at least",
                   "less_than": "below", "less_than_equal": "at most"}
        return f"must be {phrases[kind]} {next(iter(ctx.values()), '')} (got {got})"
    msg = err["msg"]
    return f"{msg[0].lower() + msg[1:]} (got {got})"


def build(name: str, params: Params, *, return_sequences: bool = False, stateful: bool = False) -> list:
    """The recurrent body of builder ``name`` from already validated ``params``."""
    info = model_info(name)
    return info.fn(return_sequences=return_sequences, stateful=stateful, **params.model_dump())


def build_model(name: str, *, return_sequences: bool = False, stateful: bool = False, **hparams: Any):
    """Build the recurrent body of builder ``name``: a list of Keras layers, applied in order."""
    return build(name, validate_params(name, hparams), return_sequences=return_sequences,
                 stateful=stateful)
