"""TanhRNN (zoo.layers) as a drop-in for keras.layers.SimpleRNN.

SimpleRNN's weights are copied into TanhRNN and the outputs compared (1e-5) in every mode.
TanhRNN runs an unrolled loop when the number of time steps is static and small, else a scan;
the unrolled loop may split the batch into independent parts.  The tests run each way:
"unrolled" (one part), "unrolled-split" (three uneven parts) and "scan".
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo import layers as zoo_layers
from zoo.layers import TanhRNN

ATOL = 1e-5
UNITS = 5
FEATURES = 3
BATCH = 4
STEPS = 7


def use_path(monkeypatch, path):
    if path == "scan":
        monkeypatch.setattr(zoo_layers, "_UNROLL_MAX_STEPS", 0)
    elif path == "unrolled":
        monkeypatch.setattr(zoo_layers, "_BATCH_PARTS", 1)
    elif path == "unrolled-split":
        monkeypatch.setattr(zoo_layers, "_BATCH_PARTS", 3)
        monkeypatch.setattr(zoo_layers, "_MIN_PART_ROWS", 1)
        monkeypatch.setattr(zoo_layers, "_SPLIT_MIN_UNITS", 1)
    else:
        raise ValueError(path)


@pytest.fixture(params=["unrolled", "unrolled-split", "scan"])
def path(request, monkeypatch):
    use_path(monkeypatch, request.param)
    return request.param


def _data(seed=0, batch=BATCH, steps=STEPS, features=FEATURES):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, steps, features)).astype("float32")
    h0 = rng.normal(scale=0.5, size=(batch, UNITS)).astype("float32")
    mask = np.ones((batch, steps), dtype=bool)
    mask[0, 5:] = False  # right padding
    mask[1, :2] = False  # left padding
    mask[2, 3] = False  # a hole
    mask[3, :] = False  # nothing at all
    return x, h0, mask


def _random_weights(layer, seed):
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(scale=0.6, size=w.shape).astype("float32")
                       for w in layer.get_weights()])


def _pair(input_shape=(None, None, FEATURES), weight_seed=1, **kwargs):
    simple = keras.layers.SimpleRNN(UNITS, **kwargs)
    tanh = TanhRNN(UNITS, **kwargs)
    simple.build(input_shape)
    tanh.build(input_shape)
    _random_weights(simple, weight_seed)
    tanh.set_weights(simple.get_weights())
    return simple, tanh


def _as_list(out):
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _assert_close(a, b, atol=ATOL):
    a, b = _as_list(a), _as_list(b)
    assert len(a) == len(b)
    for p, q in zip(a, b):
        p, q = keras.ops.convert_to_numpy(p), keras.ops.convert_to_numpy(q)
        assert p.shape == q.shape
        np.testing.assert_allclose(p, q, rtol=0, atol=atol)


# --- the same layer -------------------------------------------------------------------------


def test_same_weights_in_the_same_order():
    simple, tanh = _pair()
    assert [w.shape for w in tanh.weights] == [w.shape for w in simple.weights]
    assert [w.name for w in tanh.weights] == ["kernel", "recurrent_kernel", "bias"]
    assert [w.name for w in simple.weights] == ["kernel", "recurrent_kernel", "bias"]
    assert tanh.weights[0].shape == (FEATURES, UNITS)
    assert len(tanh.trainable_weights) == 3 and not tanh.non_trainable_weights
    s2, t2 = _pair(use_bias=False)
    assert [w.shape for w in t2.weights] == [w.shape for w in s2.weights]


MODES = {
    "last": {},
    "sequences": {"return_sequences": True},
    "state": {"return_state": True},
    "sequences+state": {"return_sequences": True, "return_state": True},
    "backwards": {"go_backwards": True},
    "backwards+sequences+state": {"go_backwards": True, "return_sequences": True,
                                  "return_state": True},
    "zero-output+sequences": {"zero_output_for_mask": True, "return_sequences": True},
    "zero-output+last": {"zero_output_for_mask": True, "return_state": True},
    "relu": {"activation": "relu", "return_sequences": True},
    "linear+backwards": {"activation": None, "go_backwards": True, "return_sequences": True},
    "no-bias": {"use_bias": False, "return_sequences": True, "return_state": True},
}


@pytest.mark.parametrize("mode", MODES)
def test_equals_simple_rnn(mode, path):
    x, h0, mask = _data()
    simple, tanh = _pair(**MODES[mode])
    for m in (None, mask):
        for init in (None, h0):
            expected = simple(x, mask=m, initial_state=init)
            got = tanh(x, mask=m, initial_state=init)
            _assert_close(got, expected)
    # The weights matter: other weights give other outputs.
    _random_weights(tanh, seed=99)
    with pytest.raises(AssertionError):
        _assert_close(tanh(x, mask=mask), simple(x, mask=mask))


def test_batch_parts():
    from zoo import fast_rnn

    assert fast_rnn._bounds(50, 2, 8) == [(0, 25), (25, 50)]
    assert fast_rnn._bounds(4, 2, 8) == [(0, 4)]  # too small to split


def test_dynamic_batch_size(path):
    """A graph traced for any batch size (the unrolled loop then splits the batch with
    dynamic bounds, into parts that may be empty) gives SimpleRNN's results for each size."""
    x, h0, mask = _data(seed=2)
    simple, tanh = _pair(return_sequences=True, return_state=True)
    spec = [tf.TensorSpec((None, STEPS, FEATURES)), tf.TensorSpec((None, UNITS)),
            tf.TensorSpec((None, STEPS), tf.bool)]
    run = {layer: tf.function(lambda x, h, m, layer=layer: layer(x, initial_state=h, mask=m),
                              input_signature=spec) for layer in (simple, tanh)}
    for rows in (4, 1, 3):
        args = (x[:rows], h0[:rows], mask[-rows:])
        _assert_close(run[tanh](*args), run[simple](*args))


def test_unroll_true_unrolls_any_static_length(monkeypatch):
    monkeypatch.setattr(zoo_layers, "_UNROLL_MAX_STEPS", 2)  # 7 steps: a scan unless unroll
    x, h0, mask = _data(seed=3)
    simple, tanh = _pair(unroll=True, return_sequences=True)
    _assert_close(tanh(x, mask=mask, initial_state=h0), simple(x, mask=mask, initial_state=h0))
    run = tf.function(tanh, input_signature=[tf.TensorSpec((None, None, FEATURES))])
    with pytest.raises(ValueError, match="(?i)cannot unroll"):
        run.get_concrete_function()


def test_masked_outputs_follow_keras_rules(path):
    """Masked steps carry the state; outputs repeat the previous output (zeros before the first
    unmasked step), or are zeros with zero_output_for_mask."""
    x, h0, mask = _data()
    _, tanh = _pair(return_sequences=True, return_state=True)
    seq, state = [keras.ops.convert_to_numpy(t) for t in tanh(x, mask=mask, initial_state=h0)]
    np.testing.assert_array_equal(seq[0, 5:], np.repeat(seq[0, 4:5], 2, axis=0))
    np.testing.assert_array_equal(seq[1, :2], 0.0)
    np.testing.assert_array_equal(seq[2, 3], seq[2, 2])
    np.testing.assert_array_equal(seq[3], 0.0)
    np.testing.assert_array_equal(state[3], h0[3])  # fully masked: the initial state
    np.testing.assert_array_equal(state[0], seq[0, 4])
    _, zero = _pair(return_sequences=True, zero_output_for_mask=True)
    out = keras.ops.convert_to_numpy(zero(x, mask=mask, initial_state=h0))
    np.testing.assert_array_equal(out[~mask], 0.0)
    assert np.all(np.abs(out[mask]) > 0)


@pytest.mark.parametrize("return_state", [False, True])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_compute_mask_like_keras(return_sequences, return_state):
    x, _, mask = _data()
    simple, tanh = _pair(return_sequences=return_sequences, return_state=return_state)
    expected = simple.compute_mask(x, mask)
    got = tanh.compute_mask(x, mask)
    if return_state:
        assert isinstance(got, list) and len(got) == 2 and got[1] is None
        expected, got = expected[0], got[0]
    if return_sequences:
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), mask)
    else:
        assert got is None and expected is None


def _model(layer_cls, steps, **kwargs):
    inputs = keras.Input((steps,), dtype="int32")
    h = keras.layers.Embedding(11, FEATURES, mask_zero=True)(inputs)
    h = layer_cls(UNITS, return_sequences=True, **kwargs)(h)
    h = layer_cls(UNITS, go_backwards=True, return_sequences=True, **kwargs)(h)
    h = layer_cls(UNITS, **kwargs)(h)
    return keras.Model(inputs, h)


@pytest.mark.parametrize("steps", [STEPS, None], ids=["static-steps", "dynamic-steps"])
def test_mask_from_embedding_propagates_through_a_stack(steps):
    tokens = np.random.default_rng(3).integers(1, 11, size=(BATCH, STEPS))
    tokens[0, 4:] = 0
    tokens[1, :3] = 0
    tokens[2, 2] = 0
    simple = _model(keras.layers.SimpleRNN, steps)
    tanh = _model(TanhRNN, steps)
    _random_weights(simple, seed=4)
    tanh.set_weights(simple.get_weights())
    _assert_close(tanh(tokens), simple(tokens))
    _assert_close(tanh.predict(tokens, verbose=0), simple.predict(tokens, verbose=0))


GRADIENT_MODES = {
    "sequences": {"return_sequences": True},
    "last": {},
    "backwards+sequences+state": {"go_backwards": True, "return_sequences": True,
                                  "return_state": True},
    "backwards+state": {"go_backwards": True, "return_state": True},
    "zero-output+sequences": {"zero_output_for_mask": True, "return_sequences": True},
}


def _gradients(layer, x, h0, mask, seed=6, training=False):
    """Gradients of a fixed random linear function of all the layer's outputs, for its
    weights, the initial state and the input."""
    rng = np.random.default_rng(seed)
    h0_var, x_var = tf.Variable(h0), tf.Variable(x)
    with tf.GradientTape() as tape:
        outputs = _as_list(layer(x_var, mask=mask, initial_state=h0_var, training=training))
        objective = sum(tf.reduce_sum(out * rng.normal(size=out.shape).astype("float32"))
                        for out in outputs)
    return outputs, tape.gradient(objective, layer.trainable_weights + [h0_var, x_var])


@pytest.mark.parametrize("mode", GRADIENT_MODES)
def test_gradients_equal_simple_rnn(mode, path, monkeypatch):
    """TanhRNN's gradients (hand-written for tanh) equal autodiff through SimpleRNN."""
    x, h0, mask = _data(seed=5)
    for m in (None, mask):
        simple, tanh = _pair(weight_seed=7, **GRADIENT_MODES[mode])
        _, expected = _gradients(simple, x, h0, m)
        _, got = _gradients(tanh, x, h0, m)
        for a, b in zip(expected, got):
            assert np.abs(np.asarray(a)).max() > 1e-2
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", GRADIENT_MODES)
def test_handwritten_gradient_equals_autodiff_through_the_loop(mode, path, monkeypatch):
    """The same with recurrent dropout (which SimpleRNN cannot share): the hand-written
    backward pass against autodiff through TanhRNN's own loop, same seed, same masks."""
    x, h0, mask = _data(seed=8)
    kwargs = dict(dropout=0.3, recurrent_dropout=0.4, seed=5, **GRADIENT_MODES[mode])
    for m in (None, mask):
        results = []
        for handwritten in (True, False):  # same batch split and seed both times
            monkeypatch.setattr(zoo_layers, "_HANDWRITTEN_GRADIENT", handwritten)
            _, tanh = _pair(weight_seed=9, **kwargs)
            outputs, grads = _gradients(tanh, x, h0, m, training=True)
            results.append(outputs + grads)
        for a, b in zip(*results):
            assert np.abs(np.asarray(a)).max() > 1e-3
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


# --- stateful -------------------------------------------------------------------------------


def _stateful_models(**kwargs):
    models = []
    for cls in (keras.layers.SimpleRNN, TanhRNN):
        inputs = keras.Input(batch_shape=(BATCH, STEPS, FEATURES))
        outputs = cls(UNITS, stateful=True, return_sequences=True, **kwargs)(inputs)
        models.append(keras.Model(inputs, outputs))
    _random_weights(models[0], seed=8)
    models[1].set_weights(models[0].get_weights())
    return models


def test_stateful_over_consecutive_batches_and_reset(path):
    simple, tanh = _stateful_models()
    assert len(tanh.weights) == 3  # the state is not a weight, as in Keras
    batches = [_data(seed=s)[0] for s in (10, 11, 12)]
    first = None
    for x in batches:
        expected, got = simple(x), tanh(x)
        _assert_close(got, expected)
        first = got if first is None else first
        _assert_close(tanh.layers[1].states[0].value, simple.layers[1].states[0].value)
    # After a reset both start again from zeros.
    for model in (simple, tanh):
        model.layers[1].reset_state()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(tanh.layers[1].states[0].value), 0)
    again = tanh(batches[0])
    _assert_close(again, first)
    _assert_close(again, simple(batches[0]))
    # Without a reset the state carries over: the same batch gives other outputs.
    assert not np.allclose(tanh(batches[0]), first, atol=1e-3)


def test_stateful_with_masks_and_predict(path):
    simple, tanh = _stateful_models(go_backwards=True)
    x, _, mask = _data(seed=13)
    _assert_close(tanh.predict(x, batch_size=BATCH, verbose=0),
                  simple.predict(x, batch_size=BATCH, verbose=0))
    for layer in (simple.layers[1], tanh.layers[1]):
        layer(x, mask=mask)
    _assert_close(tanh.layers[1].states[0].value, simple.layers[1].states[0].value)
    tanh.layers[1].reset_state(np.ones((BATCH, UNITS), "float32"))
    simple.layers[1].states[0].assign(np.ones((BATCH, UNITS), "float32"))
    _assert_close(tanh.layers[1](x), simple.layers[1](x))


def test_stateful_needs_a_static_batch_size():
    with pytest.raises(ValueError, match="batch size must be static"):
        TanhRNN(UNITS, stateful=True)(keras.Input((STEPS, FEATURES)))


def test_stateful_rejects_another_batch_size():
    layer = TanhRNN(UNITS, stateful=True)
    layer(keras.Input(batch_shape=(BATCH, STEPS, FEATURES)))
    with pytest.raises(ValueError, match="batch size"):
        layer(np.zeros((BATCH + 1, STEPS, FEATURES), "float32"))


# --- Bidirectional --------------------------------------------------------------------------


def _bidirectional_pair(input_shape=(None, None, FEATURES), merge_mode="concat", **kwargs):
    pair = []
    for cls in (keras.layers.SimpleRNN, TanhRNN):
        layer = keras.layers.Bidirectional(cls(UNITS, **kwargs), merge_mode=merge_mode)
        layer.build(input_shape)
        pair.append(layer)
    _random_weights(pair[0], seed=20)
    pair[1].set_weights(pair[0].get_weights())
    assert isinstance(pair[1].backward_layer, TanhRNN) and pair[1].backward_layer.go_backwards
    return pair


@pytest.mark.parametrize("merge_mode", ["concat", "sum", None])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_bidirectional_equals_simple_rnn(merge_mode, return_sequences, path):
    x, h0, mask = _data(seed=21)
    simple, tanh = _bidirectional_pair(merge_mode=merge_mode, return_sequences=return_sequences)
    assert tanh.backward_layer.zero_output_for_mask == return_sequences
    for m in (None, mask):
        _assert_close(tanh(x, mask=m), simple(x, mask=m))


def test_bidirectional_with_states(path):
    x, h0, mask = _data(seed=22)
    h1 = -h0
    simple, tanh = _bidirectional_pair(return_sequences=True, return_state=True)
    for m in (None, mask):
        expected = simple(x, mask=m, initial_state=[h0, h1])
        got = tanh(x, mask=m, initial_state=[h0, h1])
        assert len(got) == 3
        _assert_close(got, expected)


def test_bidirectional_stateful_and_reset(path):
    models = []
    for cls in (keras.layers.SimpleRNN, TanhRNN):
        inputs = keras.Input(batch_shape=(BATCH, STEPS, FEATURES))
        bi = keras.layers.Bidirectional(cls(UNITS, stateful=True, return_sequences=True))
        models.append(keras.Model(inputs, bi(inputs)))
    _random_weights(models[0], seed=23)
    models[1].set_weights(models[0].get_weights())
    simple, tanh = models
    assert len(tanh.layers[1].states) == 2
    xs = [_data(seed=s)[0] for s in (24, 25)]
    for x in xs:
        _assert_close(tanh(x), simple(x))
    for model in models:
        model.layers[1].reset_state()
    for x in xs:
        _assert_close(tanh(x), simple(x))


@pytest.mark.slow
def test_bidirectional_in_a_masked_model_trains():
    inputs = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(11, FEATURES, mask_zero=True)(inputs)
    h = keras.layers.Bidirectional(TanhRNN(UNITS, return_sequences=True))(h)
    h = keras.layers.Bidirectional(TanhRNN(UNITS))(h)
    model = keras.Model(inputs, keras.layers.Dense(1)(h))
    model.compile(optimizer="adam", loss="mse")
    tokens = np.random.default_rng(0).integers(0, 11, size=(8, 6))
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(tokens, np.ones((8, 1)), epochs=2, batch_size=4, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))


# --- dropout, regularizers ------------------------------------------------------------------


def test_dropout_in_training_only(path):
    x, h0, _ = _data(seed=30)
    simple, tanh = _pair(return_sequences=True, dropout=0.5, recurrent_dropout=0.5, seed=3)
    inference = tanh(x, training=False)
    _assert_close(inference, simple(x, training=False))
    train1 = keras.ops.convert_to_numpy(tanh(x, training=True))
    train2 = keras.ops.convert_to_numpy(tanh(x, training=True))
    assert np.all(np.isfinite(train1))
    assert not np.allclose(train1, inference, atol=1e-3)
    assert not np.allclose(train1, train2, atol=1e-3)


def test_regularizers_match_simple_rnn():
    x, _, _ = _data(seed=33)
    kwargs = dict(kernel_regularizer="l2", recurrent_regularizer=keras.regularizers.L1(0.01),
                  bias_regularizer="l1", return_sequences=True)
    simple, tanh = _pair(**kwargs)
    simple(x)
    tanh(x)
    assert len(tanh.losses) == len(simple.losses) == 3
    np.testing.assert_allclose(sorted(float(v) for v in tanh.losses),
                               sorted(float(v) for v in simple.losses), rtol=1e-5)


def test_activity_regularizer_applies_to_the_output():
    """Keras 3.15's SimpleRNN accepts activity_regularizer but drops it; TanhRNN applies it,
    as the argument's documentation says, to the layer's output (Keras divides it by the
    batch size)."""
    x, _, _ = _data(seed=34)
    _, tanh = _pair(activity_regularizer=keras.regularizers.L2(0.1), return_sequences=True)
    out = keras.ops.convert_to_numpy(tanh(x))
    assert len(tanh.losses) == 1
    np.testing.assert_allclose(float(tanh.losses[0]), 0.1 * np.sum(out ** 2) / BATCH,
                               rtol=1e-5)


# --- config, saving, errors -----------------------------------------------------------------


def test_get_config_round_trip():
    layer = TanhRNN(
        6, activation="relu", use_bias=False,
        kernel_initializer=keras.initializers.HeNormal(seed=1),
        recurrent_initializer="identity", bias_initializer="ones",
        kernel_regularizer=keras.regularizers.L2(0.01), recurrent_regularizer="l1",
        bias_regularizer="l2", activity_regularizer=keras.regularizers.L1(0.001),
        kernel_constraint="non_neg", recurrent_constraint=keras.constraints.MaxNorm(2.0),
        bias_constraint="unit_norm", dropout=0.1, recurrent_dropout=0.2,
        return_sequences=True, return_state=True, go_backwards=True, stateful=True,
        unroll=True, seed=3, zero_output_for_mask=True, name="custom", trainable=False,
    )
    config = layer.get_config()
    clone = TanhRNN.from_config(config)
    assert clone.get_config() == config
    assert config["units"] == 6 and config["go_backwards"] and config["seed"] == 3
    assert config["name"] == "custom" and config["trainable"] is False
    # Every key of SimpleRNN's config is there, so one config builds either layer.
    simple_config = keras.layers.SimpleRNN(6).get_config()
    assert set(simple_config) <= set(config)
    assert isinstance(TanhRNN.from_config(simple_config), TanhRNN)
    # Keras's (de)serialization finds the class by its registered name.
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is TanhRNN and restored.get_config() == config
    assert keras.saving.get_registered_name(TanhRNN) == "zoo>TanhRNN"


def test_save_and_load_keras_format_safe_mode(tmp_path):
    inputs = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(11, FEATURES, mask_zero=True)(inputs)
    h = TanhRNN(UNITS, return_sequences=True, dropout=0.1, name="tanh")(h)
    h = keras.layers.Bidirectional(TanhRNN(UNITS), name="bi")(h)
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    _random_weights(model, seed=40)
    tokens = np.random.default_rng(41).integers(0, 11, size=(BATCH, STEPS))
    expected = model.predict(tokens, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded.get_layer("tanh")) is TanhRNN
    assert type(loaded.get_layer("bi").forward_layer) is TanhRNN
    np.testing.assert_array_equal(loaded.predict(tokens, verbose=0), expected)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape", [(BATCH, FEATURES), (BATCH, STEPS, 2, FEATURES)])
def test_wrong_rank_is_a_clear_error(shape):
    message = r"expects a 3-D input \(batch, timesteps, features\).*rank %d" % len(shape)
    with pytest.raises(ValueError, match=message):
        TanhRNN(UNITS)(np.zeros(shape, "float32"))
    with pytest.raises(ValueError, match=message):
        TanhRNN(UNITS)(keras.Input(shape[1:]))
    built = TanhRNN(UNITS)
    built(np.zeros((BATCH, STEPS, FEATURES), "float32"))
    with pytest.raises(ValueError, match=message):
        built(np.zeros(shape, "float32"))


def test_units_must_be_positive():
    with pytest.raises(ValueError, match="units"):
        TanhRNN(0)


# --- the registered builders ----------------------------------------------------------------


@pytest.mark.parametrize("name,kwargs", [
    ("tanh-rnn", {"layers": 2, "units": 8}),
    ("bi-tanh-rnn", {"units": 8, "return_sequences": True}),
])
@pytest.mark.slow
def test_registered_builders_apply_and_train(name, kwargs):
    import zoo

    body = zoo.build_model(name, **kwargs)
    inputs = keras.Input((None, 3))
    h = inputs
    for layer in body:
        h = layer(h)
    expected = (None, None, 16) if kwargs.get("return_sequences") else (None, 8)
    assert tuple(h.shape) == expected
    model = keras.Model(inputs, keras.layers.Dense(1)(h))
    model.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(0).normal(size=(4, 5, 3)).astype("float32")
    y = np.zeros((4, 5, 1) if kwargs.get("return_sequences") else (4, 1), "float32")
    history = model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])


# --- other Keras backends -------------------------------------------------------------------

_JAX_SCRIPT = r"""
import json, os
import numpy as np
import keras
from zoo.layers import TanhRNN

assert keras.backend.backend() == "jax", keras.backend.backend()
rng = np.random.default_rng(0)
x = rng.normal(size=(3, 6, 2)).astype("float32")
h0 = rng.normal(scale=0.5, size=(3, 4)).astype("float32")
mask = np.ones((3, 6), bool)
mask[0, 4:] = False
mask[1, 2] = False
layer = TanhRNN(4, return_sequences=True, return_state=True, go_backwards=True)
layer.build((None, None, 2))
kernel, recurrent, bias = [rng.normal(scale=0.6, size=w.shape).astype("float32")
                           for w in layer.get_weights()]
layer.set_weights([kernel, recurrent, bias])
seq, state = layer(x, mask=mask, initial_state=h0)

# NumPy: reversed steps, masked steps carry the state
want_state = h0.copy()
for b in range(3):
    h = h0[b]
    for t in range(5, -1, -1):
        if mask[b, t]:
            h = np.tanh(x[b, t] @ kernel + h @ recurrent + bias)
    want_state[b] = h
np.testing.assert_allclose(np.asarray(state), want_state, atol=1e-5)
# and every output as keras.layers.SimpleRNN's on this backend (its masking rules)
simple = keras.layers.SimpleRNN(4, return_sequences=True, return_state=True, go_backwards=True)
simple.build((None, None, 2))
simple.set_weights([kernel, recurrent, bias])
want_seq, want_state2 = simple(x, mask=mask, initial_state=h0)
np.testing.assert_allclose(np.asarray(seq), np.asarray(want_seq), atol=1e-5)
np.testing.assert_allclose(np.asarray(state), np.asarray(want_state2), atol=1e-5)
assert np.abs(np.asarray(seq)).max() > 0.1

inputs = keras.Input((6,), dtype="int32")
h = keras.layers.Embedding(9, 3, mask_zero=True)(inputs)
h = TanhRNN(4, return_sequences=True, dropout=0.1, recurrent_dropout=0.1)(h)
h = keras.layers.Bidirectional(TanhRNN(4))(h)
model = keras.Model(inputs, keras.layers.Dense(1)(h))
model.compile(optimizer="adam", loss="mse")
tokens = rng.integers(0, 9, size=(8, 6))
before = [w.copy() for w in model.get_weights()]
history = model.fit(tokens, np.ones((8, 1)), epochs=1, batch_size=4, verbose=0)
assert np.isfinite(history.history["loss"][0])
assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))
print(json.dumps({"ok": True}))
"""


@pytest.mark.slow
def test_tanh_rnn_runs_on_the_jax_backend():
    """TanhRNN is keras.ops code over keras.layers.RNN: it runs (masks, go_backwards, states,
    Bidirectional, training) on JAX, in a process of its own."""
    import importlib.util
    import os
    import subprocess
    import sys
    from pathlib import Path

    if importlib.util.find_spec("jax") is None:
        pytest.fail("jax is not installed: the test extra brings it (pip install -e '.[test]')")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", _JAX_SCRIPT], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert '"ok": true' in result.stdout


def test_models_saved_by_the_earlier_tanh_rnn_load_and_predict_the_same():
    """tests/data/tanh_rnn_before_cell.keras was saved by zoo's TanhRNN before it became a cell
    + keras.layers.RNN (weights on the layer itself, plain and in Bidirectional); it loads
    with safe_mode and predicts what it predicted then."""
    from pathlib import Path

    data = Path(__file__).parent / "data"
    expected = np.load(data / "tanh_rnn_before_cell.npz")
    model = keras.saving.load_model(data / "tanh_rnn_before_cell.keras", safe_mode=True)
    assert type(model.get_layer("tanh")) is TanhRNN
    assert type(model.get_layer("bi").forward_layer) is TanhRNN
    np.testing.assert_allclose(model.predict(expected["tokens"], verbose=0),
                               expected["predictions"], atol=ATOL, rtol=0)
