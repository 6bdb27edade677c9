"""zoo: a Keras 3 model zoo of recurrent networks, trained from YAML recipes, tracked in MLflow.

Importing zoo does not import TensorFlow; building, training and loading do, when called.
"""

from __future__ import annotations

from zoo.quiet import quiet
from zoo.registry import build_model, list_models, model_info, register_model
from zoo.version import __version__

quiet()  # TensorFlow's start-up chatter and unhelpful warnings stay out of the user's console

__all__ = ["build_model", "list_models", "load", "model_info", "register_model", "__version__"]


def load(name: str, store: str | None = None):
    """Load a registered model (``name``, ``name@alias``, ``name/version``) or a local copy.

    The store is ``store`` (a URI or a folder) when given, else ``MLFLOW_TRACKING_URI``, else
    your default store (``zoo store``), else ``./mlruns``."""
    from zoo.loading import load as _load

    return _load(name, store=store)
