"""Sampling speed of zoo's compiled sampler against the naive per-character predict loop.

Both sample from the same trained character model: a 2-layer, 128-unit LSTM (Embedding(64)
-> LSTM -> LSTM -> Dense logits), trained briefly here on the start of the Shakespeare corpus,
or any zoo char-rnn model given with ``--model`` (a registered name, NAME@ALIAS, NAME/VERSION
or a model folder, as ``zoo.load`` takes).

* zoo: :class:`zoo.sampling.Sampler`, the whole sample in one graph call that carries the
  recurrent state step to step; timed at n=1 (one sample) and n=64 (64 samples at once),
  after a first call that traces and compiles it (reported separately).
* naive: the loop of the classic Keras text-generation example: for every character, run
  ``model.predict`` over the last ``--window`` characters (40, as in the example) and sample
  the next character from the last step's probabilities with NumPy.  It is slow, so it runs
  for only ``--naive-chars`` characters.

    python bench/bench_sampling.py [--model NAME] [--length 5000] [--naive-chars 50]

The last line reads like ``zoo n=1 20000 chars/s, n=64 60000 chars/s, naive 16 chars/s,
ratio 1250``.  Targets on a 2-core CPU: zoo n=1 >= 10,000 chars/s and ratio >= 500.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

UNITS = 128
LAYERS = 2
EMBED = 64
SEQ = 100
BATCH = 64
PRIME = "ROMEO:"


def train_briefly(chars: int, epochs: int, seed: int):
    """A 2 x 128 LSTM char model trained on the first ``chars`` characters of the plays."""
    import keras
    import numpy as np

    import zoo
    from zoo.data.shakespeare import load_plays
    from zoo.data.text import CharVocab
    from zoo.tasks.char_rnn import char_network, windows

    works = load_plays()
    text = "\n\n".join(works[name] for name in sorted(works))[:chars]
    vocab = CharVocab.from_text(text)
    split = windows(np.asarray(vocab.encode(text), np.int32), SEQ)
    keras.utils.set_random_seed(seed)
    body = zoo.build_model("lstm", return_sequences=True, layers=LAYERS, units=UNITS)
    model = char_network(body, len(vocab), EMBED)
    model.compile(optimizer=keras.optimizers.Adam(4e-3, clipnorm=5.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    t = time.perf_counter()
    hist = model.fit(split.x, split.y, batch_size=BATCH, epochs=epochs, verbose=0)
    print(f"trained a {LAYERS} x {UNITS} LSTM on {len(text)} characters for {epochs} epoch(s) "
          f"in {time.perf_counter() - t:.0f} s (loss {hist.history['loss'][-1]:.3f} nats/char)")
    return model, vocab


def naive_loop(model, vocab, prime: str, chars: int, window: int, temperature: float, seed: int):
    """The classic example's loop: model.predict over the sliding window, once per character."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = list(vocab.encode(prime))
    for _ in range(chars):
        x = np.asarray(ids[-window:], np.int32)[None, :]
        logits = model.predict(x, verbose=0)[0, -1].astype(np.float64)
        logits[0] = -np.inf  # never the unknown-character id
        p = np.exp((logits - logits.max()) / temperature)
        ids.append(int(rng.choice(len(p), p=p / p.sum())))
    return vocab.decode(ids[len(prime):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a zoo char-rnn model (name or folder); default: train one")
    ap.add_argument("--train-chars", type=int, default=300_000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--length", type=int, default=5000, help="characters per zoo sample")
    ap.add_argument("--naive-chars", type=int, default=50)
    ap.add_argument("--window", type=int, default=40, help="the naive loop's window (maxlen)")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    import numpy as np

    from zoo.sampling import Sampler

    if args.model:
        import zoo

        loaded = zoo.load(args.model)
        model, vocab = loaded.keras_model, loaded.vocab
        print(f"model: {loaded!r}")
    else:
        model, vocab = train_briefly(args.train_chars, args.epochs, args.seed)

    sampler = Sampler(model, banned=(0,))
    prime = np.asarray(vocab.encode(PRIME), np.int32)[None, :]
    t = time.perf_counter()
    sampler.sample(prime, 10, args.temperature, args.seed)
    first = time.perf_counter() - t

    def rate(n: int, length: int, rounds: int = 3) -> float:
        primes = np.tile(prime, (n, 1))
        sampler.sample(primes, 10, args.temperature, args.seed)  # compiles for this batch
        best = 0.0
        for r in range(rounds):
            t = time.perf_counter()
            sampler.sample(primes, length, args.temperature, args.seed + r)
            best = max(best, n * length / (time.perf_counter() - t))
        return best

    zoo1 = rate(1, args.length)
    zoo64 = rate(64, max(args.length // 5, 200))
    sample = vocab.decode(sampler.sample(prime, 200, args.temperature, args.seed)[0].tolist())

    naive_loop(model, vocab, PRIME, 2, args.window, args.temperature, args.seed)  # warm up
    t = time.perf_counter()
    naive_loop(model, vocab, PRIME, args.naive_chars, args.window, args.temperature, args.seed)
    naive = args.naive_chars / (time.perf_counter() - t)

    print(f"first zoo call (trace + compile): {first:.2f} s")
    print(f"sample: {PRIME}{sample!r}")
    print(f"zoo n=1 {zoo1:.0f} chars/s, n=64 {zoo64:.0f} chars/s, naive {naive:.1f} chars/s, "
          f"ratio {zoo1 / naive:.0f}")


if __name__ == "__main__":
    main()
