"""Fast sampling from a recurrent language model: the whole sample in one graph call.

A model of the form ``Embedding -> recurrent layers -> Dense`` (logits) runs one step at a time
inside a ``tf.function``: a ``tf.while_loop`` feeds the prime through the cells (warming the
state), then a second one draws each next id from the head's logits and feeds it back,
carrying every layer's state from step to step.  The trained layers themselves are called (the
cells of every ``keras.layers.RNN``: LSTM, GRU, SimpleRNN, zoo's TanhRNN), so a sampler
always uses the model's current weights, and nothing re-runs the model over a growing window.

The generation loop runs in chunks of ``CHUNK`` steps, each chunk a rolled loop compiled with
XLA (on a CPU this removes most of the per-operation cost of TensorFlow's graph executor: about
six times faster at batch 1); the chunks are themselves steps of an ordinary ``tf.while_loop``,
so any length is still one call.  Per generated step: the first layer's input projection is a row
gathered from a table of every id, every other LSTM / SimpleRNN layer is one product
``[x, h] . [[kernel], [recurrent_kernel]]``, the temperature and the banned ids' mask are folded
into the head's weights (outside the loop), and the draw is the Gumbel-max form of a
categorical draw (argmax of logits / T - log(-log u)).  The uniforms u of a chunk's steps are
drawn in one stateless call keyed by the seed and the chunk's first step, before the compiled
loop (XLA's own generator on a CPU cost more than a 2 x 128 LSTM step); a chunk is therefore
``noise_block(n, vocab)`` steps, at most ``CHUNK``, so that its noise stays within ``NOISE``
values.  The same seed, primes (their number too: it sets the chunks) and model give the
same ids, with or without XLA.  Where XLA cannot compile the model the same loop runs
uncompiled (``ZOO_SAMPLER_XLA=0`` forces that).

TensorFlow-only (``tf.function``, ``tf.while_loop``, stateless random ops), as the design asks.
"""

from __future__ import annotations

import os

import numpy as np

from zoo.errors import ZooError

CHUNK = 1024         # generation steps per compiled chunk (at most; the last may be shorter)
_NEVER = -1e9        # added to the logits of ids that must never be drawn
_TINY = 1e-30        # the smallest uniform draw (keeps the Gumbel noise finite)
NOISE = 2**20        # at most this many Gumbel draws are held at once (4 MB)


def noise_block(n: int, vocab: int) -> int:
    """Steps whose Gumbel noise is drawn in one go for n samples over ``vocab`` ids: the largest
    power of two up to ``CHUNK`` whose (steps, n, vocab) draw fits in ``NOISE`` values."""
    block = CHUNK
    while block > 1 and block * n * vocab > NOISE:
        block //= 2
    return block


def seed_pair(seed: int) -> np.ndarray:
    """A non-negative integer seed as the int32 pair that stateless random ops take."""
    seed = int(seed)
    if seed < 0:
        raise ZooError(f"sampling: seed must be >= 0, got {seed}")
    return np.array([seed % 2**31, (seed >> 31) % 2**31], np.int32)


class Sampler:
    """Draws continuations of primes from ``model`` (Embedding -> recurrent body -> Dense).

    ``sample(prime_ids, length, temperature, seed)`` takes primes as an (n, p) int array
    (p >= 1) and returns the (n, length) int array of drawn ids.  Temperature 0 is greedy
    (argmax); otherwise each id is drawn from ``softmax(logits / temperature)`` with noise from
    a stateless generator keyed by ``seed`` and the step number of its chunk's first step, so
    the same seed (for the same number of primes) gives the same ids.
    ``banned`` ids (such as the unknown-character id) are never drawn.
    """

    def __init__(self, model, banned: tuple[int, ...] = (), xla: bool | None = None) -> None:
        import keras

        layers = [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]
        if len(layers) < 3 or not isinstance(layers[0], keras.layers.Embedding) \
                or not isinstance(layers[-1], keras.layers.Dense):
            raise ZooError(f"model {model.name!r}: sampling needs Embedding -> recurrent "
                           "layers -> Dense, got " + " -> ".join(type(l).__name__ for l in layers))
        self.embedding = layers[0]
        self.head = layers[-1]
        self.steps: list = []
        for layer in layers[1:-1]:
            if isinstance(layer, keras.layers.Dropout):
                continue  # inactive at inference
            if isinstance(layer, keras.layers.Bidirectional):
                raise ZooError(f"layer {layer.name!r} is bidirectional: it reads the text "
                               "right to left as well, so it cannot generate left to right")
            if getattr(layer, "go_backwards", False):
                raise ZooError(f"layer {layer.name!r} runs backwards (go_backwards=True), so it "
                               "cannot generate left to right")
            if isinstance(layer, keras.layers.RNN) and hasattr(layer, "cell"):
                self.steps.append(_CellStep(layer))
            else:
                raise ZooError(f"layer {layer.name!r} ({type(layer).__name__}) has no step "
                               "function for sampling")
        mask = np.zeros((int(self.head.units),), np.float32)
        for i in banned:
            mask[i] = _NEVER
        self._mask = mask
        if xla is None:
            xla = os.environ.get("ZOO_SAMPLER_XLA", "1") != "0"
        self.xla = xla
        self._fns: dict[tuple[bool, bool, int], object] = {}

    # ----------------------------------------------------------------------- one step
    def _table(self):
        """The first layer's input projection of every id (vocab, gates), when its cell has a
        fused step: one row is then gathered per step instead of an embedding lookup and a
        matrix product.  None otherwise."""
        import keras

        first = self.steps[0]
        if first.kind is None or type(self.embedding).call is not keras.layers.Embedding.call \
                or getattr(self.embedding, "lora_enabled", False):
            return None
        return first.project(self.embedding.embeddings)

    def _head_weights(self, inv_temperature, mask):
        """The head folded with the temperature and the banned ids' mask, when it is a plain
        linear Dense layer: logits / T + mask = x . (W / T) + (b / T + mask), one product and
        one addition per step.  None otherwise (the layer is then called)."""
        import keras
        import tensorflow as tf

        head = self.head
        if type(head).call is not keras.layers.Dense.call \
                or getattr(head, "lora_enabled", False) \
                or head.activation not in (keras.activations.linear, None):
            return None
        kernel = tf.cast(head.kernel, head.compute_dtype)
        bias = mask if not head.use_bias else tf.cast(head.bias, tf.float32) * inv_temperature \
            + mask
        return kernel * tf.cast(inv_temperature, kernel.dtype), bias

    def _step(self, ids, states, table=None, prepared=None, head=None, inv_temperature=None,
              mask=None):
        """ids (n,) -> logits (n, vocab) float32 (divided by the temperature, banned ids
        masked, when ``inv_temperature`` and ``mask`` are given) and the new states."""
        import tensorflow as tf

        prepared = prepared or [None] * len(self.steps)
        new_states = []
        for k, (s, st) in enumerate(zip(self.steps, states)):
            if k == 0 and table is not None:
                x, st = s.recur(tf.gather(table, ids), st, prepared[k])
            else:
                x, st = s(self.embedding(ids) if k == 0 else x, st, prepared[k])
            new_states.append(st)
        if head is not None:
            kernel, bias = head
            # the head may compute in another dtype than the body (a float32 head over a
            # mixed-precision body): cast as Keras's Dense would
            logits = tf.matmul(tf.cast(x, kernel.dtype), kernel)
            return tf.cast(logits, tf.float32) + bias, new_states
        logits = tf.cast(self.head(x), tf.float32)
        if inv_temperature is not None:
            logits = (logits + mask) * inv_temperature
        return logits, new_states

    # ------------------------------------------------------------------------ the graph
    def _function(self, greedy: bool, xla: bool, block: int):
        key = (greedy, xla, block)
        if key in self._fns:
            return self._fns[key]
        import tensorflow as tf

        mask = tf.constant(self._mask)
        vocab = int(self._mask.shape[0])

        @tf.function(jit_compile=xla, autograph=False)
        def chunk(last, states, inv_temperature, noise, count, table):
            """``count`` (<= ``block``) generation steps from ``last`` and ``states``; returns
            the ids (block, n), zeros after ``count``.  Step k's id is the argmax of the logits
            divided by the temperature plus ``noise[k]`` (Gumbel noise: the Gumbel-max way of
            sampling from the softmax), or of the logits alone when greedy."""

            fused = None if table.shape.rank == 1 else table
            prepared = [s.prepare() for s in self.steps]
            head = self._head_weights(inv_temperature, mask)

            def gen(k, last, states, out):
                logits, states = self._step(last, states, fused, prepared, head,
                                            inv_temperature, mask)
                if not greedy:
                    logits = logits + noise[k]
                nxt = tf.argmax(logits, axis=-1, output_type=tf.int32)
                return k + 1, nxt, states, out.write(k, nxt)

            out = tf.TensorArray(tf.int32, size=block, element_shape=last.shape)
            _, last, states, out = tf.while_loop(lambda k, *_: k < count, gen,
                                                 (tf.constant(0), last, states, out))
            return last, states, out.stack()

        @tf.function(input_signature=[
            tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], tf.float32), tf.TensorSpec([2], tf.int32)], autograph=False)
        def run(prime, length, temperature, seed):
            n = tf.shape(prime)[0]
            p = tf.shape(prime)[1]
            states = [s.zero_state(n) for s in self.steps]
            table = self._table()
            prepared = [s.prepare() for s in self.steps]

            def warm(t, states):  # feed the prime (all but its last id) through
                _, states = self._step(prime[:, t], states, table, prepared)
                return t + 1, states

            _, states = tf.while_loop(lambda t, _: t < p - 1, warm, (tf.constant(0), states))

            chunks = (length + block - 1) // block
            out = tf.TensorArray(tf.int32, size=chunks, element_shape=tf.TensorShape([block, None]))

            def outer(j, last, states, out):
                if greedy:
                    noise = tf.zeros([1, 1, 1])
                else:
                    # the noise of the block's steps in one stateless draw keyed by the seed and
                    # the block's first step, outside the compiled loop: XLA's own generator on
                    # a CPU cost about 2 us a step at 65 ids, more than the rest of the draw
                    u = tf.random.stateless_uniform(
                        tf.stack([block, n, vocab]),
                        tf.random.experimental.stateless_fold_in(seed, j * block),
                        minval=_TINY, maxval=1.0)
                    noise = -tf.math.log(-tf.math.log(u))
                count = tf.minimum(block, length - j * block)
                last, states, ids = chunk(last, states, 1.0 / temperature, noise, count,
                                          table if table is not None else tf.zeros([0]))
                return j + 1, last, states, out.write(j, ids)

            _, _, _, out = tf.while_loop(lambda j, *_: j < chunks, outer,
                                         (tf.constant(0), prime[:, -1], states, out))
            ids = tf.reshape(out.concat(), [chunks * block, n])[:length]
            return tf.transpose(ids)

        self._fns[key] = run
        return run

    def sample(self, prime_ids, length: int, temperature: float = 1.0, seed: int = 0) -> np.ndarray:
        prime = np.asarray(prime_ids, dtype=np.int32)
        if prime.ndim != 2 or prime.shape[0] < 1 or prime.shape[1] < 1:
            raise ZooError(f"sampling: primes must be an (n >= 1, length >= 1) array of ids, "
                           f"got shape {prime.shape}")
        if int(length) == 0:
            return np.zeros((prime.shape[0], 0), np.int32)
        greedy = float(temperature) == 0.0
        block = CHUNK if greedy else noise_block(prime.shape[0], int(self._mask.shape[0]))
        args = (prime, np.int32(length), np.float32(temperature or 1.0), seed_pair(seed))
        if self.xla:
            import tensorflow as tf

            try:
                return self._function(greedy, True, block)(*args).numpy()
            except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as exc:
                if "XLA" not in str(exc) and "xla" not in str(exc):
                    raise
                self.xla = False  # XLA cannot compile this model here: run the plain loop
        return self._function(greedy, False, block)(*args).numpy()


class _CellStep:
    """One step of a Keras RNN layer.  LSTM, GRU (reset_after) and SimpleRNN-like cells
    (zoo's TanhRNN included) run a fused step over the cell's own weights and activations:
    the input projection ``x . kernel + bias`` (which the first layer takes from a table of
    every id) and one recurrent matrix product; other cells are called as they are."""

    def __init__(self, layer) -> None:
        import keras

        self.layer = layer
        self.cell = cell = layer.cell
        size = cell.state_size
        self.sizes = list(size) if isinstance(size, (list, tuple)) else [size]
        self.kind = None
        if isinstance(cell, keras.layers.LSTMCell):
            self.kind = "lstm"
        elif isinstance(cell, keras.layers.GRUCell) and cell.reset_after:
            self.kind = "gru"
        elif isinstance(cell, keras.layers.SimpleRNNCell):
            self.kind = "simple"

    def zero_state(self, n):
        import tensorflow as tf

        return [tf.zeros(tf.stack([n, s]), self.cell.compute_dtype) for s in self.sizes]

    def _weight(self, w):
        import tensorflow as tf

        return tf.cast(w, self.cell.compute_dtype)

    def project(self, x):
        """``x . kernel`` plus the input bias (GRU: its first row)."""
        import tensorflow as tf

        cell = self.cell
        xp = tf.matmul(tf.cast(x, cell.compute_dtype), self._weight(cell.kernel))
        if cell.use_bias:
            bias = self._weight(cell.bias)
            xp = xp + (bias[0] if self.kind == "gru" else bias)
        return xp

    def prepare(self):
        """The weights a step uses, computed once outside the step loop: for LSTM and
        SimpleRNN cells the input and recurrent kernels stacked, so that a step from an input
        ``x`` is one product ``[x, h] . [[kernel], [recurrent_kernel]]``."""
        import tensorflow as tf

        if self.kind not in ("lstm", "simple"):
            return None
        cell = self.cell
        stacked = tf.concat([self._weight(cell.kernel), self._weight(cell.recurrent_kernel)], 0)
        return stacked, self._weight(cell.bias) if cell.use_bias else None

    def recur(self, xp, states, prepared=None):
        """The step from the input projection ``xp``: (output, new states)."""
        import tensorflow as tf

        inner = tf.matmul(states[0], self._weight(self.cell.recurrent_kernel))
        return self._gates(xp, inner, states)

    def _gates(self, xp, inner, states):
        """The step from the input projection ``xp`` and ``inner`` = ``h . recurrent_kernel``;
        ``inner`` None: ``xp`` is already their sum (LSTM, SimpleRNN)."""
        import tensorflow as tf

        cell = self.cell
        h = states[0]
        if self.kind == "gru":
            if cell.use_bias:
                inner = inner + self._weight(cell.bias)[1]
            x_z, x_r, x_h = tf.split(xp, 3, axis=-1)
            r_z, r_r, r_h = tf.split(inner, 3, axis=-1)
            zg = cell.recurrent_activation(x_z + r_z)
            r = cell.recurrent_activation(x_r + r_r)
            hh = cell.activation(x_h + r * r_h)
            h = zg * h + (1.0 - zg) * hh
            return h, [h]
        z = xp if inner is None else xp + inner
        if self.kind == "lstm":
            i, f, c, o = tf.split(z, 4, axis=-1)
            act, rec = cell.activation, cell.recurrent_activation
            c = rec(f) * states[1] + rec(i) * act(c)
            h = rec(o) * act(c)
            return h, [h, c]
        h = z
        if cell.activation is not None:
            h = cell.activation(h)
        return h, [h]

    def __call__(self, x, states, prepared=None):
        if self.kind is None:
            out, new = self.cell(x, list(states), training=False)
            new = list(new) if isinstance(new, (list, tuple)) else [new]
            return out, new
        if prepared is None:
            return self.recur(self.project(x), states)
        import tensorflow as tf

        stacked, bias = prepared
        x = tf.cast(x, self.cell.compute_dtype)
        z = tf.matmul(tf.concat([x, states[0]], -1), stacked)
        if bias is not None:
            z = z + bias
        return self._gates(z, None, states)

