"""The task interface: what the one engine asks of every task.

A task turns a recipe into data (:class:`Prepared`), puts its input and head around the
recurrent body from the registry, names its loss and metrics, evaluates, plots, and says what a
loaded model of it can do (:class:`LoadedModel`).  No task has its own training loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np
from pydantic import BaseModel

from zoo.errors import ZooError
from zoo.hashing import hash_arrays  # noqa: F401  (re-exported for the tasks)
from zoo.schema import Strict


class NoOptions(Strict):
    """A task without options: its ``task`` section holds only ``name``."""


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


class Task:
    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]] = NoOptions
    Data: ClassVar[type[BaseModel]]
    main_metric: ClassVar[str]             # a key of evaluate()'s result, e.g. "accuracy"
    greater_is_better: ClassVar[bool] = True
    # Which way each metric of evaluate() (and of the epoch logs, with val_) improves: "max" or
    # "min" (a key may be a wildcard, e.g. "recall_*").  A sweep's mode comes from here; the main metric's must agree with greater_is_better.
    directions: ClassVar[dict[str, str]] = {"loss": "min"}
    # The main metric is a monotone function of the test loss (bits per character, perplexity):
    # the baseline guard then measures its margin in nats of loss (see zoo.publish).
    main_metric_from_loss: ClassVar[bool] = False
    return_sequences: ClassVar[bool] = True  # the body returns every step (else the last)
    stateful: ClassVar[bool] = False       # stateful body, static batch, no shuffling
    shuffle: ClassVar[bool] = True
    generates: ClassVar[bool] = False      # predicts left to right: no bidirectional body
    # model.init_from: takes the vocabulary, embedding and recurrent weights of a word model
    warm_starts: ClassVar[bool] = False
    loaded_class: ClassVar[type["LoadedModel"]]   # what zoo.load returns for this task

    def __init__(self, recipe) -> None:
        self.recipe = recipe
        self.options = recipe.task_options
        self.data = recipe.data
        self.init_source: LoadedModel | None = None   # model.init_from, loaded by the engine

    @classmethod
    def direction(cls, metric: str) -> str | None:
        """"max" or "min" for a metric (``val_`` and ``test_`` prefixes ignored), None if the
        task does not say."""
        import fnmatch

        bare = metric.removeprefix("val_").removeprefix("test_")
        for pattern, way in cls.directions.items():
            if fnmatch.fnmatchcase(bare, pattern):
                return way
        return None

    # ----- validation beyond the schema (files that must exist, cross-field rules) ---------
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
        from zoo.data.text import check_fractions

        try:
            check_fractions(getattr(d, "val_fraction", 0.0), getattr(d, "test_fraction", 0.0))
        except ZooError as exc:
            raise ZooError(f"{recipe.path}: {exc}") from None
        for key in ("path", "test_path"):
            if getattr(d, key, None) is not None:
                resolve_data_path(recipe.path, getattr(d, key), f"data.{key}")

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

    def exported(self, model, prepared: Prepared):
        """The model to save and register: the trained one, or (for a task that trained it
        stateful only to carry state between windows) a copy that is not stateful."""
        return model

    def baseline(self, prepared: Prepared) -> dict[str, float]:
        """The trivial baseline's test metrics: the main metric and ``loss`` (in the units of
        the model's test loss).  A model is never promoted unless it beats both (see
        :func:`zoo.publish.baseline_guard`).  Tasks without one return {}."""
        return {}

    def test_items(self, prepared: Prepared) -> int:
        """How many independent scored items the test split holds (the ``n`` of the baseline
        guard's noise rule): its scored targets."""
        return scored_items(prepared.test)

    def epoch_artifacts(self, model, prepared: Prepared, epoch: int) -> dict[str, str]:
        """Text artifacts to log after each epoch: {file name: content}."""
        return {}

    def plots(self, model, prepared: Prepared, outdir: Path) -> list[Path]:
        """The task's own plots, written under ``outdir``."""
        return []

    # ----- what a loaded model can do ---------------------------------------------------
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
        self.run_id: str | None = None          # the version's run and bundle digest, when
        self.bundle_digest: str | None = None   # loaded from a store (exports are logged there)

    @property
    def task(self) -> str:
        return self.recipe["task"]["name"]

    def __repr__(self) -> str:
        where = f"{self.name} v{self.version}" if self.name else "local"
        return f"<zoo {self.task} model {self.recipe['model']['name']} ({where})>"

    def pyfunc_predict(self, model_input: Any) -> Any:
        """What MLflow's pyfunc flavour calls: the input as a list (a one-column DataFrame, a
        single string or any sequence), then the task's :meth:`_pyfunc`."""
        return self._pyfunc(as_list(model_input))

    def _pyfunc(self, inputs: list) -> Any:
        raise NotImplementedError

    def export(self, format: str, out: str | Path) -> Path:
        """Write the model as ``format`` (saved_model, onnx or litert) into the folder ``out``,
        runnable without zoo (:mod:`zoo.export`); returns ``out``."""
        from zoo.export import export

        return export(self, format, out)

    def sample(self, n: int = 1, temperature: float = 1.0, seed: int | None = None,
               prime: str | None = None, length: int | None = None) -> list[str]:
        """``n`` generated texts, for every generative task alike (what ``zoo generate``
        prints); ``prime`` and ``length`` where the task reads them."""
        raise ZooError(f"a {self.task} model does not generate text; try `zoo predict`")

    def stream(self, n: int = 1, temperature: float = 1.0, seed: int | None = None,
               prime: str | None = None, length: int | None = None) -> Iterator[str]:
        """The texts of :meth:`sample` in pieces, as they are made, each text ending with a
        blank line (``zoo generate`` prints them as they come, in constant memory)."""
        for text in self.sample(n, temperature, seed, prime, length):
            yield text + "\n\n"


def _class_weights(split: Split) -> np.ndarray:
    w = np.ones(split.y.shape) if split.sample_weight is None else split.sample_weight
    return w.ravel().astype(np.float64)


def majority_accuracy(train: Split, test: Split) -> float:
    """Accuracy on ``test`` of always predicting the most frequent training class (weighted by
    the splits' sample weights where they have them)."""
    def counts(split: Split):
        return np.bincount(split.y.ravel().astype(np.int64), weights=_class_weights(split))

    majority = int(np.argmax(counts(train)))
    test_counts = counts(test)
    total = test_counts.sum()
    return float(test_counts[majority] / total) if total and majority < len(test_counts) else 0.0


def prior_loss(train: Split, test: Split, num_classes: int) -> float:
    """Cross-entropy (nats) on ``test`` of always predicting the training split's class
    frequencies (add-one smoothed, so that no class has probability 0), reduced as Keras reduces
    the model's loss: weighted by the sample weights, divided by the number of positions."""
    counts = np.ones(num_classes) + np.bincount(train.y.ravel().astype(np.int64),
                                                weights=_class_weights(train),
                                                minlength=num_classes)[:num_classes]
    logp = np.log(counts / counts.sum())
    return float(-(logp[test.y.ravel().astype(np.int64)] * _class_weights(test)).sum()
                 / max(1, test.y.size))


def scored_items(split: Split) -> int:
    """How many targets of ``split`` are scored: those of non-zero sample weight, else all."""
    if split.sample_weight is None:
        return int(split.y.size)
    return int(np.count_nonzero(split.sample_weight))


def as_list(inputs: Any) -> list:
    """Model inputs as a list: the first column of a DataFrame, one string, or any sequence."""
    if hasattr(inputs, "iloc"):
        return inputs.iloc[:, 0].tolist()
    if isinstance(inputs, str):
        return [inputs]
    try:
        return list(inputs)
    except TypeError:
        raise ZooError(f"predict: expected a list of texts or inputs, got {type(inputs).__name__}") from None


def sequence_network(body: list, *, name: str, input_name: str, outputs: int,
                     activation: str | None = None, head_name: str = "head",
                     vocab_size: int | None = None, embedding_dim: int | None = None,
                     mask_zero: bool = False, features: int | None = None,
                     batch_shape: tuple | None = None, embedding_dropout: float = 0.0,
                     pooling: str = "last"):
    """The network of every task: an input of token ids through an Embedding (``vocab_size``,
    ``embedding_dim``, ``mask_zero``; ``embedding_dropout`` drops whole words in training) or
    of ``features`` floats per step, then the recurrent ``body``, then (for ``pooling`` max,
    mean or attention over its steps, padding excluded) a pooling layer, then a Dense head of
    ``outputs`` (float32, for mixed precision).  A static ``batch_shape`` is for stateful
    bodies."""
    import keras

    if vocab_size is not None:
        shape, dtype = (None,), "int32"
    else:
        shape, dtype = (None, features), "float32"
    if batch_shape is not None:
        inputs = keras.Input(batch_shape=batch_shape, dtype=dtype, name=input_name)
    else:
        inputs = keras.Input(shape=shape, dtype=dtype, name=input_name)
    x = inputs
    if vocab_size is not None:
        x = keras.layers.Embedding(vocab_size, embedding_dim, mask_zero=mask_zero,
                                   name="embedding")(x)
        if embedding_dropout:
            x = keras.layers.Dropout(embedding_dropout, noise_shape=(None, None, 1),
                                     name="embedding_dropout")(x)
    for layer in body:
        x = layer(x)
    if pooling != "last":
        from zoo.heads import AttentionPooling

        x = {"max": keras.layers.GlobalMaxPooling1D, "mean": keras.layers.GlobalAveragePooling1D,
             "attention": AttentionPooling}[pooling](name=f"{pooling}_pooling")(x)
    out = keras.layers.Dense(outputs, activation=activation, dtype="float32", name=head_name)(x)
    return keras.Model(inputs, out, name=name)


def read_corpus(task: "Task") -> tuple[str, str, str, dict[str, Any]]:
    """The text of a language-model task as (train, val, test, info): the user's file
    (``data.path``, contiguous fractions) or, by default, Shakespeare's plays (whole plays
    held out, chosen by ``data.split_seed`` when the task has it)."""
    d = task.data
    if d.path is not None:
        from zoo.data.text import read_text_file, split_by_fraction

        p = task.resolve_path(d.path, "data.path")
        train, val, test = split_by_fraction(read_text_file(p, d.encoding), d.val_fraction,
                                             d.test_fraction)
        return train, val, test, {"source": str(p), "encoding": d.encoding}
    from zoo.data.shakespeare import PACKAGE, load_plays, split_works

    works = load_plays()
    tr, va, te = split_works(works, d.val_fraction, d.test_fraction, getattr(d, "split_seed", 0))
    join = lambda names: "\n\n".join(works[n] for n in names)  # noqa: E731
    info = {"source": "shakespeare", "source_url": package_url(PACKAGE),
            "train_works": len(tr), "val_works": ", ".join(va), "test_works": ", ".join(te)}
    return join(tr), join(va), join(te), info


def package_url(package: tuple[str, str, str]) -> str:
    """The package index page of a pinned corpus package (name, version, sha256)."""
    return f"https://pypi.org/project/{package[0]}/{package[1]}/"


def in_rows(a: np.ndarray, rows: int, window: int) -> np.ndarray:
    """A series ``a`` (steps first) as ``rows`` parallel rows cut into windows of ``window``
    steps, ordered so that batch k of size ``rows`` holds window k of every row: what a stateful
    RNN, carrying each row's state from one batch to the next, needs.  Steps that do not fill a
    whole window of every row are dropped."""
    per = len(a) // rows // window
    a = a[: rows * per * window].reshape((rows, per, window) + a.shape[1:])
    return np.ascontiguousarray(np.swapaxes(a, 0, 1).reshape((rows * per, window) + a.shape[3:]))


def reset_states(model) -> None:
    """Reset the state of every stateful recurrent layer (Bidirectional wrappers included)."""
    for layer in model.layers:
        if getattr(layer, "stateful", False) and hasattr(layer, "reset_state"):
            layer.reset_state()
        elif hasattr(layer, "forward_layer") and getattr(layer.forward_layer, "stateful", False):
            layer.reset_state()
