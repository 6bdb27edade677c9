"""The one registry of model builders.

A builder is a function with keyword-only hyperparameters that returns the recurrent body of a
model (a list of Keras layers).  Its metadata is recorded at registration time, so listing and
describing builders never imports TensorFlow: builders import Keras inside their bodies.

Other packages add builders through the entry-point group ``zoo.models``: each entry point names a
module (or callable) that registers its builders with :func:`register_model` when loaded.
"""

from __future__ import annotations

import fnmatch
import inspect
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable

from zoo.errors import ZooError, did_you_mean

ENTRY_POINT_GROUP = "zoo.models"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    layer: str
    description: str
    cudnn: bool
    params: dict[str, Any]
    fn: Callable[..., Any] = field(repr=False, compare=False)
    source: str = "zoo"

    def cudnn_eligible(self, hparams: dict[str, Any]) -> bool:
        """Whether these hyperparameters keep the fused cuDNN kernel available on a GPU."""
        if not self.cudnn:
            return False
        merged = {**self.params, **hparams}
        return (
            float(merged.get("recurrent_dropout", 0.0)) == 0.0
            and not merged.get("unroll", False)
            and merged.get("activation", "tanh") == "tanh"
            and merged.get("recurrent_activation", "sigmoid") == "sigmoid"
            and merged.get("use_bias", True)
            and merged.get("reset_after", True)
        )


_REGISTRY: dict[str, ModelInfo] = {}
_loaded = False


def register_model(
    name: str, *, layer: str, description: str, cudnn: bool = False,
    params: dict[str, Any] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``fn`` as the builder called ``name``.

    The accepted hyperparameters and their defaults are ``params`` when given, else the
    builder's keyword-only parameters, besides ``return_sequences`` and ``stateful`` which the
    task sets.
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ZooError(f"model builder {name!r} is already registered (by {_REGISTRY[name].source})")
        accepted = dict(params) if params is not None else {
            p.name: p.default
            for p in inspect.signature(fn).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in TASK_ARGS
        }
        source = fn.__module__.split(".")[0]
        _REGISTRY[name] = ModelInfo(name, layer, description, cudnn, accepted, fn, source)
        return fn

    return decorate


# Arguments that the task, not the recipe, decides.
TASK_ARGS = ("return_sequences", "stateful")


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import zoo.models  # noqa: F401  (registers the built-in builders)

    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
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


def check_hparams(name: str, hparams: dict[str, Any]) -> dict[str, Any]:
    """Validate hyperparameter names against the builder; return them merged with defaults."""
    info = model_info(name)
    for key in hparams:
        if key not in info.params:
            raise ZooError(
                f"model {name!r} has no hyperparameter {key!r}{did_you_mean(key, info.params)}; "
                f"accepted: {', '.join(info.params)}"
            )
    return {**info.params, **hparams}


def build_model(name: str, *, return_sequences: bool = False, stateful: bool = False, **hparams: Any):
    """Build the recurrent body of builder ``name``: a list of Keras layers, applied in order."""
    info = model_info(name)
    check_hparams(name, hparams)
    return info.fn(return_sequences=return_sequences, stateful=stateful, **{**info.params, **hparams})
