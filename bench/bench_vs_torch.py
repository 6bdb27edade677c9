"""Training speed of zoo's builders against PyTorch's recurrent layers on the same CPU.

The same character model is trained on each side: Embedding(65, 64) -> 2 recurrent layers ->
Dense(65) logits, cross-entropy on every step, Adam, synthetic random tokens.  zoo's side is
the model the char-rnn task builds (``zoo.tasks.char_rnn.char_network`` around
``zoo.build_model(builder, layers=2, units=U, return_sequences=True)``) trained with
``Model.fit``; PyTorch's side is ``nn.Embedding -> nn.LSTM / nn.GRU / nn.RNN (tanh) ->
nn.Linear`` with a plain training loop.  Pairs:

    lstm -> nn.LSTM    gru -> nn.GRU    simple-rnn -> nn.RNN    tanh-rnn -> nn.RNN

Two sizes: "small" (2 x 128 units, windows of 50, batches of 50) and "large" (2 x 512 units,
windows of 100, batches of 64).  Each side runs in its own worker process (so each one's peak
resident memory, ``ru_maxrss``, is its own); after a warm-up epoch, timed epochs of ``--steps``
training steps alternate between the two workers, ``--rounds`` each, in one run.  zoo's
epoch is timed from its first step's start to its last step's end (``Model.fit``'s set-up per
call, which a real epoch of hundreds of steps amortizes, is printed apart); PyTorch's is its
whole loop.  The best
epoch of each side gives the figures (the medians are printed too); the ratio is zoo / PyTorch.

    python bench/bench_vs_torch.py [--sizes small,large] [--builders lstm,gru,...]
                                   [--rounds 5] [--steps 20] [--large-steps 4]
                                   [--torch-threads N] [--baseline DIR] [--out FILE]

PyTorch runs with ``--torch-threads`` intra-op threads, by default the number of CPUs (what a
user gets); the setting is printed.  ``--baseline DIR`` adds a third worker that runs zoo from
another checkout (``PYTHONPATH=DIR``, e.g. ``git archive main | tar -x -C DIR``), in the same
alternating rounds, for an A/B of a change under the same load.  The load average (1, 5 and 15
minutes) is printed at the start and the end: on a shared machine a load above the number of
CPUs means a contended run, and only the ratios of one run mean anything.  Everything printed
also goes to ``--out`` (default ``bench/results/vs_torch.txt``).

PyTorch is a bench-only dependency (the ``bench`` extra: ``torch==2.13.0``, CPU wheel).
Targets on a 2-core CPU: lstm, gru and simple-rnn >= 1.0 at both sizes; tanh-rnn >= 1.3.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

VOCAB = 65
EMBED = 64
LAYERS = 2
SIZES = {  # name: (units, window, batch)
    "small": (128, 50, 50),
    "large": (512, 100, 64),
}
TORCH_LAYER = {"lstm": "LSTM", "gru": "GRU", "simple-rnn": "RNN", "tanh-rnn": "RNN"}


def _data(steps, window, batch, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, VOCAB, size=(steps * batch, window + 1), dtype=np.int64)
    return tokens[:, :-1], tokens[:, 1:]


def _loadavg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "unknown"


def _maxrss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


# ------------------------------------------------------------------------------ workers


def keras_worker(builder, units, window, batch, steps, seed):
    """Returns a function that runs one timed epoch and returns chars/s."""
    import keras
    import numpy as np

    import zoo
    from zoo.tasks.char_rnn import char_network

    keras.utils.set_random_seed(seed)
    body = zoo.build_model(builder, layers=LAYERS, units=units, return_sequences=True)
    model = char_network(body, VOCAB, EMBED)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data(steps, window, batch, seed)
    x, y = x.astype(np.int32), y.astype(np.int32)

    class StepTimer(keras.callbacks.Callback):
        """From the first training step's start to the last one's end: the steady state of
        an epoch.  ``Model.fit``'s set-up around it (data adapter, iterator, callbacks) is a
        cost per ``fit`` call that a real epoch of hundreds of steps amortizes; it is timed
        apart (``setup_s``) and printed, not counted in chars/s."""

        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.end = time.perf_counter()

    def epoch():
        timer = StepTimer()
        start = time.perf_counter()
        model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0,
                  callbacks=[timer])
        total = time.perf_counter() - start
        steps_s = timer.end - timer.start
        return x.size / steps_s, total - steps_s

    return epoch


def torch_worker(builder, units, window, batch, steps, seed, threads=0):
    import torch
    from torch import nn

    if threads:
        torch.set_num_threads(threads)

    torch.manual_seed(seed)
    layer_cls = getattr(nn, TORCH_LAYER[builder])
    kwargs = {"nonlinearity": "tanh"} if layer_cls is nn.RNN else {}

    class CharModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(VOCAB, EMBED)
            self.rnn = layer_cls(EMBED, units, num_layers=LAYERS, batch_first=True, **kwargs)
            self.head = nn.Linear(units, VOCAB)

        def forward(self, ids):
            return self.head(self.rnn(self.embedding(ids))[0])

    model = CharModel()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    x, y = _data(steps, window, batch, seed)
    x, y = torch.from_numpy(x), torch.from_numpy(y)

    def epoch():
        start = time.perf_counter()
        for i in range(steps):
            xb, yb = x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb).reshape(-1, VOCAB), yb.reshape(-1))
            loss.backward()
            optimizer.step()
        float(loss.detach())
        return x.numel() / (time.perf_counter() - start), 0.0

    return epoch


def worker_main(args) -> None:
    units, window, batch = SIZES[args.size]
    if args.worker == "zoo":
        epoch = keras_worker(args.builder, units, window, batch, args.steps, args.seed)
    else:
        epoch = torch_worker(args.builder, units, window, batch, args.steps, args.seed,
                             args.torch_threads)
    epoch()  # warm-up: tracing and the first epoch are not timed
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip() == "epoch":
            speed, setup = epoch()
            print(json.dumps({"chars_per_s": speed, "setup_s": setup}), flush=True)
        else:
            break
    print(json.dumps({"maxrss_mib": _maxrss_mib()}), flush=True)


# ------------------------------------------------------------------------------ the run


class Worker:
    def __init__(self, side, builder, size, steps, seed, torch_threads=0, pythonpath=None):
        cmd = [sys.executable, os.path.abspath(__file__), "--worker",
               "zoo" if side == "base" else side, "--builder", builder,
               "--size", size, "--steps", str(steps), "--seed", str(seed),
               "--torch-threads", str(torch_threads)]
        env = dict(os.environ)
        if pythonpath:
            env["PYTHONPATH"] = os.path.abspath(pythonpath)
        self.side = side
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)

    def _reply(self):
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.side} worker ended early "
                                   f"(exit status {self.proc.wait()})")
            line = line.strip()
            if line.startswith("{"):
                return json.loads(line)

    def ready(self):
        return self._reply()

    def epoch(self):
        self.proc.stdin.write("epoch\n")
        self.proc.stdin.flush()
        reply = self._reply()
        return reply["chars_per_s"], reply["setup_s"]

    def finish(self) -> float:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        rss = self._reply()["maxrss_mib"]
        self.proc.wait()
        return rss


def compare(builder, size, steps, rounds, seed, torch_threads=0, baseline=None):
    # One worker at a time starts (and warms up), so their set-up does not overlap timing.
    workers = {}
    order = ["zoo", "torch"] + (["base"] if baseline else [])
    try:
        for side in order:
            workers[side] = Worker(side, builder, size, steps, seed, torch_threads,
                                   baseline if side == "base" else None)
            workers[side].ready()
        speeds = {side: [] for side in order}
        setups = {side: [] for side in order}
        for r in range(rounds):
            for side in (order if r % 2 == 0 else order[::-1]):
                speed, setup = workers[side].epoch()
                speeds[side].append(speed)
                setups[side].append(setup)
        rss = {side: w.finish() for side, w in workers.items()}
    finally:  # on an error or an interrupt, no worker is left running
        for w in workers.values():
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
    return speeds, rss, {side: statistics.median(v) for side, v in setups.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="small,large")
    parser.add_argument("--builders", default="lstm,gru,simple-rnn,tanh-rnn")
    parser.add_argument("--rounds", type=int, default=5, help="timed epochs per side")
    parser.add_argument("--steps", type=int, default=20, help="training steps per timed epoch "
                        "(small size)")
    parser.add_argument("--large-steps", type=int, default=4,
                        help="training steps per timed epoch (large size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torch-threads", type=int, default=os.cpu_count() or 1,
                        help="PyTorch's intra-op threads (default: the number of CPUs, %(default)s "
                        "here)")
    parser.add_argument("--baseline", metavar="DIR",
                        help="also time zoo from this checkout (PYTHONPATH=DIR)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "results", "vs_torch.txt"),
                        help="also write the report here (default: %(default)s)")
    # internal: run one side
    parser.add_argument("--worker", choices=["zoo", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--builder", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args)

    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the workers get stopped
    sizes = [s for s in args.sizes.split(",") if s]
    builders = [b for b in args.builders.split(",") if b]
    for s in sizes:
        if s not in SIZES:
            parser.error(f"unknown size {s!r}; expected some of {', '.join(SIZES)}")
    for b in builders:
        if b not in TORCH_LAYER:
            parser.error(f"unknown builder {b!r}; expected some of {', '.join(TORCH_LAYER)}")
    try:
        import torch
    except ImportError:
        sys.exit("bench_vs_torch needs PyTorch: pip install torch==2.13.0 (the bench extra)")
    out = open(args.out, "w") if args.out else None

    def say(line=""):
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    import datetime
    import platform

    say(f"# bench/bench_vs_torch.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    say(f"# {datetime.datetime.now().isoformat(timespec='seconds')}, {platform.node()}, "
        f"{os.cpu_count()} CPUs")
    say(f"torch {torch.__version__}, --torch-threads {args.torch_threads}"
        f"{' (the default: the number of CPUs)' if args.torch_threads == os.cpu_count() else ''}"
        f"; zoo from {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}"
        + (f"; baseline zoo from {os.path.abspath(args.baseline)}" if args.baseline else ""))
    say(f"load average at start (1, 5, 15 min): {_loadavg()}")

    rows = []
    for size in sizes:
        units, window, batch = SIZES[size]
        steps = args.steps if size == "small" else args.large_steps
        for builder in builders:
            speeds, rss, setup = compare(builder, size, steps, args.rounds, args.seed,
                                         args.torch_threads, args.baseline)
            best = {side: max(v) for side, v in speeds.items()}
            med = {side: statistics.median(v) for side, v in speeds.items()}
            ratio = best["zoo"] / best["torch"]
            torch_name = f"nn.{TORCH_LAYER[builder]}"
            line = (f"[{size}] {builder:>10}: zoo " + ", ".join(f"{s:.0f}" for s in speeds["zoo"])
                    + f" | {torch_name} " + ", ".join(f"{s:.0f}" for s in speeds["torch"]))
            if "base" in speeds:
                line += " | baseline " + ", ".join(f"{s:.0f}" for s in speeds["base"])
            line += (f" -> ratio {ratio:.2f}; peak RSS zoo {rss['zoo']:.0f} MiB, "
                     f"torch {rss['torch']:.0f} MiB; zoo fit set-up {setup['zoo'] * 1000:.0f} ms "
                     f"per epoch (not counted); load {_loadavg()}")
            say(line)
            chars = steps * window * batch
            with_setup = chars / (chars / best["zoo"] + setup["zoo"]) / best["torch"]
            rows.append((size, builder, torch_name, best, med, ratio, rss, units, window, batch,
                         with_setup))

    say()
    base_cols = f" {'base/torch':>10} {'zoo/base':>8}" if args.baseline else ""
    say(f"{'size':<6} {'builder':>10} {'zoo chars/s':>12} {'torch chars/s':>14} "
        f"{'ratio':>6} {'(medians)':>9} {'(+set-up)':>9}{base_cols} {'zoo RSS MiB':>12} "
        f"{'torch RSS MiB':>14}")
    for size, builder, torch_name, best, med, ratio, rss, units, window, batch, ws in rows:
        extra = ""
        if args.baseline:
            extra = f" {best['base'] / best['torch']:>10.2f} {best['zoo'] / best['base']:>8.2f}"
        say(f"{size:<6} {builder:>10} {best['zoo']:>12.0f} {best['torch']:>14.0f} "
            f"{ratio:>6.2f} {med['zoo'] / med['torch']:>9.2f} {ws:>9.2f}{extra} {rss['zoo']:>12.0f} "
            f"{rss['torch']:>14.0f}")
    say(f"sizes: " + "; ".join(f"{k} = {LAYERS} x {u} units, windows of {w}, batches of {b}"
                               for k, (u, w, b) in SIZES.items() if k in sizes)
        + f"; best of {args.rounds} alternating timed epochs per side (ratios of bests; the "
        "medians' ratio beside; '+set-up': zoo's median fit set-up per epoch counted in, "
        "as if an epoch had only the steps timed here)")
    say(f"load average at end (1, 5, 15 min): {_loadavg()}")
    if out:
        out.close()
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
