"""The task interface: what the one engine asks of every task.

A task turns a recipe into data (:class:`Prepared`), puts its input and head around the
recurrent body from the registry, names its loss and metrics, evaluates, plots, and says what a
loaded model of it can do (:class:`LoadedModel`).  No task has its own training loop.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from zoo.errors import ZooError


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class Split:
    """One split as arrays: inputs ``x``, targets ``y``, optional per-position weights."""

    x: np.ndarray
    y: np.ndarray
    sample_weight: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.x)

    def head(self, n: int) -> "Split":
        w = None if self.sample_weight is None else self.sample_weight[:n]
        return Split(self.x[:n], self.y[:n], w)


@dataclass
class Prepared:
    train: Split
    val: Split
    test: Split
    preprocessing: dict[str, Any]          # JSON-able; saved with the model
    data_hash: str
    info: dict[str, Any] = field(default_factory=dict)   # logged as params (sizes, sources)
    extra: dict[str, Any] = field(default_factory=dict)  # task-private (raw texts, ...)


def hash_arrays(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


class Task:
    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]] = NoOptions
    Data: ClassVar[type[BaseModel]]
    main_metric: ClassVar[str]             # a key of evaluate()'s result, e.g. "accuracy"
    greater_is_better: ClassVar[bool] = True
    return_sequences: ClassVar[bool] = True  # the body returns every step (else the last)
    stateful: ClassVar[bool] = False       # stateful body, static batch, no shuffling
    shuffle: ClassVar[bool] = True
    description: ClassVar[str] = ""

    def __init__(self, recipe) -> None:
        self.recipe = recipe
        self.options = recipe.task_options
        self.data = recipe.data

    # ----- validation beyond the schema (files that must exist, cross-field rules) ---------
    generates: ClassVar[bool] = False      # predicts left to right: no bidirectional body

    @classmethod
    def check(cls, recipe) -> None:
        """Cheap checks at recipe load, shared by all tasks; tasks add their own."""
        if cls.stateful and recipe.train.distribute != "none":
            raise ZooError(f"{recipe.path}: train.distribute: task {cls.name!r} trains a stateful "
                           "model, which cannot be distributed; use 'none'")
        from zoo.registry import model_info

        if cls.generates and model_info(recipe.model).layer.startswith("Bidirectional"):
            raise ZooError(f"{recipe.path}: model.name: {recipe.model!r} is bidirectional: it "
                           "reads the text right to left as well, so it cannot predict or "
                           "generate the next token; use lstm, gru, simple-rnn or tanh-rnn")
        d = recipe.data
        encoding = getattr(d, "encoding", None)
        if encoding is not None:
            import codecs

            try:
                codecs.lookup(encoding)
            except LookupError:
                raise ZooError(f"{recipe.path}: data.encoding: unknown encoding {encoding!r}") from None
        val, test = getattr(d, "val_fraction", 0.0), getattr(d, "test_fraction", 0.0)
        if val + test >= 1:
            raise ZooError(f"{recipe.path}: data.val_fraction + data.test_fraction must be below "
                           f"1 (got {val} + {test})")
        if getattr(d, "path", None) is not None:
            resolve_data_path(recipe.path, d.path, "data.path")

    def resolve_path(self, value: str, key: str) -> Path:
        """A data path from the recipe: relative to the recipe's folder, else to the cwd."""
        return resolve_data_path(self.recipe.path, value, key)

    # ----- data -------------------------------------------------------------------------
    def prepare(self, fast: bool = False) -> Prepared:
        raise NotImplementedError

    # ----- model ------------------------------------------------------------------------
    def build(self, prepared: Prepared, body: list, batch_size: int):
        """Return the uncompiled keras.Model: the task's input, then ``body``, then its head."""
        raise NotImplementedError

    def compile_args(self) -> dict[str, Any]:
        """loss, metrics (and weighted_metrics) for Model.compile."""
        raise NotImplementedError

    def derived_metrics(self, logs: dict[str, float]) -> dict[str, float]:
        """Metrics computed from the epoch's logs (e.g. bits per character from the loss)."""
        return {}

    # ----- after training ---------------------------------------------------------------
    def evaluate(self, model, prepared: Prepared, batch_size: int) -> dict[str, float]:
        """Test metrics (without the ``test_`` prefix) on the held-out split."""
        w = prepared.test.sample_weight
        result = model.evaluate(prepared.test.x, prepared.test.y, sample_weight=w,
                                batch_size=batch_size, verbose=0, return_dict=True)
        result = {k: float(v) for k, v in result.items() if k != "compile_metrics"}
        result.update(self.derived_metrics(result))
        return result

    def epoch_artifacts(self, model, prepared: Prepared, epoch: int) -> dict[str, str]:
        """Text artifacts to log after each epoch: {file name: content}."""
        return {}

    def plots(self, model, prepared: Prepared, outdir: Path) -> list[Path]:
        """The task's own plots, written under ``outdir``."""
        return []

    # ----- what a loaded model can do ---------------------------------------------------
    loaded_class: ClassVar[type["LoadedModel"]]

    def input_example(self, prepared: Prepared) -> Any:
        """A raw input for the MLflow model (what ``LoadedModel.pyfunc_predict`` takes)."""
        return None


def resolve_data_path(recipe_path: str, value: str, key: str) -> Path:
    p = Path(value).expanduser()
    if not p.is_absolute():
        beside = Path(recipe_path).parent / p
        p = beside if beside.exists() else Path.cwd() / p
    if not p.exists():
        raise ZooError(f"{recipe_path}: {key}: file not found: {value}")
    return p


class LoadedModel:
    """A trained model with everything needed to use it.  Tasks subclass it with ``predict``
    or ``generate``.  ``pyfunc_predict`` is what MLflow's pyfunc flavour calls."""

    def __init__(self, keras_model, preprocessing: dict[str, Any], recipe: dict[str, Any],
                 version: str | None = None, metrics: dict[str, float] | None = None,
                 name: str | None = None) -> None:
        self.keras_model = keras_model
        self.preprocessing = preprocessing
        self.recipe = recipe
        self.version = version
        self.metrics = metrics or {}
        self.name = name

    @property
    def task(self) -> str:
        return self.recipe["task"]["name"]

    def __repr__(self) -> str:
        where = f"{self.name} v{self.version}" if self.name else "local"
        return f"<zoo {self.task} model {self.recipe['model']['name']} ({where})>"

    def pyfunc_predict(self, model_input: Any) -> Any:
        raise NotImplementedError


def reset_states(model) -> None:
    """Reset the state of every stateful recurrent layer (Bidirectional wrappers included)."""
    for layer in model.layers:
        if getattr(layer, "stateful", False) and hasattr(layer, "reset_state"):
            layer.reset_state()
        elif hasattr(layer, "forward_layer") and getattr(layer.forward_layer, "stateful", False):
            layer.reset_state()
