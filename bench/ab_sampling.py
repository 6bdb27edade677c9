"""A/B of two versions of zoo's sampler (``zoo/sampling.py``) in ONE process, alternating rounds.

Both sample from the same char model (Embedding(65, 64) -> 2 x LSTM(128) -> Dense(65), random
weights: the speed does not depend on training) with ``banned=(0,)``.  Default A: the committed
``HEAD:zoo/sampling.py``; B: the working tree's.  Prints chars/s per round at n=1, the best and
median ratio B / A, and the load average before and after.

    python bench/ab_sampling.py [--a FILE] [--b FILE] [--builder lstm] [--length 5000]
        [--rounds 6] [--n 1] [--temperature 0.8]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--a")
    ap.add_argument("--b")
    ap.add_argument("--builder", default="lstm")
    ap.add_argument("--units", type=int, default=128)
    ap.add_argument("--length", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--n", type=int, default=1)
    ap.add_argument("--temperature", type=float, default=0.8)
    args = ap.parse_args()
    print("load average at start:", open("/proc/loadavg").read().split()[:3], flush=True)
    root = os.path.dirname(HERE)
    a_path = args.a
    if a_path is None:
        a_path = "/tmp/ab_sampling_head.py"
        with open(a_path, "w") as f:
            f.write(subprocess.check_output(["git", "-C", root, "show", "HEAD:zoo/sampling.py"],
                                            text=True))
    b_path = args.b or os.path.join(root, "zoo", "sampling.py")

    import keras
    import numpy as np

    import zoo
    from zoo.tasks.char_rnn import char_network

    keras.utils.set_random_seed(0)
    body = zoo.build_model(args.builder, layers=2, units=args.units, return_sequences=True)
    model = char_network(body, 65, 64)
    model(np.zeros((1, 3), np.int32))
    prime = np.tile(np.array([[5, 6, 7, 8, 9, 10]], np.int32), (args.n, 1))
    samplers = {}
    for name, path in (("A", a_path), ("B", b_path)):
        s = _load(path, f"sampling_{name}").Sampler(model, banned=(0,))
        s.sample(prime, 300, args.temperature, 1)  # trace and compile
        samplers[name] = s
    a = samplers["A"].sample(prime, 300, args.temperature, 3)
    b = samplers["B"].sample(prime, 300, args.temperature, 3)
    print(f"same ids from A and B (seed 3, 300 steps): {np.array_equal(a, b)}; "
          f"greedy same: {np.array_equal(samplers['A'].sample(prime, 300, 0.0), samplers['B'].sample(prime, 300, 0.0))}")
    speeds = {"A": [], "B": []}
    for r in range(args.rounds):
        for name in ("A", "B") if r % 2 == 0 else ("B", "A"):
            t = time.perf_counter()
            samplers[name].sample(prime, args.length, args.temperature, r)
            speeds[name].append(args.n * args.length / (time.perf_counter() - t))
    for name in speeds:
        print(f"{name}: chars/s " + ", ".join(f"{s:.0f}" for s in speeds[name]))
    print(f"[sampling {args.builder} n={args.n}] A best {max(speeds['A']):.0f}, B best "
          f"{max(speeds['B']):.0f}; B/A best {max(speeds['B']) / max(speeds['A']):.3f}, median "
          f"{statistics.median(speeds['B']) / statistics.median(speeds['A']):.3f}")
    print("load average at end:", open("/proc/loadavg").read().split()[:3], flush=True)


if __name__ == "__main__":
    main()
