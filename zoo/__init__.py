"""zoo: a Keras 3 model zoo of recurrent networks, trained from YAML recipes, tracked in MLflow.

Importing zoo does not import TensorFlow; building, training and loading do, when called.
"""

from __future__ import annotations

from typing import Any

from zoo.registry import build_model, list_models, model_info, register_model
from zoo.version import __version__

__all__ = ["build_model", "list_models", "load", "model_info", "register_model", "__version__"]


def load(name: str, **kwargs: Any):
    """Load a registered model (``name``, ``name@alias``, ``name/version``) or a local copy."""
    from zoo.loading import load as _load

    return _load(name, **kwargs)
