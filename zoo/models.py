"""The built-in model builders: Keras SimpleRNN, GRU, LSTM, zoo's TanhRNN, and their
bidirectional forms.  Each returns the recurrent body as a list of layers; the task puts its
input and head around it.  Keras is imported inside the builders so that listing stays fast."""

from __future__ import annotations

from typing import Any

from zoo.registry import register_model


def _layer_class(kind: str):
    """zoo's layer for a kind: the Keras layer of that name with zoo's CPU fast path (same
    arguments, weights and results), or zoo's TanhRNN."""
    from zoo import layers

    return getattr(layers, kind)


def _stack(kind: str, *, bidirectional: bool, layers: int, units: int, return_sequences: bool,
           stateful: bool, merge_mode: str = "concat", **layer_kwargs: Any) -> list:
    import keras

    cls = _layer_class(kind)
    body = []
    for i in range(layers):
        last = i == layers - 1
        rnn = cls(units, return_sequences=return_sequences or not last, stateful=stateful,
                  **layer_kwargs)
        if bidirectional:
            rnn = keras.layers.Bidirectional(rnn, merge_mode=merge_mode)
        body.append(rnn)
    return body


_SPECS = {
    # name: (layer class, fused cuDNN kernel possible, description)
    "simple-rnn": ("SimpleRNN", False, "Keras SimpleRNN: the plain tanh recurrence"),
    "gru": ("GRU", True, "Keras GRU: gated recurrent unit (reset_after, cuDNN-compatible)"),
    "lstm": ("LSTM", True, "Keras LSTM: long short-term memory"),
    "tanh-rnn": ("TanhRNN", False, "zoo's from-scratch tanh recurrence, input projection hoisted"),
}


_COMMON = {"units": 128, "layers": 1, "dropout": 0.0, "recurrent_dropout": 0.0}
_EXTRA = {
    "SimpleRNN": {"activation": "tanh"},
    "TanhRNN": {"activation": "tanh"},
    "GRU": {"unroll": False},
    "LSTM": {"unroll": False},
}


def _register(name: str, kind: str, cudnn: bool, description: str, bidirectional: bool) -> None:
    label = f"Bidirectional({kind})" if bidirectional else kind
    desc = f"both directions of {description}" if bidirectional else description
    params = {**_COMMON, **_EXTRA[kind], **({"merge_mode": "concat"} if bidirectional else {})}

    def build(*, return_sequences: bool = False, stateful: bool = False, units: int,
              layers: int, **layer_kwargs: Any) -> list:
        return _stack(kind, bidirectional=bidirectional, layers=layers, units=units,
                      return_sequences=return_sequences, stateful=stateful, **layer_kwargs)

    build.__name__ = name.replace("-", "_")
    register_model(name, layer=label, description=desc, cudnn=cudnn, params=params)(build)


for _name, (_kind, _cudnn, _desc) in _SPECS.items():
    _register(_name, _kind, _cudnn, _desc, bidirectional=False)
    _register(f"bi-{_name}", _kind, _cudnn, _desc, bidirectional=True)
