"""Models leave the zoo: a loaded model as a SavedModel, an ONNX file or a LiteRT (TFLite) file
that runs where zoo is not installed.

What is traced is a plain float32 copy of the Keras model (mixed-precision policies, stateful
layers and static batch sizes undone) with zoo's CPU fast path switched off, so the recurrences
are Keras's own loop over the cells: the graph holds TensorFlow's standard ops only, never
zoo's native kernels (a training detail).  Beside the graph go the model's preprocessing
(vocabulary, tokenizer, labels) as JSON, ``signature.json`` (the graphs' inputs and outputs)
and a README showing how to call it from Python without zoo.  Language models (char-rnn,
word-lm) also get a one-step graph, ``(id, states...) -> (logits, states...)``, so any runtime
can sample.

Formats:
* ``saved_model``: ``saved_model/`` with the signatures ``serve`` (and ``step``);
* ``onnx``: ``model.onnx`` (and ``step.onnx``), converted by tf2onnx, checked by onnxruntime;
* ``litert``: ``model.tflite`` (and ``step.tflite``), TFLite builtin ops only (no Flex ops:
  the LiteRT runtime has none); a model the converter cannot express that way is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator

from zoo.errors import ZooError

FORMATS = ("saved_model", "onnx", "litert")
OPSET = 17
# tf2onnx 1.17 / onnxruntime 1.32 / ai-edge-litert 2.3 (the `export` extra)
_NEEDS = {"onnx": (("tf2onnx", "tf2onnx"), ("onnxruntime", "onnxruntime")),
          "litert": (("ai_edge_litert", "ai-edge-litert"),)}
README = "README.md"
# LiteRT lowers Keras's loop to builtin ops only for a static batch size (a TensorList's
# element shape must be static): its graphs take this many rows
LITERT_BATCH = 1


def check_format(fmt: str) -> None:
    """One line if ``fmt`` is unknown or what it needs is not installed."""
    if fmt not in FORMATS:
        raise ZooError(f"zoo export: --format {fmt!r}: expected one of {', '.join(FORMATS)}")
    for module, package in _NEEDS.get(fmt, ()):
        try:
            __import__(module)
        except ImportError:
            raise ZooError(f"zoo export: format {fmt} needs the package {package}, which is not "
                           "installed: pip install 'zoo[export]'") from None


@contextlib.contextmanager
def plain_recurrence() -> Iterator[None]:
    """zoo's recurrent layers run Keras's own loop (no fast path, no native ops) inside."""
    from zoo import layers

    old = layers._HANDWRITTEN_GRADIENT
    layers._HANDWRITTEN_GRADIENT = False
    try:
        yield
    finally:
        layers._HANDWRITTEN_GRADIENT = old


def _portable_config(obj: Any) -> Any:
    """A Keras model config with every dtype policy float32, no stateful layer and no static
    batch size."""
    if isinstance(obj, list):
        return [_portable_config(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out = {k: _portable_config(v) for k, v in obj.items()}
    if out.get("class_name") == "DTypePolicy" and isinstance(out.get("config"), dict):
        name = out["config"].get("name", "")
        if isinstance(name, str) and name.startswith("mixed_"):
            out["config"] = {**out["config"], "name": "float32"}
    if out.get("stateful") is True:
        out["stateful"] = False
    shape = out.get("batch_shape")
    if isinstance(shape, list) and shape and out.get("batch_size") is None:
        out["batch_shape"] = [None, *shape[1:]]
    if out.get("batch_input_shape") and isinstance(out["batch_input_shape"], list):
        out["batch_input_shape"] = [None, *out["batch_input_shape"][1:]]
    return out


def portable_model(model):
    """A float32, stateless copy of ``model`` with the same weights (cast to float32)."""
    import keras
    import numpy as np

    import zoo.heads  # noqa: F401  (zoo's layers registered for from_config)
    import zoo.layers  # noqa: F401

    config = _portable_config(model.get_config())
    copy = model.__class__.from_config(config)
    copy.set_weights([np.asarray(w, np.float32) if np.issubdtype(np.asarray(w).dtype, np.floating)
                      else w for w in model.get_weights()])
    return copy


def _is_mixed(model) -> bool:
    return any(getattr(l, "dtype_policy", None) is not None and
               l.dtype_policy.name.startswith("mixed_") for l in model.layers)


def _bidirectional(model) -> bool:
    import keras

    return any(isinstance(l, keras.layers.Bidirectional) for l in model.layers)


def builder_of(loaded) -> str:
    return str(loaded.recipe.get("model", {}).get("name", "?"))


# ------------------------------------------------------------------------------ tracing
class _Graphs:
    """The functions to trace: ``serve`` (the model) and, for a model of Embedding -> recurrent
    layers -> Dense logits over every step (a language model), ``step``."""

    def __init__(self, loaded, batch: int | None = None) -> None:
        import tensorflow as tf

        self.loaded = loaded
        self.batch = batch
        self.model = model = portable_model(loaded.keras_model)
        inp = model.inputs[0]
        self.input_name = inp.name if isinstance(inp.name, str) else "input"
        self.serve_spec = [tf.TensorSpec([batch, *inp.shape[1:]], inp.dtype, name="input")]
        self.sampler = None
        if getattr(loaded, "generate", None) is not None and len(model.outputs[0].shape) == 3 \
                and not _bidirectional(model):
            from zoo.sampling import Sampler

            try:
                self.sampler = Sampler(model)
            except ZooError:
                self.sampler = None
        self.state_sizes: list[int] = []
        if self.sampler is not None:
            for s in self.sampler.steps:
                self.state_sizes += [int(n) for n in s.sizes]

    def serve(self, x):
        return self.model(x, training=False)

    def step(self, ids, *states):
        import tensorflow as tf

        grouped, k = [], 0
        for s in self.sampler.steps:
            grouped.append(list(states[k:k + len(s.sizes)]))
            k += len(s.sizes)
        logits, new = self.sampler._step(ids, grouped)
        return (tf.identity(logits, name="logits"),
                *[tf.identity(t) for group in new for t in group])

    def step_spec(self):
        import tensorflow as tf

        return [tf.TensorSpec([self.batch], tf.int32, name="ids")] + [
            tf.TensorSpec([self.batch, n], tf.float32, name=f"state_{i}")
            for i, n in enumerate(self.state_sizes)]

    def endpoints(self) -> dict[str, tuple]:
        out = {"serve": (self.serve, self.serve_spec)}
        if self.sampler is not None:
            out["step"] = (self.step, self.step_spec())
        return out

    def archive(self, path: Path) -> None:
        """Write the SavedModel (signatures ``serve`` and ``step``)."""
        import keras

        archive = keras.export.ExportArchive()
        archive.track(self.model)
        for name, (fn, spec) in self.endpoints().items():
            archive.add_endpoint(name, fn, input_signature=spec)
        archive.write_out(str(path), verbose=False)


# ------------------------------------------------------------------------------- formats
def _write_saved_model(g: _Graphs, out: Path) -> dict[str, Any]:
    g.archive(out / "saved_model")
    return {name: {"file": "saved_model", "signature": name} for name in g.endpoints()}


def _write_onnx(g: _Graphs, out: Path) -> dict[str, Any]:
    import tensorflow as tf
    import tf2onnx
    with warnings.catch_warnings():   # the patch probes np.object, which numpy 2 warns about
        warnings.simplefilter("ignore", FutureWarning)
        from keras.src.export.tf2onnx_lib import patch_tf2onnx

        patch_tf2onnx()  # what Keras's own ONNX export applies (tf2onnx 1.17 under numpy 2)
    files = {}
    for name, (fn, spec) in g.endpoints().items():
        target = out / ("model.onnx" if name == "serve" else f"{name}.onnx")
        with _quiet_tf2onnx():
            tf2onnx.convert.from_function(tf.function(fn), input_signature=spec, opset=OPSET,
                                          output_path=str(target))
        files[name] = {"file": target.name}
    return files


def _write_litert(g: _Graphs, out: Path) -> dict[str, Any]:
    import tensorflow as tf

    files = {}
    with tempfile.TemporaryDirectory() as tmp:
        g.archive(Path(tmp) / "sm")
        for name in g.endpoints():
            converter = tf.lite.TFLiteConverter.from_saved_model(str(Path(tmp) / "sm"),
                                                                 signature_keys=[name])
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            try:
                blob = converter.convert()
            except Exception as exc:
                import re

                ops = sorted(set(re.findall(r"'(tf\.\w+)' op", str(exc))))
                raise ZooError(f"zoo export: builder {builder_of(g.loaded)} cannot be exported "
                               f"to litert: the converter needs ops outside LiteRT's builtin "
                               f"set ({', '.join(ops) or type(exc).__name__})") from None
            target = out / ("model.tflite" if name == "serve" else f"{name}.tflite")
            target.write_bytes(blob)
            files[name] = {"file": target.name, "signature": name}
    return files


@contextlib.contextmanager
def _quiet_tf2onnx() -> Iterator[None]:
    import logging

    log = logging.getLogger("tf2onnx")
    old = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(old)


_WRITERS = {"saved_model": _write_saved_model, "onnx": _write_onnx, "litert": _write_litert}


# ---------------------------------------------------------------------------- the folder
def export(loaded, fmt: str, out: str | Path) -> Path:
    """Export ``loaded`` (what :func:`zoo.load` returns) as ``fmt`` into the folder ``out``
    (created; it must not hold anything else); returns ``out``."""
    check_format(fmt)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ZooError(f"zoo export: --out {out}: exists and is not an empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        with plain_recurrence():
            g = _Graphs(loaded, batch=LITERT_BATCH if fmt == "litert" else None)
            graphs = _WRITERS[fmt](g, tmp)
        _write_sidecar(loaded, g, fmt, graphs, tmp)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _write_sidecar(loaded, g: _Graphs, fmt: str, graphs: dict[str, Any], out: Path) -> None:
    (out / "preprocessing.json").write_text(json.dumps(loaded.preprocessing, indent=1))
    model = g.model
    sig = {
        "format": fmt, "task": loaded.task, "builder": builder_of(loaded),
        "name": loaded.name, "version": loaded.version,
        "float32_from_mixed_precision": _is_mixed(loaded.keras_model),
        "serve": {**graphs["serve"], "inputs": [{"name": "input", "dtype": g.serve_spec[0].dtype.name,
                                                  "shape": list(g.serve_spec[0].shape)}],
                  "outputs": [{"name": "output", "shape": [None, *model.outputs[0].shape[1:]]}]},
    }
    if "step" in graphs:
        sig["step"] = {**graphs["step"],
                       "inputs": [{"name": "ids", "dtype": "int32", "shape": [None]}] + [
                           {"name": f"state_{i}", "dtype": "float32", "shape": [None, n]}
                           for i, n in enumerate(g.state_sizes)],
                       "outputs": ["logits"] + [f"state_{i}" for i in range(len(g.state_sizes))]}
    if fmt == "onnx":
        import onnx

        for name, info in graphs.items():
            m = onnx.load(str(out / info["file"]), load_external_data=False)
            sig[name]["onnx_inputs"] = [i.name for i in m.graph.input]
            sig[name]["onnx_outputs"] = [o.name for o in m.graph.output]
    (out / "signature.json").write_text(json.dumps(sig, indent=1))
    (out / README).write_text(readme(loaded, fmt, sig))


_RUNNERS = {
    "saved_model": """import tensorflow as tf
loaded = tf.saved_model.load('saved_model')

def run(graph, *args):   # the graph's outputs, in order (numpy arrays)
    names = [i['name'] for i in sig[graph]['inputs']]
    out = loaded.signatures[graph](**{n: tf.constant(a) for n, a in zip(names, args)})
    return [out[f'output_{i}'].numpy() for i in range(len(out))]
""",
    "onnx": """import onnxruntime as ort
sessions = {g: ort.InferenceSession(sig[g]['file']) for g in ('serve', 'step') if g in sig}

def run(graph, *args):   # the graph's outputs, in order (numpy arrays)
    s = sessions[graph]
    return s.run(None, {i.name: a for i, a in zip(s.get_inputs(), args)})
""",
    "litert": """from ai_edge_litert.interpreter import Interpreter
runners = {g: Interpreter(sig[g]['file']).get_signature_runner(g) for g in ('serve', 'step') if g in sig}

def run(graph, *args):   # the graph's outputs, in order; LiteRT's graphs take one row at a time
    names = [i['name'] for i in sig[graph]['inputs']]
    rows = []
    for r in range(len(args[0])):
        out = runners[graph](**{n: a[r:r + 1] for n, a in zip(names, args)})
        rows.append([out[f'output_{i}'] for i in range(len(out))])
    return [np.concatenate(parts) for parts in zip(*rows)]
""",
}
_RUNTIME = {"saved_model": "tensorflow", "onnx": "onnxruntime", "litert": "ai-edge-litert"}


def readme(loaded, fmt: str, sig: dict[str, Any]) -> str:
    """How to call the export from Python without zoo."""
    name = f"{loaded.name} version {loaded.version}" if loaded.name else "a local zoo bundle"
    text = (f"# {loaded.task} model ({sig['builder']}), exported from zoo as {fmt}\n\n"
            f"From {name}.  Needs only {_RUNTIME[fmt]} and numpy, not zoo.  "
            "`preprocessing.json` holds the vocabulary, tokenizer and labels; `signature.json` "
            "the graphs' files, inputs and outputs.\n")
    if sig.get("float32_from_mixed_precision"):
        text += ("\nThe model was trained under a mixed-precision policy; the export computes "
                 "in float32 (it matches the trained model within about 1e-2).\n")
    setup = ("import json, re\nimport numpy as np\n"
             "sig = json.load(open('signature.json'))\npre = json.load(open('preprocessing.json'))\n"
             + _RUNNERS[fmt])
    if loaded.task == "sentiment":
        return text + f"""
## Classify texts

`serve`: token ids (batch, steps), int32, right-padded with 0 -> probabilities (batch, labels).

```python
{setup}
tok, labels = pre['tokenizer'], pre['labels']
index = {{w: i for i, w in enumerate(pre['vocab']['words'])}}

def encode(texts, max_length=pre['max_length']):
    x = np.zeros((len(texts), max_length), np.int32)   # 0 pads (the model masks it)
    for r, t in enumerate(texts):
        words = re.findall(tok['pattern'], t.lower() if tok['lowercase'] else t)
        ids = [index.get(w, 1) for w in words][:max_length]   # 1: a word outside the vocabulary
        x[r, :len(ids)] = ids
    return x

probs = run('serve', encode(["a gripping, beautifully acted film", "dull and far too long"]))[0]
print([labels[i] for i in probs.argmax(-1)], probs)
```
"""
    if "step" in sig:
        if loaded.task == "char-rnn":
            encode = ("chars = pre['vocab']['chars']   # id i + 1; 0: any other character\n"
                      "index = {c: i + 1 for i, c in enumerate(chars)}\n"
                      "prime = [index.get(c, 0) for c in 'ROMEO:']\n"
                      "decode = lambda ids: ''.join(chars[i - 1] if i else '?' for i in ids)\n")
        else:
            encode = ("words = pre['vocab']['words']   # 0 pads, 1: a word outside the vocabulary\n"
                      "index = {w: i for i, w in enumerate(words)}\n"
                      "prime = [index.get(w, 1) for w in ['the', 'king']]\n"
                      "decode = lambda ids: ' '.join(words[i] for i in ids)\n")
        return text + f"""
`serve`: ids (batch, steps), int32 -> logits (batch, steps, vocabulary).
`step`: ids (batch,), then the states (zeros to start; sizes in `signature.json`) -> logits
(batch, vocabulary), then the new states: enough to sample in any runtime.

## Sample

```python
{setup}
{encode}states = [np.zeros((1, i['shape'][1]), np.float32) for i in sig['step']['inputs'][1:]]
rng, out = np.random.default_rng(0), []
for t in range(200):
    ids = np.array([prime[t] if t < len(prime) else out[-1]], np.int32)
    logits, *states = run('step', ids, *states)
    if t >= len(prime) - 1:   # temperature 0.8
        p = np.exp((logits[0] - logits[0].max()) / 0.8)
        out.append(int(rng.choice(len(p), p=p / p.sum())))
print(decode(out))
```
"""
    return text + f"""
`serve`: {sig['serve']['inputs'][0]} -> {sig['serve']['outputs'][0]}.

```python
{setup}
x = ...   # shaped and typed as sig['serve']['inputs'][0]
y = run('serve', x)[0]
```
"""


# ---------------------------------------------------------------------------- the store
def artifact_path(fmt: str) -> str:
    return f"exports/{fmt}"


def export_version(spec: str, fmt: str, out: str | Path | None, store: str | None = None,
                   echo=print) -> Path:
    """``zoo export``: load ``spec``, reuse the export logged on its run for the same bundle
    digest, else export and log it there; copy it to ``out`` (default ``./NAME-vV-FMT``)."""
    from zoo.loading import load

    check_format(fmt)
    loaded = load(spec, store)
    default = f"{loaded.name or 'model'}-v{loaded.version or 'local'}-{fmt}"
    out = Path(out) if out is not None else Path(default)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ZooError(f"zoo export: --out {out}: exists and is not an empty folder")
    run_id = getattr(loaded, "run_id", None)
    digest = getattr(loaded, "bundle_digest", None)
    if run_id and digest:
        got = _logged(run_id, fmt, digest, out, store)
        if got:
            echo(f"reused the {fmt} export logged on run {run_id} ({artifact_path(fmt)}) -> {out}")
            return out
    export(loaded, fmt, out)
    if run_id and digest:
        _log(run_id, fmt, out, digest, store)
        echo(f"exported {loaded.name} version {loaded.version} as {fmt} -> {out}; logged on "
             f"run {run_id} as {artifact_path(fmt)}")
    else:
        echo(f"exported as {fmt} -> {out}")
    return out


def _logged(run_id: str, fmt: str, digest: str, out: Path, store: str | None) -> bool:
    """Download the logged export of ``fmt`` into ``out`` if its digest is ``digest``."""
    from zoo import tracking

    c = tracking.client(_store(store))
    try:
        names = {a.path for a in c.list_artifacts(run_id, artifact_path(fmt))}
    except Exception:
        return False
    if f"{artifact_path(fmt)}/digest.txt" not in names:
        return False
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.dl-"))
    try:
        got = Path(c.download_artifacts(run_id, artifact_path(fmt), str(tmp)))
        if (got / "digest.txt").read_text().strip() != digest:
            return False
        if out.exists():
            out.rmdir()
        got.rename(out)
        return True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _log(run_id: str, fmt: str, folder: Path, digest: str, store: str | None) -> None:
    """Log ``folder`` as the run's export of ``fmt``, ``digest.txt`` last: it marks a complete
    upload, so a ``zoo export`` running at the same time never reuses a half-logged one."""
    from zoo import tracking

    c = tracking.client(_store(store))
    c.log_artifacts(run_id, str(folder), artifact_path(fmt))
    (folder / "digest.txt").write_text(digest + "\n")
    c.log_artifact(run_id, str(folder / "digest.txt"), artifact_path(fmt))


def _store(store: str | None):
    from zoo import store as stores

    return stores.resolve(store)
