import re
import subprocess
import sys

import pytest

from conftest import RECIPES, zoo

pytestmark = pytest.mark.slow   # runs the zoo command in processes


def test_models_lists_without_tensorflow():
    code = ("import sys; from zoo.cli import main; main(['models', 'bi-*']); "
            "print('TF LOADED' if any(m.split('.')[0] in ('tensorflow', 'keras') "
            "for m in sys.modules) else 'NO TF')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["name", "layer", "cuDNN", "description"]
    assert [line.split()[0] for line in lines[2:-1]] == ["bi-gru", "bi-lstm", "bi-simple-rnn", "bi-tanh-rnn"]
    assert re.search(r"bi-lstm +Bidirectional\(LSTM\) +yes", out.stdout)
    assert re.search(r"bi-tanh-rnn +Bidirectional\(TanhRNN\) +no", out.stdout)
    assert lines[-1] == "NO TF"


def test_models_no_match():
    out = zoo("models", "xyz*")
    assert out.returncode == 1 and "no model builder matches" in out.stderr


def test_recipes_lists_task_and_model():
    out = zoo("recipes", str(RECIPES))
    assert out.returncode == 0, out.stderr
    assert "echo.yaml" in out.stdout and "tanh-rnn-echo" in out.stdout
    assert "invalid" not in out.stdout


def test_user_errors_are_one_line_exit_2(tmp_path):
    out = zoo("run", str(tmp_path / "missing.yaml"))
    assert out.returncode == 2
    assert out.stderr.strip() == f"zoo: error: {tmp_path / 'missing.yaml'}: recipe file not found"
    out = zoo("run", str(RECIPES / "echo.yaml"), "--set", "model.name=lstn", cwd=tmp_path)
    assert out.returncode == 2 and "did you mean: lstm" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "mlruns").exists()
    out = zoo("predict", "no-such-model", "great", cwd=tmp_path)
    assert out.returncode == 2 and "no-such-model" in out.stderr and "Traceback" not in out.stderr
