"""The echo task: learn to output the input binary series delayed by ``echo_step``.

Trained with truncated backpropagation through time: the series is reshaped into
``batch_size`` parallel rows, cut into windows of ``truncated_backprop_length`` steps, and a
stateful RNN carries its state from one window to the next; the engine resets it at the start
of every pass over a series (each epoch, each evaluation).  Accuracy counts only positions whose
echo source the model has seen: the first ``echo_step`` positions of each row are weighted 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from zoo.errors import ZooError
from zoo.schema import Strict
from zoo.tasks import register_task
from zoo.tasks.base import (LoadedModel, Prepared, Split, Task, hash_arrays,
                            in_rows, majority_accuracy, prior_loss, reset_states, sequence_network)


class EchoData(Strict):
    """echo's ``data`` section: the random series (drawn with train.seed) and their windows."""

    total_series_length: int = Field(50000, ge=2, description=(
        "Steps of the random training series; it is cut into train.batch_size parallel rows "
        "read in order by a stateful model."))
    eval_series_length: int = Field(10000, ge=2, description=(
        "Steps of each of the validation and test series."))
    truncated_backprop_length: int = Field(15, ge=1, description=(
        "Steps per window: backpropagation runs through one window; the state carries on "
        "to the next."))
    echo_step: int = Field(3, ge=0, description=(
        "How many steps later the input comes back as the target; the first echo_step "
        "positions of each row do not count in the loss and accuracy."))
    num_classes: int = Field(2, ge=2, description="Symbols in the series (2: a binary series).")


def echo_series(rng: np.random.Generator, length: int, num_classes: int, echo_step: int):
    x = rng.integers(0, num_classes, size=length).astype(np.int32)
    y = np.roll(x, echo_step)
    y[:echo_step] = 0
    return x, y


def to_windows(x: np.ndarray, y: np.ndarray, rows: int, window: int, echo_step: int) -> Split:
    """Reshape a series into ``rows`` parallel rows cut into windows, ordered so that batch k of
    size ``rows`` holds window k of every row (what a stateful RNN needs)."""
    row_len = (len(x) // rows // window) * window
    if row_len == 0:
        raise ZooError(f"echo: a series of {len(x)} steps is too short for {rows} rows of "
                       f"windows of {window}")
    w = np.ones((rows, row_len), np.float32)
    w[:, :echo_step] = 0.0
    return Split(in_rows(x.astype(np.float32)[:, None], rows, window), in_rows(y, rows, window),
                 in_rows(w.reshape(-1), rows, window))


def echo_network(body: list, pre: dict[str, Any], batch_size: int | None):
    """Input (batch, steps, 1) float series -> body -> softmax over the classes per step."""
    batch_shape = None if batch_size is None else (batch_size, pre["truncated_backprop_length"], 1)
    return sequence_network(body, name="echo", input_name="series", outputs=pre["num_classes"],
                            activation="softmax", features=1, batch_shape=batch_shape)


class EchoModel(LoadedModel):
    """A trained echo model.  ``predict(series)`` returns the predicted echo of each series."""

    def _stateless(self):
        if getattr(self, "_net", None) is None:
            from zoo.registry import build_model

            hp = dict(self.recipe["model"])
            name = hp.pop("name")
            body = build_model(name, return_sequences=True, stateful=False, **hp)
            self._net = echo_network(body, self.preprocessing, None)
            self._net.set_weights(self.keras_model.get_weights())
        return self._net

    def predict(self, series) -> list[list[int]]:
        """Each series is a list of class ids or a string of them ("0 1 1 0")."""
        out = []
        for s in series:
            if isinstance(s, str):
                try:
                    s = [int(t) for t in s.split()]
                except ValueError:
                    raise ZooError(f"echo predict: {s[:40]!r} is not a series of class ids") from None
            arr = np.asarray(s)
            if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.number):
                raise ZooError("echo predict: each series must be a non-empty 1-D list of class ids")
            if arr.min() < 0 or arr.max() >= self.preprocessing["num_classes"]:
                raise ZooError(f"echo predict: class ids must be in 0..{self.preprocessing['num_classes'] - 1}")
            probs = self._stateless().predict(arr.astype(np.float32)[None, :, None], verbose=0)
            echo = np.argmax(probs[0], axis=-1).astype(int)
            echo[: self.preprocessing["echo_step"]] = 0  # no echo yet: 0 by the task's definition
            out.append(echo.tolist())
        return out

    def _pyfunc(self, inputs: list) -> Any:
        """Series as strings of class ids ("0 1 1 0") -> the predicted echoes, the same way."""
        return [" ".join(map(str, p)) for p in self.predict(inputs)]


@register_task
class EchoTask(Task):
    name = "echo"
    Data = EchoData
    main_metric = "accuracy"
    greater_is_better = True
    directions = {"loss": "min", "accuracy": "max"}
    stateful = True
    shuffle = False
    loaded_class = EchoModel

    @classmethod
    def check(cls, recipe) -> None:
        super().check(recipe)
        d = recipe.data
        b = recipe.train.batch_size
        for key in ("total_series_length", "eval_series_length"):
            if getattr(d, key) < b * d.truncated_backprop_length:
                raise ZooError(f"{recipe.path}: data.{key}: {getattr(d, key)} is shorter than "
                               f"train.batch_size × data.truncated_backprop_length = "
                               f"{b * d.truncated_backprop_length}")
        if d.echo_step >= d.truncated_backprop_length * (d.total_series_length // b // d.truncated_backprop_length):
            raise ZooError(f"{recipe.path}: data.echo_step: {d.echo_step} is longer than a row")

    def prepare(self, fast: bool = False) -> Prepared:
        d = self.data
        b = self.recipe.train.batch_size
        rng = np.random.default_rng(self.recipe.train.seed)
        n_train = d.total_series_length
        n_eval = d.eval_series_length
        if fast:
            n_train = min(n_train, b * d.truncated_backprop_length * 4)
            n_eval = min(n_eval, b * d.truncated_backprop_length * 2)
        splits = []
        for length in (n_train, n_eval, n_eval):
            x, y = echo_series(rng, length, d.num_classes, d.echo_step)
            splits.append(to_windows(x, y, b, d.truncated_backprop_length, d.echo_step))
        train, val, test = splits
        pre = {"num_classes": d.num_classes, "echo_step": d.echo_step,
               "truncated_backprop_length": d.truncated_backprop_length}
        return Prepared(train, val, test, pre, hash_arrays(train.x, val.x, test.x),
                        info={"source": f"random series of {d.num_classes} classes (seed "
                                        f"{self.recipe.train.seed}), echoed {d.echo_step} steps later",
                              "train_windows": len(train), "eval_windows": len(test)})

    def build(self, prepared: Prepared, body: list, batch_size: int):
        return echo_network(body, prepared.preprocessing, batch_size)

    def compile_args(self) -> dict[str, Any]:
        return {"loss": "sparse_categorical_crossentropy", "weighted_metrics": ["accuracy"]}

    def baseline(self, prepared: Prepared) -> dict[str, float]:
        """Always the most frequent class of the training series (accuracy); always the
        training series' class frequencies (loss)."""
        return {"accuracy": majority_accuracy(prepared.train, prepared.test),
                "loss": prior_loss(prepared.train, prepared.test,
                                   prepared.preprocessing["num_classes"])}

    def input_example(self, prepared: Prepared) -> Any:
        row = prepared.test.x[0, :, 0].astype(int)
        return [" ".join(map(str, row))]

    def plots(self, model, prepared: Prepared, outdir: Path) -> list[Path]:
        from zoo import plots

        b = self.recipe.train.batch_size
        reset_states(model)
        batch = prepared.test.head(b)
        pred = np.argmax(model.predict(batch.x, batch_size=b, verbose=0), axis=-1)
        t = np.arange(batch.x.shape[1])
        fig, axes = plots.figure(b, 1, figsize=(8, 1.4 * b), sharex=True)
        for i, ax in enumerate(np.atleast_1d(axes)):
            ax.bar(t - 0.25, batch.x[i, :, 0], width=0.25, color="tab:blue", label="input")
            ax.bar(t, batch.y[i], width=0.25, color="tab:green", label="target")
            ax.bar(t + 0.25, pred[i], width=0.25, color="tab:red", label="prediction")
            ax.set_yticks([0, 1])
            ax.set_ylabel(f"row {i}")
        np.atleast_1d(axes)[0].legend(loc="upper right", ncol=3, fontsize="small")
        fig.suptitle("echo: one test batch (first window of each row)")
        path = outdir / "echo_batch.png"
        plots.save(fig, path)
        return [path]
