"""MLflow's pyfunc entry for zoo models (``loader_module``).

MLflow imports this module from the installed zoo package and calls :func:`_load_pyfunc` with
the path of the model's bundle, so the code that runs is always the installed zoo and the
store holds only data (``.keras`` loaded with safe_mode, JSON, YAML): editing the artifacts can
never make MLflow or ``zoo.load`` execute code.
"""

from __future__ import annotations

from typing import Any


class ZooPyfuncModel:
    """What MLflow's pyfunc wrapper calls: ``predict(model_input, params=None)``."""

    def __init__(self, model) -> None:
        self.model = model

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        return self.model.pyfunc_predict(model_input)


def _load_pyfunc(data_path: str) -> ZooPyfuncModel:
    from zoo.bundle import load

    return ZooPyfuncModel(load(data_path))
