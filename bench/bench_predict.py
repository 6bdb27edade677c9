"""Batch prediction (`zoo predict --input`) and the ONNX export, against bare Keras.

The model is lstm-sentiment's network (Embedding(64, mask_zero) -> LSTM(64) -> max pooling ->
softmax over 2 labels, texts of at most 60 tokens) with random weights over a 5,000-word
vocabulary, saved as a zoo model folder: speed and memory do not depend on the weights.  The
sentences (5 to 25 words of that vocabulary, and a few outside it) are generated here.

* memory: `zoo predict MODEL --input N.txt --output N.csv` in a process of its own, at
  ``--small`` and ``--large`` sentences; its peak RSS (from the kernel, ``wait4``) must be the
  same within 20 % (the target: memory independent of the input size).
* throughput: the rows/s of that run (its summary line: reading, tokenizing, predicting and
  writing, after the model is loaded) against a bare loop of ``keras_model.predict`` over the
  same sentences already encoded, in the same chunks (4,096 rows, batch 256), on ``--bare``
  sentences.  Target: at least 0.8.
* ONNX: the exported model in onnxruntime against ``keras_model.predict`` at batch 1 and 256
  (and the model called directly, for reference).  Target: at least as fast.

    python bench/bench_predict.py [--small 100000] [--large 1000000] [--bare 100000]

Writes a report to stdout (bench/results/predict.txt holds the last one kept).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

WORDS = 5000
MAX_LENGTH = 60
CHUNK = 4096


def make_model(folder: Path) -> Path:
    """A zoo model folder with lstm_sentiment.yaml's network and random weights."""
    import keras
    import yaml

    from zoo import bundle
    from zoo.registry import build_model
    from zoo.tasks.base import sequence_network

    keras.utils.set_random_seed(0)
    words = ["<pad>", "<unk>"] + [f"w{i}" for i in range(WORDS)]
    body = build_model("lstm", units=64, dropout=0.3, return_sequences=True)
    model = sequence_network(body, name="sentiment", input_name="tokens", outputs=2,
                             activation="softmax", vocab_size=len(words), embedding_dim=64,
                             mask_zero=True, pooling="max")
    pre = {"tokenizer": {"type": "nltk-regexp",
                         "pattern": r"\w+(?:['’]\w+)*|-{2,}|\.{3}|…|[^\w\s]", "lowercase": True},
           "vocab": {"type": "word", "words": words}, "labels": ["neg", "pos"],
           "max_length": MAX_LENGTH}
    recipe = {"task": {"name": "sentiment", "embedding_dim": 64, "pooling": "max"},
              "model": {"name": "lstm", "units": 64, "dropout": 0.3}}
    return bundle.save(folder, model, pre, yaml.safe_dump(recipe), {})


def sentences(n: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 26, n)
    ids = rng.integers(0, WORDS + 50, int(lengths.sum()))   # some words outside the vocabulary
    pos = 0
    for k in lengths:
        yield " ".join(f"w{i}" for i in ids[pos:pos + k]) + "."
        pos += k


def write_sentences(path: Path, n: int) -> Path:
    with open(path, "w") as f:
        for s in sentences(n):
            f.write(s + "\n")
    return path


def zoo_predict(model: Path, src: Path, out: Path) -> dict:
    """One `zoo predict` process: its peak RSS (MiB) and the rows/s of its summary."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen([sys.executable, "-m", "zoo.cli", "predict", str(model), "--input",
                             str(src), "--output", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    start = time.monotonic()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"zoo predict failed:\n{err[-2000:]}")
    m = re.search(r"([\d,]+) rows \((\d+) bad\) in ([\d.]+) s, ([\d,]+) rows/s", err)
    return {"rss_mib": usage.ru_maxrss / 1024, "rows": int(m[1].replace(",", "")),
            "seconds": float(m[3]), "rows_per_s": float(m[4].replace(",", "")), "wall_s": wall}


def bare_keras(model_dir: Path, n: int) -> float:
    """rows/s of keras_model.predict over the sentences, encoded beforehand, in chunks."""
    import zoo

    loaded = zoo.load(str(model_dir))
    texts = list(sentences(n))
    chunks = [loaded.encode(texts[i:i + CHUNK]) for i in range(0, n, CHUNK)]
    loaded.keras_model.predict(chunks[0][:256], batch_size=256, verbose=0)   # warm up
    start = time.perf_counter()
    for x in chunks:
        loaded.keras_model.predict(x, batch_size=256, verbose=0)
    took = time.perf_counter() - start
    return n / took


def onnx_vs_keras(model_dir: Path, out: Path, repeats: dict[int, int]) -> list[str]:
    import numpy as np
    import onnxruntime as ort

    import zoo

    loaded = zoo.load(str(model_dir))
    loaded.export("onnx", out)
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    texts = list(sentences(256, seed=1))
    x256 = loaded.encode(texts)
    lines = []
    for batch, reps in repeats.items():
        x = x256[:batch]
        ref = loaded.keras_model.predict(x, batch_size=batch, verbose=0)
        got = sess.run(None, {name: x})[0]
        diff = float(np.abs(ref - got).max())

        def timed(fn):
            fn()
            start = time.perf_counter()
            for _ in range(reps):
                fn()
            return (time.perf_counter() - start) / reps

        t_onnx = timed(lambda: sess.run(None, {name: x}))
        t_predict = timed(lambda: loaded.keras_model.predict(x, batch_size=batch, verbose=0))
        t_call = timed(lambda: loaded.keras_model(x, training=False))
        lines.append(f"batch {batch:>3}: onnxruntime {1e3 * t_onnx:8.2f} ms, keras predict "
                     f"{1e3 * t_predict:8.2f} ms ({t_predict / t_onnx:.2f}x onnx's time), "
                     f"keras call {1e3 * t_call:8.2f} ms ({t_call / t_onnx:.2f}x); max |diff| "
                     f"{diff:.1e}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=100_000)
    ap.add_argument("--large", type=int, default=1_000_000)
    ap.add_argument("--bare", type=int, default=100_000)
    ap.add_argument("--onnx-repeats", type=int, default=50)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = make_model(tmp / "model")
        load = os.getloadavg()
        print(f"machine: {os.cpu_count()} CPUs, load average {load[0]:.1f} at the start")
        runs = {}
        for n in (args.small, args.large):
            src = write_sentences(tmp / f"{n}.txt", n)
            runs[n] = zoo_predict(model, src, tmp / f"{n}.csv")
            print(f"zoo predict --input {n:,} sentences ({src.stat().st_size / 2**20:.0f} MiB): "
                  f"peak RSS {runs[n]['rss_mib']:.0f} MiB, {runs[n]['rows_per_s']:,.0f} rows/s "
                  f"({runs[n]['seconds']:.0f} s predicting, {runs[n]['wall_s']:.0f} s in all)",
                  flush=True)
            src.unlink()
        small, large = runs[args.small], runs[args.large]
        ratio_rss = large["rss_mib"] / small["rss_mib"]
        print(f"RSS {args.large:,} / {args.small:,}: {ratio_rss:.3f} (target: within 0.8-1.2)")
        bare = bare_keras(model, args.bare)
        ratio = large["rows_per_s"] / bare
        print(f"bare keras_model.predict over the encoded chunks ({args.bare:,} sentences): "
              f"{bare:,.0f} rows/s; zoo predict / bare: {ratio:.2f} (target: >= 0.8)", flush=True)
        for line in onnx_vs_keras(model, tmp / "onnx", {1: args.onnx_repeats,
                                                        256: max(5, args.onnx_repeats // 5)}):
            print("onnx " + line, flush=True)
        print(json.dumps({"rss_ratio": round(ratio_rss, 3), "throughput_ratio": round(ratio, 3),
                          "load_average_end": round(os.getloadavg()[0], 1)}))


if __name__ == "__main__":
    main()
