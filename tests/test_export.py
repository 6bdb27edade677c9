"""Export: every builder as SavedModel, ONNX and LiteRT, loaded in a process where `import zoo`
fails, equal to the Keras model within 1e-5 and holding standard ops only; the one-step graph
of a language model; mixed precision exported in float32; `zoo export` logs the export on the
version's run and reuses it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import write
from zoo.errors import ZooError

pytestmark = pytest.mark.slow

BUILDERS = ["simple-rnn", "gru", "lstm", "tanh-rnn", "bi-simple-rnn", "bi-gru", "bi-lstm",
            "bi-tanh-rnn"]
FORMATS = ["saved_model", "onnx", "litert"]
VOCAB = 20
STEPS = 7
TOL = 1e-5
MIXED_TOL = 1e-2   # a mixed_float16 model against its float32 export


def _sentiment(builder: str, policy: str | None = None):
    """A tiny sentiment model of ``builder`` (masked input), random weights."""
    import keras

    from zoo.registry import build_model
    from zoo.tasks.base import sequence_network
    from zoo.tasks.sentiment import SentimentModel

    old = keras.config.dtype_policy()
    if policy:
        keras.config.set_dtype_policy(policy)
    try:
        body = build_model(builder, units=4)
        model = sequence_network(body, name="sentiment", input_name="tokens", outputs=3,
                                 activation="softmax", vocab_size=VOCAB, embedding_dim=3,
                                 mask_zero=True)
    finally:
        keras.config.set_dtype_policy(old)
    pre = {"tokenizer": {"type": "nltk-regexp", "pattern": r"\w+", "lowercase": True},
           "vocab": {"words": ["<pad>", "<unk>"] + [f"w{i}" for i in range(VOCAB - 2)]},
           "labels": ["a", "b", "c"], "max_length": STEPS}
    return SentimentModel(model, pre, {"task": {"name": "sentiment"}, "model": {"name": builder}})


def _language_model(builder: str):
    from zoo.registry import build_model
    from zoo.tasks.char_rnn import CharRNNModel, char_network

    model = char_network(build_model(builder, units=5, layers=2, return_sequences=True), VOCAB, 3)
    pre = {"vocab": {"type": "char", "chars": [chr(97 + i) for i in range(VOCAB - 1)]}, "seq_len": STEPS}
    return CharRNNModel(model, pre, {"task": {"name": "char-rnn"}, "model": {"name": builder}})


def _inputs() -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.integers(1, VOCAB, (4, STEPS)).astype(np.int32)
    x[1, 4:] = 0   # padded rows: the mask must travel
    x[2, 1:] = 0
    return x


# Runs in a fresh interpreter where zoo cannot be imported; argv[1]: a JSON list of cases.
CHECK = r'''
import sys
sys.modules["zoo"] = None
import json, os
import numpy as np
try:
    import zoo  # noqa
    raise SystemExit("zoo is importable")
except ImportError:
    pass
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"

def saved_model(folder, graph, args):
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.framework import op_def_registry
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString(open(os.path.join(folder, "saved_model", "saved_model.pb"), "rb").read())
    ops = set()
    for mg in sm.meta_graphs:
        ops |= {n.op for n in mg.graph_def.node}
        for f in mg.graph_def.library.function:
            ops |= {n.op for n in f.node_def}
    bad = sorted(o for o in ops if o.startswith("Zoo") or op_def_registry.get(o) is None)
    assert not bad, (folder, bad)
    fn = tf.saved_model.load(os.path.join(folder, "saved_model")).signatures[graph]
    names = [i["name"] for i in json.load(open(os.path.join(folder, "signature.json")))[graph]["inputs"]]
    out = fn(**{n: tf.constant(a) for n, a in zip(names, args)})
    return [out[f"output_{i}"].numpy() for i in range(len(out))]

def onnx(folder, graph, args):
    import onnx as ox, onnxruntime as ort
    path = os.path.join(folder, "model.onnx" if graph == "serve" else graph + ".onnx")
    def walk(g):
        for n in g.node:
            assert n.domain in ("", "ai.onnx"), (path, n.op_type, n.domain)
            for a in n.attribute:
                if a.g is not None and len(a.g.node):
                    walk(a.g)
    walk(ox.load(path).graph)
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return s.run(None, {i.name: a for i, a in zip(s.get_inputs(), args)})

def litert(folder, graph, args):
    from ai_edge_litert.interpreter import Interpreter
    path = os.path.join(folder, "model.tflite" if graph == "serve" else graph + ".tflite")
    it = Interpreter(path)
    ops = {o["op_name"] for o in it._get_ops_details()}
    assert not [o for o in ops if o.startswith("Flex") or o == "CUSTOM"], (path, ops)
    runner = it.get_signature_runner(graph)
    names = [i["name"] for i in json.load(open(os.path.join(folder, "signature.json")))[graph]["inputs"]]
    rows = []
    for r in range(len(args[0])):   # LiteRT's graphs take one row
        out = runner(**{n: a[r:r + 1] for n, a in zip(names, args)})
        rows.append([out[f"output_{i}"] for i in range(len(out))])
    return [np.concatenate(parts) for parts in zip(*rows)]

worst = {}
for case in json.load(open(sys.argv[1])):
    data = np.load(case["data"])
    args = [data[k] for k in case["inputs"]]
    got = globals()[case["format"]](case["folder"], case["graph"], args)
    for i, k in enumerate(case["outputs"]):
        diff = float(np.abs(got[i] - data[k]).max())
        assert diff <= case["tol"], (case["folder"], case["graph"], k, diff)
        worst[case["folder"]] = max(worst.get(case["folder"], 0.0), diff)
import re
for folder in json.load(open(sys.argv[2])):   # each README's code, run in its folder
    os.chdir(folder)
    code = "\n".join(re.findall(r"```python\n(.*?)```", open("README.md").read(), re.S))
    exec(compile(code, os.path.join(folder, "README.md"), "exec"), {})
print(json.dumps(worst))
'''


def _check(cases: list[dict], tmp_path: Path, readmes: list[str]) -> dict[str, float]:
    """Run ``cases`` and the README code of the folders ``readmes`` where zoo is not."""
    spec = write(tmp_path / "cases.json", json.dumps(cases))
    write(tmp_path / "readmes.json", json.dumps(readmes))
    # PYTHONPATH without the worktree, and a folder where zoo is not: `import zoo` must fail
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", CHECK, str(spec), str(tmp_path / "readmes.json")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_builder_exports_and_matches_without_zoo(tmp_path):
    from zoo.export import export

    x = _inputs()
    cases = []
    for builder in BUILDERS:
        loaded = _sentiment(builder)
        ref = np.asarray(loaded.keras_model.predict(x, verbose=0))
        assert np.ptp(ref) > 1e-4    # outputs that differ between rows: a comparison that can fail
        data = tmp_path / f"{builder}.npz"
        np.savez(data, x=x, y=ref)
        for fmt in FORMATS:
            folder = tmp_path / f"{builder}-{fmt}"
            export(loaded, fmt, folder)
            assert {"README.md", "preprocessing.json", "signature.json"} <= set(os.listdir(folder))
            cases.append({"format": fmt, "folder": str(folder), "graph": "serve",
                          "data": str(data), "inputs": ["x"], "outputs": ["y"], "tol": TOL})
    worst = _check(cases, tmp_path, [str(tmp_path / f"lstm-{fmt}") for fmt in FORMATS])
    assert len(worst) == len(BUILDERS) * len(FORMATS)
    assert max(worst.values()) <= TOL


def test_language_model_step_graph_and_mixed_precision(tmp_path):
    """char-rnn: `serve` matches the model, and `step` fed one id at a time reproduces its
    logits (states carried); a mixed_float16 model exports in float32."""
    from zoo.export import export

    x = _inputs()[[0, 3]]   # no padding: a language model reads every id
    cases = []
    for builder in ("lstm", "tanh-rnn", "gru"):
        loaded = _language_model(builder)
        ref = np.asarray(loaded.keras_model.predict(x, verbose=0))
        data = tmp_path / f"lm-{builder}.npz"
        for fmt in FORMATS:
            folder = tmp_path / f"lm-{builder}-{fmt}"
            export(loaded, fmt, folder)
            sig = json.loads((folder / "signature.json").read_text())
            sizes = [i["shape"][1] for i in sig["step"]["inputs"][1:]]
            cases.append({"format": fmt, "folder": str(folder), "graph": "serve", "data": str(data),
                          "inputs": ["x"], "outputs": ["y"], "tol": TOL})
            for t in range(STEPS):
                cases.append({"format": fmt, "folder": str(folder), "graph": "step",
                              "data": str(tmp_path / f"lm-{builder}-step{t}.npz"),
                              "inputs": ["ids"] + [f"s{i}" for i in range(len(sizes))],
                              "outputs": ["logits"], "tol": TOL})
        np.savez(data, x=x, y=ref)
        # the states each step starts from, computed with the Keras cells (zoo's sampler)
        from zoo.sampling import Sampler

        sampler = Sampler(loaded.keras_model)
        states = [[np.zeros((2, n), np.float32) for n in s.sizes] for s in sampler.steps]
        for t in range(STEPS):
            flat = [np.asarray(a) for group in states for a in group]
            np.savez(tmp_path / f"lm-{builder}-step{t}.npz", ids=x[:, t],
                     logits=ref[:, t], **{f"s{i}": a for i, a in enumerate(flat)})
            _, states = sampler._step(x[:, t], states)
            states = [[np.asarray(a) for a in g] for g in states]
    mixed = _sentiment("lstm", policy="mixed_float16")
    ref = np.asarray(mixed.keras_model.predict(_inputs(), verbose=0))
    np.savez(tmp_path / "mixed.npz", x=_inputs(), y=ref)
    export(mixed, "onnx", tmp_path / "mixed-onnx")
    sig = json.loads((tmp_path / "mixed-onnx" / "signature.json").read_text())
    assert sig["float32_from_mixed_precision"] is True
    assert "float32" in (tmp_path / "mixed-onnx" / "README.md").read_text()
    cases.append({"format": "onnx", "folder": str(tmp_path / "mixed-onnx"), "graph": "serve",
                  "data": str(tmp_path / "mixed.npz"), "inputs": ["x"], "outputs": ["y"],
                  "tol": MIXED_TOL})
    worst = _check(cases, tmp_path, [str(tmp_path / f"lm-lstm-{fmt}") for fmt in FORMATS])
    assert max(v for k, v in worst.items() if "mixed" not in k) <= TOL


def test_export_refuses_bad_requests(tmp_path):
    from zoo.export import export

    loaded = _sentiment("gru")
    with pytest.raises(ZooError, match="--format 'tflite': expected one of saved_model, onnx"):
        export(loaded, "tflite", tmp_path / "x")
    write(tmp_path / "full" / "f.txt", "x")
    with pytest.raises(ZooError, match="full: exists and is not an empty folder"):
        export(loaded, "onnx", tmp_path / "full")


REVIEWS = [("a gripping film and great fun", "pos"), ("a boring mess so tedious and flat", "neg")]


def test_cli_export_logs_on_the_run_and_reuses(store, tmp_path, capsys):
    import mlflow

    from zoo.cli import main

    rows = ["text,label"] + [f"{t} {i},{lab}" for i in range(30) for t, lab in REVIEWS]
    write(tmp_path / "reviews.csv", "\n".join(rows) + "\n")
    recipe = write(tmp_path / "s.yaml", """
task: {name: sentiment, embedding_dim: 4}
data: {path: reviews.csv, vocabulary_size: 50, max_length: 8}
model: {name: lstm, units: 4}
train: {epochs: 1, batch_size: 16, seed: 2, verbose: 0}
""")
    from zoo.engine import run
    from zoo.recipe import load_recipe

    res = run(load_recipe(recipe, []), echo=lambda *a: None)
    assert main(["export", "lstm-sentiment", "--format", "onnx", "--out", str(tmp_path / "a")]) == 0
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(res.run_id, "exports/onnx")}
    assert {"exports/onnx/model.onnx", "exports/onnx/README.md",
            "exports/onnx/preprocessing.json"} <= logged
    capsys.readouterr()
    # the second export of the same version is the logged one, not a new conversion
    assert main(["export", "lstm-sentiment/1", "--format", "onnx", "--out",
                 str(tmp_path / "b")]) == 0
    assert "reused the onnx export logged on run" in capsys.readouterr().err
    assert (tmp_path / "b" / "model.onnx").read_bytes() == (tmp_path / "a" / "model.onnx").read_bytes()
    assert (tmp_path / "b" / "digest.txt").read_text().strip() == \
        mlflow.MlflowClient().get_model_version("lstm-sentiment", "1").tags["zoo.bundle_digest"]
    # an upload cut off before its digest.txt (which is logged last) is never reused
    from urllib.parse import urlparse

    root = Path(urlparse(mlflow.MlflowClient().get_run(res.run_id).info.artifact_uri).path)
    (root / "exports" / "onnx" / "digest.txt").unlink()
    assert main(["export", "lstm-sentiment/1", "--format", "onnx", "--out",
                 str(tmp_path / "d")]) == 0
    assert "reused" not in capsys.readouterr().err
    assert (root / "exports" / "onnx" / "digest.txt").is_file()
    # the loaded model object exports the same way
    import zoo

    out = zoo.load("lstm-sentiment").export("saved_model", tmp_path / "c")
    assert (out / "saved_model" / "saved_model.pb").is_file()


def test_cli_export_errors(store, tmp_path, capsys):
    from zoo.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["export", "x", "--format", "pdf"])
    assert exc.value.code == 2
    assert main(["export", "nope", "--format", "onnx"]) == 2
    assert "nope" in capsys.readouterr().err
