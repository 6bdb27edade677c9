"""The built-in model builders: Keras SimpleRNN, GRU, LSTM, zoo's TanhRNN, and their
bidirectional forms.  Each returns the recurrent body as a list of layers; the task puts its
input and head around it.  Each declares its hyperparameters as a schema next to it.  Keras is
imported inside the builders so that listing and validating stay fast.

This module registers through zoo's own ``zoo.models`` entry point, like any plug-in."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from zoo.registry import Params, register_model

# The activations of keras.activations that map a tensor to one of the same shape, by name
# (checked against Keras in the tests), so validation needs no Keras import.
Activation = Literal[
    "celu", "elu", "exponential", "gelu", "hard_shrink", "hard_sigmoid", "hard_silu",
    "hard_swish", "hard_tanh", "leaky_relu", "linear", "log_sigmoid", "mish", "relu", "relu6",
    "selu", "sigmoid", "silu", "soft_shrink", "softplus", "softsign", "sparse_plus",
    "sparse_sigmoid", "squareplus", "swish", "tanh", "tanh_shrink",
]
MergeMode = Literal["concat", "sum", "mul", "ave"]

# Upper bounds that keep a recipe's model within reach of one machine: 2 layers of 8192 LSTM
# units are about 1.1 billion weights (4 GB in float32, three times that while training).
MAX_UNITS = 8192
MAX_LAYERS = 32


class RecurrentParams(Params):
    units: int = Field(128, ge=1, le=MAX_UNITS, description="units (state size) of each layer")
    layers: int = Field(1, ge=1, le=MAX_LAYERS, description="recurrent layers, stacked")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on each layer's inputs")
    recurrent_dropout: float = Field(0.0, ge=0.0, lt=1.0,
                                     description="dropout on the recurrent state (not cuDNN)")


class TanhParams(RecurrentParams):
    activation: Activation = Field("tanh", description="the recurrence's activation")


class GatedParams(RecurrentParams):
    activation: Activation = Field("tanh", description="candidate/output activation (tanh: cuDNN)")
    recurrent_activation: Activation = Field("sigmoid", description="gate activation (sigmoid: cuDNN)")
    unroll: bool = Field(False, description="unroll the loop in the graph (not cuDNN)")


class BiTanhParams(TanhParams):
    merge_mode: MergeMode = Field("concat", description="how the two directions are combined")


class BiGatedParams(GatedParams):
    merge_mode: MergeMode = Field("concat", description="how the two directions are combined")


def _stack(kind: str, hp: dict, return_sequences: bool, stateful: bool,
           merge_mode: str | None = None) -> list:
    """``layers`` recurrent layers of class ``kind``; every one but the last returns sequences."""
    import keras

    import zoo.layers

    cls = getattr(zoo.layers, kind)   # zoo's layers: Keras's own, with a CPU fast path
    hp = dict(hp)
    units, layers = hp.pop("units"), hp.pop("layers")
    body = []
    for i in range(layers):
        rnn = cls(units, return_sequences=return_sequences or i < layers - 1, stateful=stateful, **hp)
        body.append(keras.layers.Bidirectional(rnn, merge_mode=merge_mode) if merge_mode else rnn)
    return body


@register_model("simple-rnn", layer="SimpleRNN", params=TanhParams,
                description="Keras SimpleRNN: the plain tanh recurrence")
def simple_rnn(*, return_sequences=False, stateful=False, **hp) -> list:
    return _stack("SimpleRNN", hp, return_sequences, stateful)


@register_model("gru", layer="GRU", cudnn=True, params=GatedParams,
                description="Keras GRU: gated recurrent unit (reset_after, cuDNN-compatible)")
def gru(*, return_sequences=False, stateful=False, **hp) -> list:
    return _stack("GRU", hp, return_sequences, stateful)


@register_model("lstm", layer="LSTM", cudnn=True, params=GatedParams,
                description="Keras LSTM: long short-term memory")
def lstm(*, return_sequences=False, stateful=False, **hp) -> list:
    return _stack("LSTM", hp, return_sequences, stateful)


@register_model("tanh-rnn", layer="TanhRNN", params=TanhParams,
                description="zoo's from-scratch tanh recurrence, input projection hoisted")
def tanh_rnn(*, return_sequences=False, stateful=False, **hp) -> list:
    return _stack("TanhRNN", hp, return_sequences, stateful)


@register_model("bi-simple-rnn", layer="Bidirectional(SimpleRNN)", params=BiTanhParams,
                description="both directions of Keras SimpleRNN: the plain tanh recurrence")
def bi_simple_rnn(*, return_sequences=False, stateful=False, merge_mode="concat", **hp) -> list:
    return _stack("SimpleRNN", hp, return_sequences, stateful, merge_mode)


@register_model("bi-gru", layer="Bidirectional(GRU)", cudnn=True, params=BiGatedParams,
                description="both directions of Keras GRU: gated recurrent unit (reset_after, "
                            "cuDNN-compatible)")
def bi_gru(*, return_sequences=False, stateful=False, merge_mode="concat", **hp) -> list:
    return _stack("GRU", hp, return_sequences, stateful, merge_mode)


@register_model("bi-lstm", layer="Bidirectional(LSTM)", cudnn=True, params=BiGatedParams,
                description="both directions of Keras LSTM: long short-term memory")
def bi_lstm(*, return_sequences=False, stateful=False, merge_mode="concat", **hp) -> list:
    return _stack("LSTM", hp, return_sequences, stateful, merge_mode)


@register_model("bi-tanh-rnn", layer="Bidirectional(TanhRNN)", params=BiTanhParams,
                description="both directions of zoo's from-scratch tanh recurrence, input "
                            "projection hoisted")
def bi_tanh_rnn(*, return_sequences=False, stateful=False, merge_mode="concat", **hp) -> list:
    return _stack("TanhRNN", hp, return_sequences, stateful, merge_mode)
