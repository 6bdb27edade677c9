"""zoo's recurrent layers: Keras's LSTM, GRU and SimpleRNN with a CPU fast path, and TanhRNN.

Every layer here is a ``keras.layers.RNN`` over a cell, so ``RNN`` owns state, masking,
``go_backwards``, ``stateful``, ``return_state``, dropout masks and config handling; the fast
path is an override of the loop, ``inner_loop``, as Keras's own ``LSTM.inner_loop`` is for
cuDNN:

* ``LSTM``, ``GRU``, ``SimpleRNN``: subclasses of the Keras layers of the same names with the
  same arguments, the same weights (same variables, shapes and order, on the same cell) and the
  same results.  Weights move between them and the Keras layers with ``set_weights``; models
  saved with the Keras layers load and predict as before.
* ``TanhRNN``: zoo's tanh recurrence ``h_t = activation(x_t . kernel + h_{t-1} .
  recurrent_kernel + bias)``, a drop-in for ``keras.layers.SimpleRNN`` (``TanhRNNCell`` is its
  cell) that also takes ``zero_output_for_mask``.  It runs on every Keras 3 backend.

The fast path (``zoo.fast_rnn``) is taken with the TensorFlow backend on a machine with no
visible GPU, for a static number of time steps (at most ``_UNROLL_MAX_STEPS``, or any with
``unroll=True``), and for the configurations it computes exactly: tanh activation and sigmoid
recurrent activation (LSTM, GRU), GRU ``reset_after=True``, and no recurrent dropout in
training.  Everything else runs Keras's own loop (on a GPU, LSTM and GRU then take cuDNN as
before).  ``fast_path_reason(layer, ...)`` tells which way a call goes.  Within the fast path,
unmasked calls run their steps in zoo's native ops where those build (``zoo.native``).
"""

from __future__ import annotations

import keras
from keras import activations, ops

__all__ = ["LSTM", "GRU", "SimpleRNN", "TanhRNN", "TanhRNNCell", "fast_path_reason"]

# Static sequences of at most this many steps take the fast path's unrolled loop (any static
# length with unroll=True); longer or dynamic-length ones run Keras's loop.
_UNROLL_MAX_STEPS = 200

# The fast path may split the batch into this many independent parts (of at least
# _MIN_PART_ROWS rows each), whose recurrences a multi-core CPU then runs side by side.  Only
# layers of at least _SPLIT_MIN_UNITS units are split: below that a step's products are so
# small that the split's extra operations cost more than the second core gives back
# (measured on a 2-core CPU, bench/ab_fast_rnn.py: 128 units, batch 50 ran as fast or faster
# in one part, with about 2-12 % less CPU time).
_BATCH_PARTS = 2
_MIN_PART_ROWS = 8
_SPLIT_MIN_UNITS = 256

# False sends every call through Keras's loop (autodiff through the cell): the tests compare.
_HANDWRITTEN_GRADIENT = True

_TANH = {activations.tanh, ops.tanh}
_SIGMOID = {activations.sigmoid, ops.sigmoid}


def _gpu_visible() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def fast_path_reason(layer, sequences, training=False):
    """None when a call of ``layer`` on ``sequences`` takes the CPU fast path, else why not
    (a short phrase)."""
    if not _HANDWRITTEN_GRADIENT:
        return "fast path switched off"
    if keras.backend.backend() != "tensorflow":
        return f"backend {keras.backend.backend()}"
    if getattr(layer, "use_cudnn", "auto") is True:
        return "use_cudnn=True"
    steps = sequences.shape[1]
    if steps is None or steps == 0:
        return "dynamic number of time steps"
    if steps > _UNROLL_MAX_STEPS and not layer.unroll:
        return f"{steps} steps > {_UNROLL_MAX_STEPS}"
    cell = layer.cell
    if cell.activation not in _TANH:
        return "activation is not tanh"
    if hasattr(cell, "recurrent_activation") and cell.recurrent_activation not in _SIGMOID:
        return "recurrent_activation is not sigmoid"
    if getattr(cell, "reset_after", True) is False:
        return "reset_after=False"
    if training and cell.recurrent_dropout > 0:
        return "recurrent dropout in training"
    if training and cell.dropout > 0 and getattr(cell, "implementation", 2) != 2:
        return "dropout with implementation=1"
    if _gpu_visible():
        return "a GPU is visible"
    if layer.compute_dtype == "float16":
        # CPU float16 kernels are slow: measured 196 s a step against Keras's 2.8 s (2 x 512
        # LSTM, windows of 100, batches of 128, mixed_float16; bfloat16 was as fast as float32)
        return "float16 on a CPU"
    return None


class _FastLoop:
    """Mixin for a Keras RNN layer: ``inner_loop`` takes zoo's CPU fast path where it can."""

    _fast_kind = None  # "lstm", "gru" or "simple"

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if isinstance(mask, (list, tuple)):
            mask = mask[0] if mask else None
        if fast_path_reason(self, sequences, training) is not None:
            return super().inner_loop(sequences, initial_state, mask=mask, training=training)
        from zoo import fast_rnn

        cell = self.cell
        if not isinstance(initial_state, (list, tuple)):
            initial_state = [initial_state]
        x = sequences
        if training and cell.dropout > 0:
            dp_mask = cell.get_dropout_mask(sequences[:, 0, :])
            x = x * ops.expand_dims(dp_mask, 1)
        return fast_rnn.run(
            self._fast_kind, x, list(initial_state), mask,
            kernel=cell.kernel, recurrent_kernel=cell.recurrent_kernel, bias=cell.bias,
            go_backwards=self.go_backwards, return_sequences=self.return_sequences,
            zero_output_for_mask=self.zero_output_for_mask,
            max_steps=None if self.unroll else _UNROLL_MAX_STEPS,
            batch_parts=_BATCH_PARTS if cell.units >= _SPLIT_MIN_UNITS else 1,
            min_part_rows=_MIN_PART_ROWS,
        )


@keras.saving.register_keras_serializable(package="zoo")
class LSTM(_FastLoop, keras.layers.LSTM):
    """``keras.layers.LSTM`` with zoo's CPU fast path (see the module's documentation)."""

    _fast_kind = "lstm"


@keras.saving.register_keras_serializable(package="zoo")
class GRU(_FastLoop, keras.layers.GRU):
    """``keras.layers.GRU`` with zoo's CPU fast path (see the module's documentation)."""

    _fast_kind = "gru"


@keras.saving.register_keras_serializable(package="zoo")
class SimpleRNN(_FastLoop, keras.layers.SimpleRNN):
    """``keras.layers.SimpleRNN`` with zoo's CPU fast path (see the module's documentation)."""

    _fast_kind = "simple"


@keras.saving.register_keras_serializable(package="zoo")
class TanhRNNCell(keras.layers.SimpleRNNCell):
    """The cell of ``TanhRNN``: one step ``h = activation(x . kernel + h . recurrent_kernel +
    bias)``, with the weights, initializers and dropout of ``keras.layers.SimpleRNNCell``."""

    def __init__(self, units, **kwargs):
        if not isinstance(units, int) or isinstance(units, bool) or units <= 0:
            raise ValueError(
                f"TanhRNN expects `units` to be a positive integer, got units={units!r}"
            )
        super().__init__(units, **kwargs)

    def load_own_variables(self, store):
        if getattr(self, "_zoo_loaded_by_layer", False) and not len(store.keys()):
            return  # a file saved by the earlier TanhRNN: the layer has loaded the weights
        super().load_own_variables(store)


_CELL_ARGS = ("activation", "use_bias", "kernel_initializer", "recurrent_initializer",
              "bias_initializer", "kernel_regularizer", "recurrent_regularizer",
              "bias_regularizer", "kernel_constraint", "recurrent_constraint",
              "bias_constraint", "dropout", "recurrent_dropout", "seed")


@keras.saving.register_keras_serializable(package="zoo")
class TanhRNN(_FastLoop, keras.layers.RNN):
    """Fully-connected recurrence ``h_t = activation(x_t . kernel + h_{t-1} . recurrent_kernel
    + bias)``: ``keras.layers.RNN`` over a ``TanhRNNCell``, a drop-in for
    ``keras.layers.SimpleRNN`` (the same arguments plus ``zero_output_for_mask``, the same
    weights in the same order), with zoo's fast loop on a CPU.

    Call arguments: ``sequences`` (batch, timesteps, features); ``initial_state`` (a tensor or
    a one-element list, (batch, units)); ``mask`` (batch, timesteps), True where a step is
    used; ``training``.
    """

    _fast_kind = "simple"

    def __init__(self, units, activation="tanh", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", kernel_regularizer=None, recurrent_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
                 recurrent_constraint=None, bias_constraint=None, dropout=0.0,
                 recurrent_dropout=0.0, return_sequences=False, return_state=False,
                 go_backwards=False, stateful=False, unroll=False, seed=None,
                 zero_output_for_mask=False, **kwargs):
        kwargs.pop("cell", None)
        cell = TanhRNNCell(
            units, activation=activation, use_bias=use_bias,
            kernel_initializer=kernel_initializer, recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer, kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer, bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint, recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint, dropout=dropout,
            recurrent_dropout=recurrent_dropout, seed=seed, dtype=kwargs.get("dtype"),
            trainable=kwargs.get("trainable", True), name="tanh_rnn_cell",
        )
        super().__init__(cell, return_sequences=return_sequences, return_state=return_state,
                         go_backwards=go_backwards, stateful=stateful, unroll=unroll,
                         zero_output_for_mask=zero_output_for_mask,
                         activity_regularizer=activity_regularizer, **kwargs)

    def _check_rank(self, shape):
        shape = tuple(shape) if shape is not None else None
        if shape is None or len(shape) != 3:
            rank = "unknown rank" if shape is None else f"rank {len(shape)}"
            raise ValueError(
                f"TanhRNN layer '{self.name}' expects a 3-D input (batch, timesteps, features), "
                f"got an input of {rank} with shape {shape}"
            )

    def build(self, sequences_shape, initial_state_shape=None):
        self._check_rank(sequences_shape)
        super().build(sequences_shape, initial_state_shape)

    def compute_output_shape(self, sequences_shape, initial_state_shape=None):
        self._check_rank(sequences_shape)
        return super().compute_output_shape(sequences_shape, initial_state_shape)

    def call(self, sequences, initial_state=None, mask=None, training=False):
        self._check_rank(sequences.shape)
        return super().call(sequences, mask=mask, training=training,
                            initial_state=initial_state)

    def reset_state(self, states=None):
        """Sets the state of a stateful layer to zeros, or to ``states`` when given (a tensor
        or a one-element list, (batch, units))."""
        if self.states is None or states is None:
            return super().reset_state()
        if not isinstance(states, (list, tuple)):
            states = [states]
        if len(states) != 1:
            raise ValueError(f"TanhRNN has one state; reset_state got {len(states)} values")
        value = ops.convert_to_tensor(states[0], dtype=self.states[0].dtype)
        if tuple(value.shape) != tuple(self.states[0].shape):
            raise ValueError(f"TanhRNN state has shape {tuple(self.states[0].shape)}, "
                             f"reset_state got shape {tuple(value.shape)}")
        self.states[0].assign(value)

    def load_own_variables(self, store):
        """Reads files saved by zoo's earlier TanhRNN (a plain layer whose weights sat on the
        layer itself) as well as the current layout (the weights on the cell)."""
        if len(store.keys()) and not self._trainable_variables:
            weights = [store[str(i)] for i in range(len(store.keys()))]
            if len(weights) != len(self.cell.weights):
                raise ValueError(f"TanhRNN layer '{self.name}' expected "
                                 f"{len(self.cell.weights)} variables, the file has "
                                 f"{len(weights)}")
            for variable, value in zip(self.cell.weights, weights):
                variable.assign(value)
            self.cell._zoo_loaded_by_layer = True
            return
        super().load_own_variables(store)

    def get_config(self):
        config = {"units": self.cell.units}
        cell_config = self.cell.get_config()
        for key in _CELL_ARGS:
            config[key] = cell_config[key]
        base = super().get_config()
        del base["cell"]
        config["activity_regularizer"] = keras.regularizers.serialize(
            self.activity_regularizer)
        return {**base, **config}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _read_through(name):
    return property(lambda self: getattr(self.cell, name),
                    doc=f"The cell's ``{name}``.")


for _name in ("units", "kernel", "recurrent_kernel", "bias") + _CELL_ARGS:
    setattr(TanhRNN, _name, _read_through(_name))
