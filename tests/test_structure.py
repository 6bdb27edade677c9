"""The shape of the package: no import loops, MLflow behind `tracking`, builder schemas that
validate before anything heavy is imported, and plug-ins as first-class as the built-ins."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import ROOT, write

PKG = ROOT / "zoo"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PKG.rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """zoo modules that ``path`` imports anywhere (module level or inside functions)."""
    out: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        out.update(t for t in targets if t in known and t != name)
    return out


def test_no_import_cycles():
    mods = _modules()
    graph = {m: _imports(m, p, set(mods)) for m, p in mods.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_cycle_finder_finds_a_cycle(tmp_path):
    a = write(tmp_path / "a.py", "def f():\n    from zoo import b\n")
    b = write(tmp_path / "b.py", "import zoo.a\n")
    known = {"zoo", "zoo.a", "zoo.b"}
    assert _imports("zoo.a", a, known) == {"zoo.b"}
    assert _imports("zoo.b", b, known) == {"zoo.a"}


def test_mlflow_only_in_tracking():
    users = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "mlflow" or n.startswith("mlflow.") for n in names):
                users.append(name)
    assert set(users) <= {"zoo.tracking", "zoo.mlflow_model"}, users


@pytest.mark.parametrize("override, message", [
    ("model.activation=tanhh", "model.activation: unknown value 'tanhh' (did you mean: tanh"),
    ("model.units='128'", "model.units: expected int, got '128'"),
    ("model.units=12.0", "model.units: expected int, got 12.0"),
    ("model.recurrent_activation=sigmod", "model.recurrent_activation: unknown value 'sigmod'"),
])
@pytest.mark.slow
def test_bad_builder_values_refused_without_tensorflow(override, message):
    recipe = ROOT / "recipes" / "sentiment.yaml"
    code = textwrap.dedent(f"""
        import sys, time
        t = time.perf_counter()
        from zoo.cli import main
        code = main(["run", {str(recipe)!r}, "--set", {override!r}, "--set", "model.name=lstm"])
        print(code, "tensorflow" in sys.modules, "keras" in sys.modules, time.perf_counter() - t)
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    code, tf, keras, seconds = out.stdout.split()
    assert (code, tf, keras) == ("2", "False", "False"), out.stderr
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert float(seconds) < 5  # generous: it takes a fraction of a second


def test_bad_merge_mode_names_key(tmp_path):
    from zoo.errors import ZooError
    from zoo.recipe import load_recipe

    with pytest.raises(ZooError, match=r"model.merge_mode: unknown value 'cat' \(did you mean: concat"):
        load_recipe(ROOT / "recipes" / "sentiment.yaml", ["model.merge_mode=cat"])


def test_listed_activations_are_keras_activations():
    import keras
    from typing import get_args

    from zoo.models import Activation

    for name in get_args(Activation):
        assert callable(keras.activations.get(name)), name


@pytest.mark.slow
def test_models_name_prints_hyperparameters():
    out = subprocess.run([sys.executable, "-m", "zoo.cli", "models", "bi-lstm"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for word in ("hyperparameter", "units", "128", "merge_mode", "'concat'", "recurrent_activation"):
        assert word in out.stdout


@pytest.mark.slow
def test_plugin_builder_trains_through_a_recipe(tmp_path, store):
    """A builder from another package, registered through the entry point only, trains."""
    pkg = tmp_path / "plug" / "zooplugin_gated"
    write(pkg / "__init__.py", textwrap.dedent("""
        from zoo import register_model

        @register_model("plug-rnn", layer="SimpleRNN", description="a plug-in")
        def plug(*, units: int = 3, return_sequences=False, stateful=False):
            import keras
            return [keras.layers.SimpleRNN(units, return_sequences=return_sequences,
                                           stateful=stateful)]
        """))
    dist = tmp_path / "plug" / "zooplugin_gated-1.0.dist-info"
    write(dist / "METADATA", "Metadata-Version: 2.1\nName: zooplugin-gated\nVersion: 1.0\n")
    write(dist / "entry_points.txt", "[zoo.models]\nplug = zooplugin_gated\n")
    recipe = write(tmp_path / "plug.yaml", textwrap.dedent("""
        task: echo
        data: {total_series_length: 600, eval_series_length: 300, truncated_backprop_length: 5}
        model: {name: plug-rnn, units: 4}
        train: {epochs: 1, batch_size: 4, verbose: 0}
        """))
    import os

    env = {**os.environ, "PYTHONPATH": str(tmp_path / "plug")}
    bad = subprocess.run([sys.executable, "-m", "zoo.cli", "run", str(recipe), "--set",
                          "model.units=x"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "model.units: expected int, got 'x'" in bad.stderr, bad.stderr
    out = subprocess.run([sys.executable, "-m", "zoo.cli", "run", str(recipe)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "registered plug-rnn-echo version 1" in out.stdout
