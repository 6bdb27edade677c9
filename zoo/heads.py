"""Heads that read every step of a recurrent body: attention pooling (masked), written with
``keras.ops`` so it runs on any backend and saves in the ``.keras`` format."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="zoo")
class AttentionPooling(keras.layers.Layer):
    """A weighted mean over the steps: one learnt score per step (``tanh(h W) . v``), a softmax
    over the real (unmasked) steps, and the sum of the steps by those weights."""

    def __init__(self, units: int = 64, **kwargs) -> None:
        super().__init__(**kwargs)
        self.units = units
        self.supports_masking = True

    def build(self, input_shape):
        features = input_shape[-1]
        self.w = self.add_weight(name="w", shape=(features, self.units), initializer="glorot_uniform")
        self.v = self.add_weight(name="v", shape=(self.units,), initializer="glorot_uniform")

    def call(self, inputs, mask=None):
        scores = ops.tensordot(ops.tanh(ops.tensordot(inputs, self.w, 1)), self.v, 1)
        if mask is not None:
            scores = ops.where(mask, scores, ops.full_like(scores, -1e9))
        weights = ops.softmax(scores, axis=-1)
        return ops.sum(inputs * ops.expand_dims(weights, -1), axis=1)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "units": self.units}
