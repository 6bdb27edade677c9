"""The char-rnn task: a character-level language model, trained on real text, that writes.

Data: Shakespeare's plays by default (whole plays held out for validation and test, so the
test text was never seen in training), or any user text file (``data.path``) split into
contiguous fractions.  The vocabulary is the set of characters of the training text (id 0
stands for any other character) and is saved with the model.  Each split is cut into windows
of ``data.seq_len`` characters; the target of a window is the same window one character on.

Model: Embedding -> the recurrent body (every step) -> Dense logits over the vocabulary, with
a float32 head for mixed precision.  Loss is cross-entropy in nats per character; bits per
character (``bpc``) and perplexity are derived from it.  After each epoch a short sample is
logged as an artifact.  Sampling runs in one compiled loop (:mod:`zoo.sampling`).
"""

from __future__ import annotations

import math
import random
from typing import Any, Iterator

import numpy as np
from pydantic import Field

from zoo.errors import ZooError
from zoo.schema import ENCODING, Strict
from zoo.tasks import register_task
from zoo.tasks.base import (LoadedModel, Prepared, Split, Task, hash_arrays, in_rows,
                            read_corpus, resolve_data_path, sequence_network)

# In --fast-dev-run, each split is cut to this many windows (a couple of batches).
FAST_WINDOWS = 4
# Generation: at most this many characters per text; streamed in pieces of STREAM_CHUNK.
MAX_LENGTH = 1_000_000_000
STREAM_CHUNK = 20_000
# What the MLflow pyfunc model generates for each prime it is given.
PYFUNC_LENGTH = 200
PYFUNC_TEMPERATURE = 0.8


class CharRNNData(Strict):
    """char-rnn's ``data`` section: the text, its splits and its windows."""

    path: str | None = Field(None, description=(
        "A plain text file to train on, relative to the recipe (or to the working directory); "
        "null: Shakespeare's plays, with whole plays held out for validation and test. A file "
        "is split into contiguous parts: training first, then val_fraction, then test_fraction "
        "of its characters."))
    encoding: str = ENCODING
    seq_len: int = Field(100, ge=1, description=(
        "Characters per training window (the steps backpropagation runs through); the target "
        "is the same window one character on."))
    val_fraction: float = Field(0.05, gt=0, lt=1, description=(
        "The part held out for validation: of the characters of data.path, or of the plays."))
    test_fraction: float = Field(0.05, gt=0, lt=1, description=(
        "The part held out for the test metrics: of the characters of data.path, or of the "
        "plays. val_fraction + test_fraction must be below 1."))
    max_chars: int | None = Field(None, ge=1, description=(
        "Train on at most this many characters, from the start of the training text (null: "
        "all of it)."))
    split_seed: int = Field(0, ge=0, description=(
        "Which plays are held out for validation and test (default corpus only)."))
    # Each batch row reads its own stretch of the text in order, its state carried from one
    # window to the next in training and evaluation (truncated backpropagation through time):
    # every character is predicted from all of its stretch before it, not its window only.
    carry_state: bool = Field(False, description=(
        "Read each split in order: it is cut into train.batch_size stretches, row r of batch k "
        "is window k of stretch r, and the model is stateful, carrying each row's state from "
        "one batch to the next (gradients still stop at window boundaries). Every character "
        "is then predicted from all of its stretch before it, in training and in the test "
        "metrics (a run also logs test_window_bpc, each window from a zero state, as runs "
        "without it are measured). Each split needs at least batch_size x seq_len + 1 "
        "characters; refused with train.distribute: mirrored. The registered model is not "
        "stateful and takes any batch size."))


class CharRNNOptions(Strict):
    """char-rnn's ``task`` section: the embedding and the sample logged after each epoch."""

    embedding_dim: int = Field(64, ge=1, description="Size of each character's embedding vector.")
    sample_prime: str = Field("\n", min_length=1, description=(
        "The text each epoch's logged sample starts from (its characters must occur in the "
        "training text)."))
    sample_temperature: float = Field(0.8, ge=0, description=(
        "Temperature of each epoch's sample: 0 is greedy, higher is more varied."))
    sample_length: int = Field(400, ge=0, description=(
        "Characters in the sample logged as an artifact after each epoch (0: no sample)."))


def _ln2() -> float:
    return math.log(2.0)


def bpc_metrics(loss: float, prefix: str = "") -> dict[str, float]:
    """Bits per character and perplexity from a cross-entropy in nats per character."""
    return {f"{prefix}bpc": loss / _ln2(), f"{prefix}perplexity": math.exp(min(loss, 700.0))}


def windows(ids: np.ndarray, seq_len: int, rows: int = 1) -> Split:
    """Non-overlapping windows of ``seq_len`` ids; the target is the window shifted by one.
    With ``rows`` > 1, the text is cut into that many stretches read in parallel, and batch k of
    ``rows`` windows holds window k of every stretch (for a stateful model)."""
    x = np.asarray(ids[:-1], np.int32)
    y = np.asarray(ids[1:], np.int32)
    return Split(in_rows(x, rows, seq_len), in_rows(y, rows, seq_len))


def _vocab_from(pre: dict[str, Any]):
    from zoo.data.text import CharVocab

    return CharVocab.from_json(pre["vocab"])


def _unknown(vocab, text: str) -> list[str]:
    return sorted(set(vocab.unknown_chars(text)))


def _show(chars: list[str]) -> str:
    return ", ".join(repr(c) for c in chars)


class CharRNNModel(LoadedModel):
    """A trained character-level model.  ``generate(prime, length, temperature, seed, n)``
    writes text: the prime followed by ``length`` characters, one string (n=1) or a list."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.vocab = _vocab_from(self.preprocessing)
        self._sampler = None

    def _get_sampler(self):
        if self._sampler is None:
            self._sampler = make_sampler(self.keras_model)
        return self._sampler

    def generate(self, prime: str = "\n", length: int = 500, temperature: float = 0.8,
                 seed: int | None = None, n: int = 1) -> str | list[str]:
        texts = self.sample(n, temperature, seed, prime, length)
        return texts[0] if n == 1 else texts

    def sample(self, n: int = 1, temperature: float = 0.8, seed: int | None = None,
               prime: str | None = None, length: int | None = None) -> list[str]:
        """``n`` texts, each ``prime`` (default a new line) and ``length`` (default 500)
        generated characters."""
        prime = "\n" if prime is None else prime
        length = 500 if length is None else length
        check_generate_args(self.vocab, prime, length, temperature, n, seed)
        return sample_text(self._get_sampler(), self.vocab, prime, length, temperature, seed, n)

    def stream(self, n: int = 1, temperature: float = 0.8, seed: int | None = None,
               prime: str | None = None, length: int | None = None) -> Iterator[str]:
        """Like :meth:`sample`, in pieces of at most STREAM_CHUNK characters: memory stays
        constant for any length.  Texts up to STREAM_CHUNK characters are exactly those of
        :meth:`sample`; a longer text continues each piece from the last ``seq_len``
        characters before it (the window the model was trained on), seeded per piece."""
        prime = "\n" if prime is None else prime
        length = 500 if length is None else length
        check_generate_args(self.vocab, prime, length, temperature, n, seed)
        if length <= STREAM_CHUNK:
            for text in self.sample(n, temperature, seed, prime, length):
                yield text + "\n\n"
            return
        base = random.SystemRandom().randrange(2**40) if seed is None else int(seed)
        window = int(self.preprocessing.get("seq_len", 100))
        for i in range(n):
            yield prime
            context, left, piece = prime, length, 0
            while left > 0:
                k = min(left, STREAM_CHUNK)
                out = sample_text(self._get_sampler(), self.vocab, context, k, temperature,
                                  base + 7919 * i + piece, 1)[0][len(context):]
                yield out
                context = (context + out)[-window:]
                left -= k
                piece += 1
            yield "\n\n"

    def _pyfunc(self, inputs: list) -> Any:
        """Primes -> one generated text each (prime + 200 characters at temperature 0.8)."""
        return [self.generate(str(p), PYFUNC_LENGTH, PYFUNC_TEMPERATURE) for p in inputs]


@register_task
class CharRNNTask(Task):
    name = "char-rnn"
    Options = CharRNNOptions
    Data = CharRNNData
    main_metric = "bpc"
    greater_is_better = False
    directions = {"loss": "min", "bpc": "min", "perplexity": "min", "window_loss": "min",
                  "window_bpc": "min", "accuracy": "max"}
    main_metric_from_loss = True
    generates = True
    loaded_class = CharRNNModel

    def __init__(self, recipe) -> None:
        super().__init__(recipe)
        self.stateful = self.data.carry_state
        self.shuffle = not self.data.carry_state

    @classmethod
    def check(cls, recipe) -> None:
        super().check(recipe)
        d = recipe.data
        if d.carry_state and recipe.train.distribute != "none":
            raise ZooError(f"{recipe.path}: train.distribute: data.carry_state trains a stateful "
                           "model, which cannot be distributed; use 'none' or carry_state: false")
        if d.path is not None:
            p = resolve_data_path(recipe.path, d.path, "data.path")
            if p.is_dir():
                raise ZooError(f"{recipe.path}: data.path: {d.path} is a directory, expected a "
                               "text file")
            if p.stat().st_size == 0:
                raise ZooError(f"{recipe.path}: data.path: {d.path} is empty")

    # ----------------------------------------------------------------------------- data
    def prepare(self, fast: bool = False) -> Prepared:
        from zoo.data.text import CharVocab

        d = self.data
        L = d.seq_len
        train_text, val_text, test_text, info = read_corpus(self)
        if d.max_chars is not None:
            train_text = train_text[: d.max_chars]
        where = f"{self.recipe.path}: data.path: {d.path}" if d.path else \
            f"{self.recipe.path}: the Shakespeare corpus"
        rows = self.recipe.train.batch_size if d.carry_state else 1
        need = rows * L + 1
        for label, text in (("training", train_text), ("validation", val_text),
                            ("test", test_text)):
            if len(text) < need:
                total = len(train_text) + len(val_text) + len(test_text)
                if d.carry_state:
                    raise ZooError(
                        f"{where}: the {label} split has {len(text)} characters, fewer than the "
                        f"{need} that data.carry_state needs (train.batch_size × data.seq_len + "
                        f"1: a window for each batch row); the file has {total} characters in "
                        "all: use a larger text, a smaller train.batch_size / data.seq_len / "
                        "fractions, or data.carry_state: false")
                raise ZooError(
                    f"{where}: the {label} split has {len(text)} characters, fewer than one "
                    f"window of data.seq_len + 1 = {need} (the file has {total} characters in "
                    "all; use a larger text or a smaller data.seq_len / fractions)")
        vocab = CharVocab.from_text(train_text)
        prime = self.options.sample_prime
        missing = _unknown(vocab, prime)
        if missing:
            raise ZooError(f"{self.recipe.path}: task.sample_prime: characters not in the "
                           f"training text: {_show(missing)}")
        if fast:
            cap = FAST_WINDOWS * self.recipe.train.batch_size * L + 1
            train_text, val_text, test_text = (t[:cap] for t in (train_text, val_text, test_text))
        splits = [windows(np.asarray(vocab.encode(t), np.int32), L, rows)
                  for t in (train_text, val_text, test_text)]
        train, val, test = splits
        pre = {"vocab": vocab.to_json(), "seq_len": L, "source": info["source"]}
        info = {**info, "vocab_size": len(vocab), "train_chars": len(train_text),
                "val_chars": len(val_text), "test_chars": len(test_text),
                "train_windows": len(train), "val_windows": len(val), "test_windows": len(test)}
        return Prepared(train, val, test, pre, hash_arrays(train.x, val.x, test.x),
                        info=info, extra={"vocab": vocab})

    # ---------------------------------------------------------------------------- model
    def build(self, prepared: Prepared, body: list, batch_size: int):
        return char_network(body, len(_vocab_from(prepared.preprocessing)),
                            self.options.embedding_dim, batch_size)

    def compile_args(self) -> dict[str, Any]:
        import keras

        return {"loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                "metrics": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]}

    def derived_metrics(self, logs: dict[str, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        for prefix in ("", "val_"):
            loss = logs.get(f"{prefix}loss")
            if loss is not None and math.isfinite(loss):
                out.update(bpc_metrics(loss, prefix))
        return out

    # --------------------------------------------------------------------- after training
    def epoch_artifacts(self, model, prepared: Prepared, epoch: int) -> dict[str, str]:
        o = self.options
        if o.sample_length == 0:
            return {}
        vocab = _vocab_from(prepared.preprocessing)
        cache = getattr(self, "_sampler", None)
        if cache is None or cache[0] is not model:
            self._sampler = (model, make_sampler(model))
        text = sample_text(self._sampler[1], vocab, o.sample_prime, o.sample_length,
                           o.sample_temperature, self.recipe.train.seed, 1)[0]
        head = (f"# epoch {epoch + 1}, temperature {o.sample_temperature}, "
                f"seed {self.recipe.train.seed}, prime {o.sample_prime!r}\n\n")
        return {"sample.txt": head + text}

    def evaluate(self, model, prepared: Prepared, batch_size: int) -> dict[str, float]:
        """Test metrics; with ``carry_state`` also ``window_loss`` / ``window_bpc``: the same
        test windows each read from a zero state, as a model trained without carried state
        is measured (to compare with one)."""
        result = super().evaluate(model, prepared, batch_size)
        if self.stateful:
            fresh = self.exported(model, prepared)
            fresh.compile(**self.compile_args())
            window = super().evaluate(fresh, prepared, batch_size)
            result.update({"window_loss": window["loss"], "window_bpc": window["bpc"]})
        return result

    def exported(self, model, prepared: Prepared):
        """With ``carry_state``, a copy that is not stateful and takes any batch size: what
        generation and users' own ``predict`` calls need.  Its outputs are the trained
        model's, started from a zero state."""
        if not self.stateful:
            return model
        from zoo.registry import build

        body = build(self.recipe.model, self.recipe.params, return_sequences=True)
        copy = self.build(prepared, body, None)
        copy.set_weights(model.get_weights())
        return copy

    def baseline(self, prepared: Prepared) -> dict[str, float]:
        """Every character of the vocabulary equally likely: log2(vocabulary size) bits."""
        size = len(_vocab_from(prepared.preprocessing))
        return {"bpc": math.log2(size), "loss": math.log(size)}

    def input_example(self, prepared: Prepared) -> Any:
        return [self.options.sample_prime]


def char_network(body: list, vocab_size: int, embedding_dim: int, batch_size: int | None = None):
    """ids (batch, steps) -> Embedding -> body -> Dense logits (batch, steps, vocab), float32."""
    return sequence_network(body, name="char_rnn", input_name="chars", outputs=vocab_size,
                            head_name="logits", vocab_size=vocab_size, embedding_dim=embedding_dim,
                            batch_shape=None if batch_size is None else (batch_size, None))


def make_sampler(model):
    from zoo.sampling import Sampler

    return Sampler(model, banned=(0,))  # id 0: a character outside the vocabulary


def check_generate_args(vocab, prime: Any, length: Any, temperature: Any, n: Any,
                        seed: Any) -> None:
    if not isinstance(prime, str) or not prime:
        raise ZooError(f"generate: prime must be a non-empty string, got {prime!r}")
    missing = _unknown(vocab, prime)
    if missing:
        raise ZooError(f"generate: prime has characters the model never saw in training: "
                       f"{_show(missing)}")
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 0 \
            or length > MAX_LENGTH:
        raise ZooError(f"generate: length must be a whole number from 0 to {MAX_LENGTH:,}, "
                       f"got {length!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.floating)) \
            or not math.isfinite(temperature) or temperature < 0:
        raise ZooError(f"generate: temperature must be a number >= 0 (0 is greedy), "
                       f"got {temperature!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ZooError(f"generate: n must be a whole number >= 1, got {n!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or seed < 0):
        raise ZooError(f"generate: seed must be a whole number >= 0 or None, got {seed!r}")


def sample_text(sampler, vocab, prime: str, length: int, temperature: float,
                seed: int | None, n: int) -> list[str]:
    """``n`` texts, each the prime followed by ``length`` generated characters."""
    check_generate_args(vocab, prime, length, temperature, n, seed)
    if seed is None:
        seed = random.SystemRandom().randrange(2**62)
    ids = np.asarray(vocab.encode(prime), np.int32)
    out = sampler.sample(np.tile(ids[None, :], (n, 1)), int(length), float(temperature),
                         int(seed))
    return [prime + vocab.decode(row.tolist()) for row in out]
