"""MLflow models-from-code entry: a zoo model as an ordinary MLflow pyfunc model.

MLflow runs this file to get the model object, so nothing is pickled: ``load_context`` loads
the bundle (``.keras`` with safe_mode, preprocessing from JSON) through zoo's own loader."""

from __future__ import annotations

import warnings

import mlflow

# predict takes what each task takes (texts, series, primes), so it has no single type hint
warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method.*")
from mlflow.pyfunc import PythonModel


class ZooPyfuncModel(PythonModel):
    def load_context(self, context):
        from zoo.loading import load_bundle

        self.model = load_bundle(context.artifacts["zoo_model"])

    def predict(self, context, model_input, params=None):
        return self.model.pyfunc_predict(model_input)


mlflow.models.set_model(ZooPyfuncModel())
