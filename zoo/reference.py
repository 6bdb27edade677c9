"""A from-scratch NumPy RNN with hand-written back-propagation through time: the test oracle.

No Keras or TensorFlow here, only NumPy in float64, written in the manner of the classic
from-scratch RNN tutorials, one sequence at a time, column-vector convention::

    s_t = tanh(U x_t + W s_{t-1} + b)          hidden state, s_0 given (zeros by default)
    o_t = softmax(V s_t + c)                   output distribution
    L   = -sum_t log o_t[y_t]                  cross-entropy loss

``x_t`` is either a token id (a one-hot vector) or a dense vector.  `NumpyRNN.bptt` returns the
loss and its gradients for U, W, b, V, c, accumulated backwards through time;
`NumpyRNN.hidden_bptt` back-propagates any given gradient of the hidden states (for instance
of ``sum_t s_t . G_t``, see `NumpyRNN.hidden_objective`) to U, W, b and s_0.
`numerical_gradient` and `gradient_check` compare any of these with central differences.

In Keras terms (``TanhRNN`` / ``SimpleRNN``): ``kernel = U.T``, ``recurrent_kernel = W.T``,
``bias = b``, and the hidden states are the layer's outputs with ``return_sequences=True``.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

__all__ = [
    "NumpyRNN",
    "gradient_check",
    "numerical_gradient",
    "one_hot",
    "relative_error",
    "softmax",
]

DTYPE = np.float64


def one_hot(indices: Sequence[int], size: int) -> np.ndarray:
    """(T,) token ids -> (T, size) one-hot rows."""
    indices = np.asarray(indices, dtype=np.int64)
    if indices.ndim != 1:
        raise ValueError(f"one_hot expects a 1-D sequence of token ids, got shape {indices.shape}")
    if indices.size and (indices.min() < 0 or indices.max() >= size):
        raise ValueError(f"token ids must lie in [0, {size}), got {indices.min()}..{indices.max()}")
    out = np.zeros((indices.size, size), dtype=DTYPE)
    out[np.arange(indices.size), indices] = 1.0
    return out


def softmax(z: np.ndarray) -> np.ndarray:
    """Softmax of a vector (or of each row), shifted by the maximum for stability."""
    z = np.asarray(z, dtype=DTYPE)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def relative_error(a, b) -> float:
    """``|a - b| / max(|a|, |b|)`` with Euclidean norms over all elements (0 when both are 0)."""
    a = np.asarray(a, dtype=DTYPE)
    b = np.asarray(b, dtype=DTYPE)
    scale = max(np.linalg.norm(a), np.linalg.norm(b))
    if scale == 0.0:
        return 0.0
    return float(np.linalg.norm(a - b) / scale)


class NumpyRNN:
    """A vanilla RNN language-model cell in NumPy: parameters U, W, b (recurrence) and V, c
    (softmax output layer), all float64, stored in `params` (arrays updated in place by
    gradient checks)."""

    NAMES = ("U", "W", "b", "V", "c")

    def __init__(self, U, W, b, V=None, c=None):
        self.U = np.array(U, dtype=DTYPE)  # (hidden, input)
        self.W = np.array(W, dtype=DTYPE)  # (hidden, hidden)
        self.b = np.array(b, dtype=DTYPE)  # (hidden,)
        hidden, self.input_size = self.U.shape
        self.hidden_size = hidden
        if self.W.shape != (hidden, hidden) or self.b.shape != (hidden,):
            raise ValueError(
                f"U {self.U.shape}, W {self.W.shape}, b {self.b.shape} do not fit together: "
                f"W should be ({hidden}, {hidden}) and b ({hidden},)"
            )
        # Without an output layer given, a 1-unit one (only bptt uses it).
        self.V = np.zeros((1, hidden), DTYPE) if V is None else np.array(V, dtype=DTYPE)
        self.c = np.zeros(self.V.shape[0], DTYPE) if c is None else np.array(c, dtype=DTYPE)
        if self.V.shape[1] != hidden or self.c.shape != (self.V.shape[0],):
            raise ValueError(f"V {self.V.shape} and c {self.c.shape} do not fit hidden size {hidden}")
        self.output_size = self.V.shape[0]

    @classmethod
    def random(cls, input_size: int, hidden_size: int, output_size: int = 1, *, seed: int = 0,
               scale: float = 0.5) -> "NumpyRNN":
        """Random parameters, uniform in +-scale/sqrt(fan_in), biases included."""
        rng = np.random.default_rng(seed)

        def init(shape, fan_in):
            return rng.uniform(-1.0, 1.0, size=shape) * scale / np.sqrt(fan_in)

        return cls(
            U=init((hidden_size, input_size), input_size),
            W=init((hidden_size, hidden_size), hidden_size),
            b=init((hidden_size,), hidden_size),
            V=init((output_size, hidden_size), hidden_size),
            c=init((output_size,), hidden_size),
        )

    @property
    def params(self) -> dict:
        return {name: getattr(self, name) for name in self.NAMES}

    # --- Keras correspondence ---------------------------------------------------------

    def keras_weights(self) -> list:
        """``[kernel, recurrent_kernel, bias]`` for a TanhRNN / SimpleRNN layer."""
        return [self.U.T.copy(), self.W.T.copy(), self.b.copy()]

    @classmethod
    def from_keras_weights(cls, weights: Sequence[np.ndarray]) -> "NumpyRNN":
        kernel, recurrent_kernel, bias = weights
        return cls(U=np.asarray(kernel).T, W=np.asarray(recurrent_kernel).T, b=bias)

    # --- forward ----------------------------------------------------------------------

    def inputs(self, xs) -> np.ndarray:
        """A sequence as (T, input_size) rows: token ids become one-hot rows."""
        arr = np.asarray(xs)
        if arr.ndim == 1 and np.issubdtype(arr.dtype, np.integer):
            return one_hot(arr, self.input_size)
        arr = arr.astype(DTYPE)
        if arr.ndim != 2 or arr.shape[1] != self.input_size:
            raise ValueError(
                f"expected token ids (T,) or vectors (T, {self.input_size}), got shape {arr.shape}"
            )
        return arr

    def _initial(self, s0) -> np.ndarray:
        if s0 is None:
            return np.zeros(self.hidden_size, DTYPE)
        s0 = np.asarray(s0, dtype=DTYPE)
        if s0.shape != (self.hidden_size,):
            raise ValueError(f"s0 should have shape ({self.hidden_size},), got {s0.shape}")
        return s0

    def hidden_states(self, xs, s0=None) -> np.ndarray:
        """The hidden states s_1..s_T, (T, hidden)."""
        x = self.inputs(xs)
        s_prev = self._initial(s0)
        states = np.zeros((len(x), self.hidden_size), DTYPE)
        for t in range(len(x)):
            states[t] = np.tanh(self.U @ x[t] + self.W @ s_prev + self.b)
            s_prev = states[t]
        return states

    def forward(self, xs, s0=None):
        """``(states, probs)``: hidden states (T, hidden) and output distributions (T, out)."""
        states = self.hidden_states(xs, s0)
        probs = np.zeros((len(states), self.output_size), DTYPE)
        for t in range(len(states)):
            probs[t] = softmax(self.V @ states[t] + self.c)
        return states, probs

    def loss(self, xs, targets, s0=None) -> float:
        """Cross-entropy ``-sum_t log o_t[y_t]``."""
        targets = self._targets(targets, len(self.inputs(xs)))
        _, probs = self.forward(xs, s0)
        return float(-np.sum(np.log(probs[np.arange(len(targets)), targets])))

    def _targets(self, targets, steps) -> np.ndarray:
        targets = np.asarray(targets, dtype=np.int64)
        if targets.shape != (steps,):
            raise ValueError(f"expected {steps} target ids, got shape {targets.shape}")
        if targets.min() < 0 or targets.max() >= self.output_size:
            raise ValueError(f"target ids must lie in [0, {self.output_size})")
        return targets

    # --- backward ---------------------------------------------------------------------

    def _backward_hidden(self, x, states, s0, dstates):
        """BPTT from per-step gradients ``dstates[t] = dL/ds_t`` (direct, not through later
        steps) to U, W, b and s_0."""
        dU = np.zeros_like(self.U)
        dW = np.zeros_like(self.W)
        db = np.zeros_like(self.b)
        ds_next = np.zeros(self.hidden_size, DTYPE)  # gradient reaching s_t from step t+1
        for t in reversed(range(len(x))):
            ds = dstates[t] + ds_next
            da = ds * (1.0 - states[t] ** 2)  # through tanh
            s_prev = states[t - 1] if t > 0 else s0
            dU += np.outer(da, x[t])
            dW += np.outer(da, s_prev)
            db += da
            ds_next = self.W.T @ da
        return {"U": dU, "W": dW, "b": db, "s0": ds_next}

    def bptt(self, xs, targets, s0=None):
        """``(loss, grads)`` with grads for U, W, b, V, c (and s0) of the cross-entropy loss,
        accumulated backwards through time."""
        x = self.inputs(xs)
        targets = self._targets(targets, len(x))
        s0 = self._initial(s0)
        states, probs = self.forward(x, s0)
        steps = np.arange(len(x))
        loss = float(-np.sum(np.log(probs[steps, targets])))

        dV = np.zeros_like(self.V)
        dc = np.zeros_like(self.c)
        dstates = np.zeros_like(states)
        for t in reversed(range(len(x))):
            do = probs[t].copy()
            do[targets[t]] -= 1.0  # d loss / d (V s_t + c): softmax minus one-hot
            dV += np.outer(do, states[t])
            dc += do
            dstates[t] = self.V.T @ do
        grads = self._backward_hidden(x, states, s0, dstates)
        grads.update(V=dV, c=dc)
        return loss, grads

    def hidden_objective(self, xs, G, s0=None) -> float:
        """``sum_t s_t . G_t`` for a fixed (T, hidden) array G."""
        return float(np.sum(self.hidden_states(xs, s0) * np.asarray(G, DTYPE)))

    def hidden_bptt(self, xs, dstates, s0=None) -> dict:
        """Gradients for U, W, b and s0 of any scalar function of the hidden states, given its
        gradient ``dstates`` (T, hidden) with respect to each s_t.  For `hidden_objective`
        that gradient is G itself."""
        x = self.inputs(xs)
        s0 = self._initial(s0)
        dstates = np.asarray(dstates, DTYPE)
        if dstates.shape != (len(x), self.hidden_size):
            raise ValueError(
                f"dstates should have shape ({len(x)}, {self.hidden_size}), got {dstates.shape}"
            )
        return self._backward_hidden(x, self.hidden_states(x, s0), s0, dstates)


def numerical_gradient(f: Callable[[], float], param: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Central differences ``(f(p + eps) - f(p - eps)) / 2 eps`` for every element of the
    array ``param``, which ``f`` reads; it is changed in place and restored."""
    if param.dtype != DTYPE:
        raise TypeError(f"numerical_gradient needs a float64 array, got {param.dtype}")
    grad = np.zeros_like(param)
    flat = param.reshape(-1)  # a view: writes reach `param`
    gflat = grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = f()
        flat[i] = old - eps
        minus = f()
        flat[i] = old
        gflat[i] = (plus - minus) / (2.0 * eps)
    return grad


def gradient_check(f: Callable[[], float], params: Mapping[str, np.ndarray],
                   grads: Mapping[str, np.ndarray], eps: float = 1e-5) -> dict:
    """Relative error (see `relative_error`) between each analytic gradient in ``grads`` and
    central differences of ``f`` with respect to the array of the same name in ``params``."""
    errors = {}
    for name, grad in grads.items():
        if name not in params:
            continue
        numeric = numerical_gradient(f, params[name], eps)
        errors[name] = relative_error(grad, numeric)
    return errors
