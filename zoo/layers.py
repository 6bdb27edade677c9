"""zoo's own recurrent layer: a plain tanh recurrence written with ``keras.ops``.

``TanhRNN`` computes ``h_t = activation(x_t . W_x + h_{t-1} . W_h + b)`` and is a drop-in for
``keras.layers.SimpleRNN``: the same arguments, the same weights (``kernel``,
``recurrent_kernel``, ``bias``, in that order and with the same shapes), the same masking,
``go_backwards``, ``stateful`` and ``return_state`` behaviour, so weights copied from a
``SimpleRNN`` give the same outputs.  It differs in how it runs:

* the input projection ``x_t . W_x + b`` is computed for every time step in one matrix product
  before the loop, so the loop only does the recurrent product ``h_{t-1} . W_h``;
* sequences with a static number of steps (up to ``_UNROLL_MAX_STEPS``, or any with
  ``unroll=True``) run as a loop unrolled in the graph, one small tensor per step; others run
  in ``keras.ops.scan``;
* with the tanh activation the backward pass is hand-written back-propagation through time:
  one matrix product per step on the sequential path, with the weight gradients as a few large
  matrix products beside it, instead of autodiff's per-step bookkeeping.  Other activations
  let autodiff go through the same forward loop.

Measured on a 2-core CPU (``bench/bench_tanh_vs_simple.py``), training a 2 x 128 character
model runs about 1.2 times as fast as with ``SimpleRNN``.
"""

from __future__ import annotations

import keras
from keras import activations, constraints, initializers, ops, regularizers

__all__ = ["TanhRNN"]


class _NotTracked:
    """Holds the stateful layer's state variables out of sight of Keras's attribute tracking,
    so that, as in Keras's RNN layers, they are not weights (not saved, not in get_weights)."""

    __slots__ = ("variables",)

    def __init__(self, variables=None):
        self.variables = variables


def _time_major(x):
    """(batch, time, ...) <-> (time, batch, ...)."""
    return ops.transpose(x, (1, 0, 2))


def _transposed(m):
    """The transpose of a matrix, materialised.  Written as an einsum because TensorFlow's graph
    optimiser folds a plain transpose into the matrix product that uses it, and on CPU a small
    product with a transposed operand takes half as long again as a plain one."""
    return ops.einsum("ij->ji", m)


def _project(x, kernel, bias):
    """The input projection ``x . kernel + bias`` for all time steps at once: one matrix
    product over the (a * b) rows of ``x`` (a, b, features); returns (a, b, units)."""
    a, b, features = ops.shape(x)[0], ops.shape(x)[1], ops.shape(x)[2]
    xp = ops.matmul(ops.reshape(x, (-1, features)), kernel)
    if bias is not None:
        xp = xp + bias
    return ops.reshape(xp, (a, b, ops.shape(kernel)[1]))


def _weight_grads(x, da, kernel, has_bias):
    """Gradients of the input projection from ``da`` (the gradient of every step's
    pre-activation, shaped like the projection): for x, the kernel and the bias."""
    features, units = ops.shape(kernel)[0], ops.shape(kernel)[1]
    x_2d = ops.reshape(x, (-1, features))
    da_2d = ops.reshape(da, (-1, units))
    dx = ops.reshape(ops.matmul(da_2d, ops.transpose(kernel)), ops.shape(x))
    d_kernel = ops.matmul(ops.transpose(x_2d), da_2d)
    return dx, d_kernel, (ops.sum(da_2d, axis=0) if has_bias else None)


def _pack_args(x, kernel, h0, recurrent_kernel, bias, mask, recurrent_mask):
    """Positional tensors for a custom-gradient function (which takes no None)."""
    args = [x, kernel, h0, recurrent_kernel]
    return args + [t for t in (bias, mask, recurrent_mask) if t is not None]


def _unpack_args(tensors, has_bias, has_mask, has_rmask):
    x, kernel, h0, recurrent_kernel = tensors[:4]
    rest = list(tensors[4:])
    bias = rest.pop(0) if has_bias else None
    mask = rest.pop(0) if has_mask else None
    rmask = rest.pop(0) if has_rmask else None
    return x, kernel, h0, recurrent_kernel, bias, mask, rmask


# Sequences of at most this many time steps, known when the graph is built, run as a loop
# unrolled in the graph: on CPU the per-step machinery of a symbolic loop costs more than the
# small recurrent matrix product it wraps.  Longer or dynamic-length sequences run in
# `keras.ops.scan`.
_UNROLL_MAX_STEPS = 100

# With the tanh activation the gradient is the hand-written back-propagation through time
# below; False lets autodiff go through the loop instead (the tests compare the two).
_HANDWRITTEN_GRADIENT = True


# The unrolled loop splits the batch into this many parts (when it has at least
# _MIN_PART_ROWS rows per part): the parts' recurrences are independent, so on a multi-core
# CPU they run side by side, while a single small matrix product per step uses one core.
_BATCH_PARTS = 2
_MIN_PART_ROWS = 8

# In the unrolled backward pass the weight gradients are computed in blocks of this many steps
# as the recursion passes them.
_GRAD_BLOCK = 10


# --- unrolled loop: static, short sequences, batch-major, one small tensor per step --------


def _batch_bounds(batch):
    """Row ranges of the batch parts: a static batch size is split when it is large enough; a
    dynamic one always is (its parts may then be empty, which the ops allow)."""
    if isinstance(batch, int):
        parts = min(_BATCH_PARTS, max(1, batch // _MIN_PART_ROWS))
        cuts = [batch * i // parts for i in range(parts + 1)]
    else:
        parts = _BATCH_PARTS
        cuts = [0] + [batch * i // parts for i in range(1, parts)] + [None]
    return list(zip(cuts[:-1], cuts[1:]))


def _rows(t, bounds):
    """Splits a tensor along its first (batch) axis."""
    if t is None:
        return [None] * len(bounds)
    if len(bounds) == 1:
        return [t]
    return [t[lo:hi] for lo, hi in bounds]


def _join(parts):
    return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=0)


def _unrolled_forward(xs, h0, recurrent_kernel, activation, masks, recurrent_mask, order):
    """Steps through ``xs[t]`` (batch, units) for t in ``order``; returns the states in that
    order.  Where ``masks[t]`` (batch, 1) is 0 the state is carried unchanged."""
    h, states = h0, []
    for t in order:
        h_in = h if recurrent_mask is None else h * recurrent_mask
        h_new = xs[t] + ops.matmul(h_in, recurrent_kernel)
        if activation is not None:
            h_new = activation(h_new)
        if masks is not None:
            h_new = ops.where(masks[t] > 0, h_new, h)
        h = h_new
        states.append(h)
    return states


def _unrolled(x, kernel, bias, h0, recurrent_kernel, activation, mask, recurrent_mask,
              go_backwards, return_sequences, handwritten):
    """The recurrence over ``x`` (batch, time, features) with a static number of steps,
    unrolled.  ``mask`` is (batch, time, 1) of 0/1.  Returns ``(states, final_state)``: the
    states (batch, time, units) in processing order (None unless return_sequences) and the
    last state."""
    steps = x.shape[1]
    order = list(range(steps - 1, -1, -1)) if go_backwards else list(range(steps))
    batch = x.shape[0] if x.shape[0] is not None else ops.shape(x)[0]
    bounds = _batch_bounds(batch)

    def forward(x, kernel, h0, recurrent_kernel, bias, mask, rmask):
        """Per batch part: the states in processing order, and the step masks by time."""
        xp = _project(x, kernel, bias)  # the one input projection, for the whole batch
        parts = []
        for xp_p, h0_p, m_p, r_p in zip(_rows(xp, bounds), _rows(h0, bounds),
                                        _rows(mask, bounds), _rows(rmask, bounds)):
            xs = ops.unstack(xp_p, num=steps, axis=1)
            masks = None if m_p is None else ops.unstack(m_p, num=steps, axis=1)
            hs = _unrolled_forward(xs, h0_p, recurrent_kernel, activation, masks, r_p, order)
            parts.append((hs, masks))
        return parts

    def joined_states(parts):
        """The whole batch's states, one tensor per step, in processing order."""
        return [_join([hs[k] for hs, _ in parts]) for k in range(steps)]

    if not handwritten:
        hs = joined_states(forward(x, kernel, h0, recurrent_kernel, bias, mask, recurrent_mask))
        return (ops.stack(hs, axis=1) if return_sequences else None), hs[-1]

    has_bias, has_mask, has_rmask = bias is not None, mask is not None, recurrent_mask is not None

    @ops.custom_gradient
    def recurrence(*tensors):
        x, kernel, h0, recurrent_kernel, b, m, rmask = _unpack_args(
            tensors, has_bias, has_mask, has_rmask)
        parts = forward(x, kernel, h0, recurrent_kernel, b, m, rmask)
        hs = joined_states(parts)
        outputs = (ops.stack(hs, axis=1), hs[-1]) if return_sequences else hs[-1]

        def grad(*args, upstream=None):
            if upstream is None:
                upstream = args
            upstream = list(upstream) if isinstance(upstream, (list, tuple)) else [upstream]
            d_final = ops.zeros_like(h0) if upstream[-1] is None else upstream[-1]
            d_states = upstream[0] if return_sequences else None
            recurrent_t = _transposed(recurrent_kernel)
            features = ops.shape(kernel)[0]
            units = ops.shape(recurrent_kernel)[0]
            position = {t: k for k, t in enumerate(order)}  # time index -> processing step

            def state_before(t):
                k = position[t]
                h_prev = hs[k - 1] if k > 0 else h0
                return h_prev if rmask is None else h_prev * rmask

            # The weight gradients are matrix products over blocks of _GRAD_BLOCK steps, each
            # done as soon as the backward recursion has passed its block, beside it.
            da_by_time = {}
            dx_blocks = {}
            sums = {"kernel": None, "recurrent": None, "bias": None}

            def add(name, value):
                sums[name] = value if sums[name] is None else sums[name] + value

            def flush(times):
                t0, t1 = min(times), max(times) + 1
                da = ops.stack([da_by_time.pop(t) for t in range(t0, t1)], axis=1)
                h_prev = ops.stack([state_before(t) for t in range(t0, t1)], axis=1)
                da_2d = ops.reshape(da, (-1, units))
                x_2d = ops.reshape(x[:, t0:t1, :], (-1, features))
                dx_blocks[t0] = ops.reshape(
                    ops.matmul(da_2d, ops.transpose(kernel)), (-1, t1 - t0, features))
                add("kernel", ops.matmul(ops.transpose(x_2d), da_2d))
                add("recurrent", ops.matmul(ops.transpose(ops.reshape(h_prev, (-1, units))),
                                            da_2d))
                if has_bias:
                    add("bias", ops.sum(da_2d, axis=0))

            # One backward recursion per batch part, side by side as in the forward pass.
            gs = _rows(d_final, bounds)  # what reaches each part's current state
            d_parts = [None if d_states is None else ops.unstack(d, num=steps, axis=1)
                       for d in _rows(d_states, bounds)]
            r_parts = _rows(rmask, bounds)
            block = []
            for k in reversed(range(steps)):  # k: processing order, t: time index
                t = order[k]
                das = []
                for p, (hs_p, masks_p) in enumerate(parts):
                    g = gs[p] if d_parts[p] is None else gs[p] + d_parts[p][k]
                    slope = 1.0 - hs_p[k] * hs_p[k]  # tanh' from tanh's output
                    if has_mask:
                        slope = slope * masks_p[t]
                    da = g * slope
                    das.append(da)
                    g_prev = ops.matmul(da, recurrent_t)
                    if has_rmask:
                        g_prev = g_prev * r_parts[p]
                    if has_mask:  # a masked step hands its state's gradient straight back
                        g_prev = g_prev + (1.0 - masks_p[t]) * g
                    gs[p] = g_prev
                da_by_time[t] = _join(das)
                block.append(t)
                if len(block) == _GRAD_BLOCK or k == 0:
                    flush(block)
                    block = []
            dx = ops.concatenate([dx_blocks[t0] for t0 in sorted(dx_blocks)], axis=1)
            grads = [dx, sums["kernel"], _join(gs), sums["recurrent"]]
            if has_bias:
                grads.append(sums["bias"])
            return tuple(grads + [None] * (has_mask + has_rmask))

        return outputs, grad

    outputs = recurrence(*_pack_args(x, kernel, h0, recurrent_kernel, bias, mask,
                                     recurrent_mask))
    return tuple(outputs) if return_sequences else (None, outputs)


# --- scan: dynamic or long sequences, time-major --------------------------------------------


def _scan_many(step, init, xs, reverse=False):
    """``ops.scan`` where ``xs`` may be a tuple of time-major sequences: they are packed into
    one tensor along the feature axis and split again inside the step, because Keras 3.15's
    TensorFlow scan fails on several sequences whose length is not static (a masked input
    of unknown length)."""
    if not isinstance(xs, tuple):
        return ops.scan(step, init, xs, reverse=reverse)
    sizes = [int(x.shape[-1]) for x in xs]
    bounds = [sum(sizes[: i + 1]) for i in range(len(sizes) - 1)]
    packed = ops.concatenate([ops.cast(x, xs[0].dtype) for x in xs], axis=-1)

    def unpacked(carry, t):
        return step(carry, tuple(ops.split(t, bounds, axis=-1)))

    return ops.scan(unpacked, init, packed, reverse=reverse)


def _scan_step(recurrent_kernel, activation, has_mask, recurrent_mask):
    def step(h, inputs):
        if has_mask:
            xp_t, m_t = inputs
        else:
            xp_t = inputs
        h_in = h if recurrent_mask is None else h * recurrent_mask
        h_new = xp_t + ops.matmul(h_in, recurrent_kernel)
        if activation is not None:
            h_new = activation(h_new)
        if has_mask:
            h_new = ops.where(m_t > 0, h_new, h)
        return h_new, h_new

    return step


def _scanned(x, kernel, bias, h0, recurrent_kernel, activation, mask, recurrent_mask,
             handwritten):
    """The recurrence in `keras.ops.scan` over time-major ``x`` (time, batch, features), in
    the order given; ``mask`` (time, batch, 1) of 0/1.  Returns all states, time-major."""
    if not handwritten:
        xp = _project(x, kernel, bias)
        step = _scan_step(recurrent_kernel, activation, mask is not None, recurrent_mask)
        return _scan_many(step, h0, xp if mask is None else (xp, mask))[1]

    has_bias, has_mask, has_rmask = bias is not None, mask is not None, recurrent_mask is not None

    @ops.custom_gradient
    def recurrence(*tensors):
        x, kernel, h0, recurrent_kernel, b, m, rmask = _unpack_args(
            tensors, has_bias, has_mask, has_rmask)
        xp = _project(x, kernel, b)
        step = _scan_step(recurrent_kernel, activations.tanh, has_mask, rmask)
        states = _scan_many(step, h0, xp if m is None else (xp, m))[1]

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            recurrent_t = _transposed(recurrent_kernel)
            slope = 1.0 - states * states  # tanh' for all steps at once
            if has_mask:
                slope = slope * m

            def back_step(g_next, inputs):
                if has_mask:
                    dh_t, slope_t, m_t = inputs
                else:
                    dh_t, slope_t = inputs
                g = dh_t + g_next  # all that reaches h_t
                da = g * slope_t
                g_prev = ops.matmul(da, recurrent_t)
                if has_rmask:
                    g_prev = g_prev * rmask
                if has_mask:
                    g_prev = g_prev + (1.0 - m_t) * g
                return g_prev, da

            seq = (upstream, slope) if not has_mask else (upstream, slope, m)
            dh0, da = _scan_many(back_step, ops.zeros_like(h0), seq, reverse=True)
            units = ops.shape(recurrent_kernel)[0]
            h_prev = ops.concatenate([ops.expand_dims(h0, 0), states[:-1]], axis=0)
            if has_rmask:
                h_prev = h_prev * rmask
            d_recurrent = ops.matmul(ops.transpose(ops.reshape(h_prev, (-1, units))),
                                     ops.reshape(da, (-1, units)))
            dx, d_kernel, d_bias = _weight_grads(x, da, kernel, has_bias)
            grads = [dx, d_kernel, dh0, d_recurrent]
            if has_bias:
                grads.append(d_bias)
            return tuple(grads + [None] * (has_mask + has_rmask))

        return states, grad

    return recurrence(*_pack_args(x, kernel, h0, recurrent_kernel, bias, mask, recurrent_mask))


@keras.saving.register_keras_serializable(package="zoo")
class TanhRNN(keras.layers.Layer):
    """Fully-connected recurrence ``h_t = activation(x_t . kernel + h_{t-1} . recurrent_kernel
    + bias)``, a drop-in for ``keras.layers.SimpleRNN`` with the input projection hoisted out
    of the time loop.

    Arguments are those of ``SimpleRNN`` plus ``zero_output_for_mask`` from
    ``keras.layers.RNN``.  Sequences with a static length of up to 100 steps are always
    unrolled; ``unroll=True`` unrolls longer ones too (and, as in Keras, needs a static
    number of time steps).

    Call arguments: ``sequences`` (batch, timesteps, features); ``initial_state`` (a tensor or
    a one-element list, (batch, units)); ``mask`` (batch, timesteps), True where a step is
    used; ``training``.
    """

    def __init__(
        self,
        units,
        activation="tanh",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        seed=None,
        zero_output_for_mask=False,
        **kwargs,
    ):
        if not isinstance(units, int) or isinstance(units, bool) or units <= 0:
            raise ValueError(
                f"TanhRNN expects `units` to be a positive integer, got units={units!r}"
            )
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.units = units
        self.activation = activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.recurrent_constraint = constraints.get(recurrent_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.dropout = min(1.0, max(0.0, float(dropout)))
        self.recurrent_dropout = min(1.0, max(0.0, float(recurrent_dropout)))
        self.return_sequences = return_sequences
        self.return_state = return_state
        self.go_backwards = go_backwards
        self.stateful = stateful
        self.unroll = unroll
        self.zero_output_for_mask = zero_output_for_mask
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True
        self.state_size = units
        self.output_size = units
        self._state_holder = _NotTracked()
        self._expected_batch_size = None

    # --- shapes -----------------------------------------------------------------------

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
        features = sequences_shape[-1]
        if features is None:
            raise ValueError(
                f"TanhRNN layer '{self.name}' needs the features dimension of its 3-D input "
                f"(batch, timesteps, features) to be known, got shape {tuple(sequences_shape)}"
            )
        self.kernel = self.add_weight(
            shape=(features, self.units),
            name="kernel",
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, self.units),
            name="recurrent_kernel",
            initializer=self.recurrent_initializer,
            regularizer=self.recurrent_regularizer,
            constraint=self.recurrent_constraint,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(self.units,),
                name="bias",
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        else:
            self.bias = None
        if self.stateful:
            if self._state_holder.variables is not None:
                self.reset_state()
            else:
                batch_size = sequences_shape[0]
                if batch_size is None:
                    raise ValueError(
                        "When using `stateful=True` in TanhRNN, the batch size must be "
                        f"static (use keras.Input(batch_shape=...)); got input shape "
                        f"{tuple(sequences_shape)}"
                    )
                self._create_state_variables(batch_size)
        self.built = True

    def compute_output_shape(self, sequences_shape, initial_state_shape=None):
        self._check_rank(sequences_shape)
        batch_size, timesteps = sequences_shape[0], sequences_shape[1]
        if self.return_sequences:
            output_shape = (batch_size, timesteps, self.units)
        else:
            output_shape = (batch_size, self.units)
        if self.return_state:
            return output_shape, (batch_size, self.units)
        return output_shape

    def compute_mask(self, sequences, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0] if mask else None
        output_mask = mask if self.return_sequences else None
        if self.return_state:
            return [output_mask, None]
        return output_mask

    # --- state ------------------------------------------------------------------------

    def _create_state_variables(self, batch_size):
        self._state_holder.variables = [
            keras.Variable(
                initializer="zeros",
                shape=(batch_size, self.units),
                dtype=self.variable_dtype,
                trainable=False,
                name="rnn_state",
            )
        ]
        self._expected_batch_size = batch_size

    @property
    def states(self):
        """The state variables of a stateful layer (a one-element list), else None."""
        return self._state_holder.variables

    def get_initial_state(self, batch_size):
        return [ops.zeros((batch_size, self.units), dtype=self.compute_dtype)]

    def reset_state(self, states=None):
        """Sets the state of a stateful layer to zeros, or to ``states`` when given."""
        if self.states is None:
            return
        if states is None:
            for v in self.states:
                v.assign(ops.zeros(v.shape, dtype=v.dtype))
            return
        if not isinstance(states, (list, tuple)):
            states = [states]
        if len(states) != 1:
            raise ValueError(f"TanhRNN has one state; reset_state got {len(states)} values")
        value = ops.convert_to_tensor(states[0], dtype=self.states[0].dtype)
        if tuple(value.shape) != tuple(self.states[0].shape):
            raise ValueError(
                f"TanhRNN state has shape {tuple(self.states[0].shape)}, "
                f"reset_state got shape {tuple(value.shape)}"
            )
        self.states[0].assign(value)

    def reset_states(self):
        # Compatibility alias, as in Keras's RNN.
        self.reset_state()

    # --- forward ----------------------------------------------------------------------

    def call(self, sequences, initial_state=None, mask=None, training=False):
        self._check_rank(sequences.shape)
        dtype = self.compute_dtype
        sequences = ops.cast(sequences, dtype)
        batch_size = ops.shape(sequences)[0]

        if initial_state is None:
            if self.stateful:
                actual = sequences.shape[0]
                if actual is not None and actual != self._expected_batch_size:
                    raise ValueError(
                        "If TanhRNN is stateful, the batch size of the input sequences must "
                        f"be the batch size of its state: expected {self._expected_batch_size}"
                        f", got {actual}"
                    )
                h0 = ops.convert_to_tensor(self.states[0])
            else:
                h0 = ops.zeros((batch_size, self.units), dtype=dtype)
        else:
            if isinstance(initial_state, (list, tuple)):
                if len(initial_state) != 1:
                    raise ValueError(
                        "TanhRNN has one state; initial_state should be one tensor "
                        f"(batch, {self.units}), got {len(initial_state)} tensors"
                    )
                initial_state = initial_state[0]
            h0 = ops.convert_to_tensor(initial_state)
        h0 = ops.cast(h0, dtype)

        # Dropout masks, one per sequence in the batch, shared by all time steps (as Keras).
        x = sequences
        if training and self.dropout > 0:
            keep = keras.random.dropout(
                ops.ones_like(x[:, 0, :]), rate=self.dropout, seed=self.seed_generator
            )
            x = x * ops.expand_dims(keep, 1)
        recurrent_mask = None
        if training and self.recurrent_dropout > 0:
            recurrent_mask = keras.random.dropout(
                ops.ones_like(h0), rate=self.recurrent_dropout, seed=self.seed_generator
            )

        kernel = ops.cast(self.kernel, dtype)
        bias = None if self.bias is None else ops.cast(self.bias, dtype)
        recurrent_kernel = ops.cast(self.recurrent_kernel, dtype)
        float_mask = None  # (batch, time, 1) of 0/1
        if mask is not None:
            float_mask = ops.expand_dims(ops.cast(ops.cast(mask, "bool"), dtype), -1)
        handwritten = self.activation is activations.tanh and _HANDWRITTEN_GRADIENT

        # go_backwards processes the reversed sequence and returns it reversed, as Keras does.
        static_steps = sequences.shape[1]
        if self.unroll and static_steps is None:
            raise ValueError(
                f"TanhRNN layer '{self.name}' cannot unroll (unroll=True) a sequence whose "
                f"number of time steps is not known: got input shape {tuple(sequences.shape)}; "
                "pass a `shape` with the time dimension to keras.Input"
            )
        if static_steps is not None and 0 < static_steps and (
            self.unroll or static_steps <= _UNROLL_MAX_STEPS
        ):
            states, final_state = _unrolled(
                x, kernel, bias, h0, recurrent_kernel, self.activation, float_mask,
                recurrent_mask, self.go_backwards, self.return_sequences, handwritten,
            )
        else:
            x_tm = _time_major(x)
            mask_tm = None if float_mask is None else _time_major(float_mask)
            if self.go_backwards:
                x_tm = ops.flip(x_tm, axis=0)
                mask_tm = None if mask_tm is None else ops.flip(mask_tm, axis=0)
            states_tm = _scanned(x_tm, kernel, bias, h0, recurrent_kernel, self.activation,
                                 mask_tm, recurrent_mask, handwritten)
            final_state = states_tm[-1]
            states = _time_major(states_tm) if self.return_sequences else None

        # Outputs: as Keras's RNN, a masked step outputs the previous output (zeros before the
        # first unmasked step), or zeros with zero_output_for_mask; the state is carried.
        outputs, last_output = states, final_state
        if mask is not None:
            step_mask = ops.expand_dims(ops.cast(mask, "bool"), -1)  # (batch, time, 1)
            if self.go_backwards:
                step_mask = ops.flip(step_mask, axis=1)
            if self.zero_output_for_mask:
                keep = step_mask
            else:
                keep = ops.cumsum(ops.cast(step_mask, "int32"), axis=1) > 0
            last_output = ops.where(keep[:, -1], final_state, ops.zeros_like(final_state))
            if self.return_sequences:
                outputs = ops.where(keep, states, ops.zeros_like(states))

        if self.stateful:
            self.states[0].assign(ops.cast(final_state, self.states[0].dtype))

        output = outputs if self.return_sequences else last_output
        if self.return_state:
            return output, final_state
        return output

    # --- config -----------------------------------------------------------------------

    def get_config(self):
        config = {
            "units": self.units,
            "activation": activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": initializers.serialize(self.recurrent_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "recurrent_regularizer": regularizers.serialize(self.recurrent_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
            "activity_regularizer": regularizers.serialize(self.activity_regularizer),
            "kernel_constraint": constraints.serialize(self.kernel_constraint),
            "recurrent_constraint": constraints.serialize(self.recurrent_constraint),
            "bias_constraint": constraints.serialize(self.bias_constraint),
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "stateful": self.stateful,
            "unroll": self.unroll,
            "zero_output_for_mask": self.zero_output_for_mask,
            "seed": self.seed,
        }
        return {**super().get_config(), **config}
