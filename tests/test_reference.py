"""The NumPy reference RNN (zoo.reference) against central differences and against TanhRNN.

Everything here is float64; TanhRNN runs with ``keras.config.floatx() == "float64"``.
"""

from __future__ import annotations

import numpy as np
import pytest

from zoo import reference
from zoo.reference import NumpyRNN, gradient_check, numerical_gradient, relative_error

TOL = 1e-6  # relative error allowed between analytic and numerical gradients


@pytest.fixture
def float64():
    """Keras in float64 for the duration of a test, restored afterwards.  The default dtype
    policy is set too: Keras caches it from floatx when the first layer is made."""
    import keras

    old_floatx, old_policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        yield keras
    finally:
        keras.config.set_floatx(old_floatx)
        keras.config.set_dtype_policy(old_policy)


def _char_problem(seed=0, vocab=7, hidden=6, steps=9):
    rng = np.random.default_rng(seed)
    net = NumpyRNN.random(vocab, hidden, vocab, seed=seed, scale=1.5)
    xs = rng.integers(0, vocab, size=steps)
    targets = rng.integers(0, vocab, size=steps)
    s0 = rng.normal(scale=0.5, size=hidden)
    return net, xs, targets, s0


# --- the reference on its own -------------------------------------------------------------


def test_module_is_pure_numpy():
    import ast

    tree = ast.parse(open(reference.__file__).read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "typing", "numpy"}, imported


def test_forward_by_hand_for_one_step():
    net = NumpyRNN(U=[[1.0, 2.0], [0.5, -1.0]], W=[[0.1, 0.0], [0.0, 0.2]], b=[0.0, 0.3],
                   V=[[1.0, -1.0]], c=[0.0])
    states, probs = net.forward(np.array([[1.0, 1.0]]), s0=[1.0, -1.0])
    expected = np.tanh(np.array([3.0 + 0.1, -0.5 - 0.2 + 0.3]))
    np.testing.assert_allclose(states[0], expected, rtol=0, atol=1e-15)
    np.testing.assert_allclose(probs, [[1.0]])  # a single class always has probability 1


def test_loss_with_zero_weights_is_uniform():
    net = NumpyRNN(U=np.zeros((4, 5)), W=np.zeros((4, 4)), b=np.zeros(4), V=np.zeros((5, 4)),
                   c=np.zeros(5))
    loss = net.loss([0, 1, 2], [3, 4, 0])
    assert loss == pytest.approx(3 * np.log(5), rel=1e-14)


def test_one_hot_and_dense_inputs_agree():
    net, xs, _, s0 = _char_problem()
    np.testing.assert_array_equal(net.hidden_states(xs, s0),
                                  net.hidden_states(reference.one_hot(xs, net.input_size), s0))


@pytest.mark.parametrize("dense", [False, True], ids=["one-hot", "dense"])
def test_bptt_matches_central_differences(dense):
    net, xs, targets, s0 = _char_problem(seed=1)
    if dense:
        xs = np.random.default_rng(5).normal(size=(len(xs), net.input_size))
    s0 = s0.copy()
    loss, grads = net.bptt(xs, targets, s0)
    assert loss == pytest.approx(net.loss(xs, targets, s0), rel=1e-14)
    assert set(grads) == {"U", "W", "b", "V", "c", "s0"}
    params = {**net.params, "s0": s0}
    errors = gradient_check(lambda: net.loss(xs, targets, s0), params, grads)
    assert set(errors) == {"U", "W", "b", "V", "c", "s0"}
    for name, err in errors.items():
        assert err < TOL, (name, err)
        assert np.abs(grads[name]).max() > 1e-3, name  # a real gradient, not zeros


def test_gradient_check_catches_a_wrong_gradient():
    net, xs, targets, s0 = _char_problem(seed=2)
    _, grads = net.bptt(xs, targets, s0)
    wrong = dict(grads)
    wrong["W"] = grads["W"].copy()
    wrong["W"][0, 0] += 0.05 * np.abs(grads["W"]).max()
    errors = gradient_check(lambda: net.loss(xs, targets, s0), net.params, wrong)
    assert errors["W"] > 1e-3
    assert errors["U"] < TOL


def test_gradient_check_of_a_truncated_bptt_fails():
    """BPTT that forgets the recurrent path (no carry from later steps) must be caught."""
    net, xs, targets, s0 = _char_problem(seed=3)
    x = net.inputs(xs)
    states, probs = net.forward(x, s0)
    dU = np.zeros_like(net.U)
    for t in range(len(x)):
        do = probs[t].copy()
        do[targets[t]] -= 1.0
        dU += np.outer((net.V.T @ do) * (1 - states[t] ** 2), x[t])
    errors = gradient_check(lambda: net.loss(xs, targets, s0), net.params, {"U": dU})
    assert errors["U"] > 1e-2


def test_numerical_gradient_of_a_known_function():
    p = np.array([1.0, -2.0, 3.0])
    grad = numerical_gradient(lambda: float(np.sum(p ** 3)), p)
    np.testing.assert_allclose(grad, 3 * p ** 2, rtol=1e-9)
    np.testing.assert_array_equal(p, [1.0, -2.0, 3.0])  # restored


def test_hidden_bptt_matches_central_differences():
    net, xs, _, s0 = _char_problem(seed=4)
    G = np.random.default_rng(9).normal(size=(len(xs), net.hidden_size))
    s0 = s0.copy()
    grads = net.hidden_bptt(xs, G, s0)
    params = {**net.params, "s0": s0}
    errors = gradient_check(lambda: net.hidden_objective(xs, G, s0), params, grads)
    assert set(errors) == {"U", "W", "b", "s0"}
    assert max(errors.values()) < TOL, errors


def test_relative_error():
    assert relative_error([0.0], [0.0]) == 0.0
    assert relative_error([1.0, 0.0], [1.0, 0.0]) == 0.0
    assert relative_error([2.0], [1.0]) == pytest.approx(0.5)


# --- TanhRNN against the reference -----------------------------------------------------------


def _batch(net, seed, batch=3, steps=8):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, steps, net.input_size))
    s0 = rng.normal(scale=0.5, size=(batch, net.hidden_size))
    G = rng.normal(size=(batch, steps, net.hidden_size))
    return x, s0, G


def _tanh_rnn(keras, net, **kwargs):
    from zoo.layers import TanhRNN

    kwargs.setdefault("return_sequences", True)
    layer = TanhRNN(net.hidden_size, **kwargs)
    layer.build((None, None, net.input_size))
    layer.set_weights(net.keras_weights())
    assert layer.compute_dtype == "float64"
    return layer


def test_tanh_rnn_forward_equals_reference(float64):
    keras = float64
    net = NumpyRNN.random(4, 5, seed=10, scale=2.0)
    x, s0, _ = _batch(net, seed=11)
    layer = _tanh_rnn(keras, net)
    out = keras.ops.convert_to_numpy(layer(x, initial_state=s0))
    expected = np.stack([net.hidden_states(x[i], s0[i]) for i in range(len(x))])
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)
    # and the last state without return_sequences
    last = _tanh_rnn(keras, net, return_sequences=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(last(x, initial_state=s0)),
                               expected[:, -1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("path", ["unrolled", "unrolled-split", "scan"])
def test_tanh_rnn_gradients_equal_reference_bptt_and_central_differences(float64, monkeypatch,
                                                                          path):
    """d/d(U, W, b, s0) of sum_t h_t . G_t: Keras autodiff == NumPy BPTT == central differences
    (the scan path uses TanhRNN's hand-written backward pass)."""
    import tensorflow as tf

    from zoo import layers

    keras = float64
    if path == "scan":
        monkeypatch.setattr(layers, "_UNROLL_MAX_STEPS", 0)
    elif path == "unrolled-split":  # the batch of 3 in parts of 1 and 2 rows
        monkeypatch.setattr(layers, "_BATCH_PARTS", 2)
        monkeypatch.setattr(layers, "_MIN_PART_ROWS", 1)
        monkeypatch.setattr(layers, "_SPLIT_MIN_UNITS", 1)  # split even these few units
    else:
        monkeypatch.setattr(layers, "_BATCH_PARTS", 1)
    net = NumpyRNN.random(4, 5, seed=20, scale=2.0)
    x, s0, G = _batch(net, seed=21)
    layer = _tanh_rnn(keras, net)

    s0_t = tf.Variable(s0)
    with tf.GradientTape() as tape:
        h = layer(x, initial_state=s0_t)
        objective = tf.reduce_sum(h * G)
    d_kernel, d_recurrent, d_bias, d_s0 = [
        np.asarray(g) for g in tape.gradient(objective, layer.trainable_weights + [s0_t])
    ]
    assert d_kernel.dtype == np.float64

    # The reference, one sequence at a time, summed over the batch.
    ref = {"U": 0.0, "W": 0.0, "b": 0.0}
    ref_s0 = []
    for i in range(len(x)):
        grads = net.hidden_bptt(x[i], G[i], s0[i])
        for name in ref:
            ref[name] = ref[name] + grads[name]
        ref_s0.append(grads["s0"])
    keras_grads = {"U": d_kernel.T, "W": d_recurrent.T, "b": d_bias}
    for name in ref:
        assert relative_error(keras_grads[name], ref[name]) < TOL, name
    assert relative_error(d_s0, np.stack(ref_s0)) < TOL

    # Central differences of the same objective, over the whole batch.
    def objective_np():
        return sum(net.hidden_objective(x[i], G[i], s0[i]) for i in range(len(x)))

    numeric = {name: numerical_gradient(objective_np, net.params[name]) for name in ref}
    for name in ref:
        assert relative_error(ref[name], numeric[name]) < TOL, name
        assert relative_error(keras_grads[name], numeric[name]) < TOL, name
        assert np.abs(numeric[name]).max() > 1e-2, name


def test_a_different_weight_is_detected(float64):
    """The comparison above can fail: a perturbed recurrent kernel gives other gradients."""
    import tensorflow as tf

    keras = float64
    net = NumpyRNN.random(4, 5, seed=30, scale=2.0)
    x, s0, G = _batch(net, seed=31)
    layer = _tanh_rnn(keras, net)
    weights = layer.get_weights()
    weights[1] = weights[1] + 1e-3
    layer.set_weights(weights)
    with tf.GradientTape() as tape:
        objective = tf.reduce_sum(layer(x, initial_state=s0) * G)
    d_recurrent = np.asarray(tape.gradient(objective, layer.recurrent_kernel))
    ref = sum(net.hidden_bptt(x[i], G[i], s0[i])["W"] for i in range(len(x)))
    assert relative_error(d_recurrent.T, ref) > 1e-5
