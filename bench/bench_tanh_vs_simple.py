"""Training speed of zoo's TanhRNN against keras.layers.SimpleRNN, measured in one run.

The same small character model is trained with each layer: Embedding(65, 64) -> 2 stacked
recurrent layers of 128 units returning sequences -> Dense(65) logits, windows of 50
characters, batches of 50, synthetic random tokens.  Each model is compiled and warmed up
first; then timed epochs of the same number of steps alternate between the two models.  An
epoch is timed from its start to its end by a callback (the set-up of each `fit` call is left
out).  The best epoch of each model gives the final figures (the machine may be shared; the
medians are printed too).

    python bench/bench_tanh_vs_simple.py [--steps 40] [--rounds 5]

The last line reads like ``tanh-rnn 123456 chars/s, simple-rnn 98765 chars/s, ratio 1.25``.
Target: ratio >= 1.2 on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

VOCAB = 65
EMBED = 64
UNITS = 128
LAYERS = 2
WINDOW = 50
BATCH = 50


def build(kind: str, seed: int):
    import keras

    from zoo.layers import TanhRNN

    layer_cls = TanhRNN if kind == "tanh-rnn" else keras.layers.SimpleRNN
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((WINDOW,), dtype="int32")
    x = keras.layers.Embedding(VOCAB, EMBED)(inputs)
    for _ in range(LAYERS):
        x = layer_cls(UNITS, return_sequences=True)(x)
    logits = keras.layers.Dense(VOCAB)(x)
    model = keras.Model(inputs, logits, name=kind)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="training steps per timed epoch")
    parser.add_argument("--rounds", type=int, default=5, help="timed epochs per model")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.rounds < 1:
        parser.error("--steps and --rounds must be at least 1")

    import numpy as np

    rng = np.random.default_rng(args.seed)
    tokens = rng.integers(0, VOCAB, size=(args.steps * BATCH, WINDOW + 1), dtype=np.int32)
    x, y = tokens[:, :-1], tokens[:, 1:]
    chars = args.steps * BATCH * WINDOW

    kinds = ("tanh-rnn", "simple-rnn")
    models = {kind: build(kind, args.seed) for kind in kinds}

    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds = time.perf_counter() - self.start

    def epoch(kind: str) -> float:
        timer = EpochTimer()
        models[kind].fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
                         callbacks=[timer])
        return chars / timer.seconds

    for kind in kinds:  # warm-up: tracing and the first epoch are not timed
        epoch(kind)

    speeds = {kind: [] for kind in kinds}
    for r in range(args.rounds):
        for kind in kinds if r % 2 == 0 else reversed(kinds):
            speeds[kind].append(epoch(kind))
    for kind in kinds:
        runs = ", ".join(f"{s:.0f}" for s in speeds[kind])
        print(f"{kind:>10}: {runs} chars/s")

    print(f"steps per epoch {args.steps}, batch {BATCH}, window {WINDOW}, "
          f"{LAYERS} x {UNITS} units, {args.rounds} timed epochs each")
    med_tanh = statistics.median(speeds["tanh-rnn"])
    med_simple = statistics.median(speeds["simple-rnn"])
    print(f"medians: tanh-rnn {med_tanh:.0f} chars/s, simple-rnn {med_simple:.0f} chars/s, "
          f"ratio {med_tanh / med_simple:.2f}")
    tanh, simple = max(speeds["tanh-rnn"]), max(speeds["simple-rnn"])
    print(f"tanh-rnn {tanh:.0f} chars/s, simple-rnn {simple:.0f} chars/s, "
          f"ratio {tanh / simple:.2f}")


if __name__ == "__main__":
    main()
