"""A/B of two versions of zoo's CPU fast path in ONE process, alternating rounds.

Each variant is a ``fast_rnn.py`` file (default A: the committed ``HEAD:zoo/fast_rnn.py``,
B: the working tree's) plus optional ``zoo.layers`` settings; the char model of
``bench_vs_torch`` (Embedding -> builder's 2 layers -> Dense, Adam) is built and traced once per
variant, then timed epochs alternate A, B, B, A, ...  Prints chars/s per round, the best and
the median ratio B / A, and the load average before and after (a contended run shows there).

    python bench/ab_fast_rnn.py --builder gru --size small [--a FILE] [--b FILE]
        [--a-set _BATCH_PARTS=1] [--b-set _BATCH_PARTS=2] [--rounds 6] [--steps 10]
        [--mode train|forward] [--shape UNITS,WINDOW,BATCH,LAYERS] [--policy mixed_bfloat16]
        [--b-policy float32]

``--shape`` replaces ``--size`` (e.g. the main job's ``384,100,32,1``); ``--policy`` sets Keras's
dtype policy for both variants, ``--b-policy`` another one for B (A/B of two precisions: give
``--a`` and ``--b`` the same file, or neither after committing).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_vs_torch import EMBED, LAYERS, SIZES, VOCAB, _data  # noqa: E402


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _settings(pairs):
    out = {}
    for p in pairs or []:
        k, v = p.split("=", 1)
        out[k] = eval(v, {})  # bench-only: literal settings such as 1, True
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--builder", default="gru")
    ap.add_argument("--size", default="small", choices=list(SIZES))
    ap.add_argument("--a", help="fast_rnn.py of variant A (default: HEAD's)")
    ap.add_argument("--b", help="fast_rnn.py of variant B (default: the working tree's)")
    ap.add_argument("--a-set", action="append", help="zoo.layers NAME=VALUE for A")
    ap.add_argument("--b-set", action="append", help="zoo.layers NAME=VALUE for B")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--mode", default="train", choices=["train", "forward"])
    ap.add_argument("--shape", help="UNITS,WINDOW,BATCH,LAYERS instead of --size")
    ap.add_argument("--policy", default="float32", help="Keras dtype policy of both variants")
    ap.add_argument("--b-policy", help="Keras dtype policy of B (default: --policy)")
    args = ap.parse_args()
    print("load average at start:", open("/proc/loadavg").read().split()[:3], flush=True)

    root = os.path.dirname(HERE)
    a_path = args.a
    if a_path is None:
        a_path = "/tmp/ab_fast_rnn_head.py"
        with open(a_path, "w") as f:
            f.write(subprocess.check_output(["git", "-C", root, "show", "HEAD:zoo/fast_rnn.py"],
                                            text=True))
    b_path = args.b or os.path.join(root, "zoo", "fast_rnn.py")

    import keras
    import numpy as np

    import zoo
    import zoo.layers as zl
    from zoo.tasks.char_rnn import char_network

    units, window, batch = SIZES[args.size]
    layers = LAYERS
    if args.shape:
        units, window, batch, layers = (int(v) for v in args.shape.split(","))
    x, y = _data(args.steps, window, batch)
    x, y = x.astype(np.int32), y.astype(np.int32)
    variants = {}
    policies = {"A": args.policy, "B": args.b_policy or args.policy}
    for name, path, sets in (("A", a_path, args.a_set), ("B", b_path, args.b_set)):
        keras.mixed_precision.set_global_policy(policies[name])
        mod = _load(path, f"fast_rnn_{name}")
        saved = {k: getattr(zl, k) for k in _settings(sets)}
        for k, v in _settings(sets).items():
            setattr(zl, k, v)
        zoo.fast_rnn = mod
        sys.modules["zoo.fast_rnn"] = mod
        keras.utils.set_random_seed(0)
        body = zoo.build_model(args.builder, layers=layers, units=units, return_sequences=True)
        model = char_network(body, VOCAB, EMBED)
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        if args.mode == "train":
            model.fit(x[:batch], y[:batch], batch_size=batch, epochs=1, verbose=0)
        else:
            model.predict(x[:batch], batch_size=batch, verbose=0)
        for k, v in saved.items():
            setattr(zl, k, v)
        variants[name] = model

    def epoch(model):
        t, c = time.perf_counter(), time.process_time()
        if args.mode == "train":
            model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
        else:
            model.predict(x, batch_size=batch, verbose=0)
        return x.size / (time.perf_counter() - t), x.size / (time.process_time() - c)

    for name in variants:  # one untimed epoch each (the first full epoch is slow)
        epoch(variants[name])
    speeds = {"A": [], "B": []}
    cpu = {"A": [], "B": []}
    for r in range(args.rounds):
        for name in ("A", "B") if r % 2 == 0 else ("B", "A"):
            s, c = epoch(variants[name])
            speeds[name].append(s)
            cpu[name].append(c)
    for name in speeds:
        print(f"{name}: chars/s " + ", ".join(f"{s:.0f}" for s in speeds[name])
              + "; chars per CPU-second " + ", ".join(f"{s:.0f}" for s in cpu[name]))
    best = max(speeds["B"]) / max(speeds["A"])
    med = statistics.median(speeds["B"]) / statistics.median(speeds["A"])
    cmed = statistics.median(cpu["B"]) / statistics.median(cpu["A"])
    print(f"[{args.shape or args.size} {args.builder} {args.mode} A {policies['A']}, "
          f"B {policies['B']}] B/A wall best "
          f"{best:.3f}, median {med:.3f}; CPU-time median {cmed:.3f}")
    print("load average at end:", open("/proc/loadavg").read().split()[:3], flush=True)


if __name__ == "__main__":
    main()
