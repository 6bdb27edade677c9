"""Silence what TensorFlow, Keras and MLflow print that does not help a zoo user, at its
source, and let real errors through.

* TensorFlow's C++ start-up lines (absl, oneDNN, "Could not find cuda drivers", CPU feature
  notes) are written to the process's stderr while ``tensorflow`` is imported: the first import
  runs with stderr captured, and every captured line that is not one of those known notes is
  written back.  ``TF_CPP_MIN_LOG_LEVEL`` (default 3 here) quiets TensorFlow's later logging.
* Keras's "does not support masking" warning for the cells inside masked LSTM/GRU layers (the
  layer handles the mask; the cell need not), and MLflow's artifact progress bars.
"""

from __future__ import annotations

import importlib.abc
import logging
import os
import re
import sys
import tempfile
import warnings

NOISE = re.compile(
    r"absl::InitializeLog|oneDNN custom operations|Could not find cuda drivers|cpu_feature_guard|"
    r"This TensorFlow binary is optimized|To enable the following instructions|"
    r"rebuild TensorFlow with the appropriate|Unable to register cu(DNN|FFT|BLAS) factory|"
    r"computation placer already registered|failed call to cuInit|"
    r"oneDNN supports DT_\w+ only|TF-TRT Warning|cudart_stub")


def _filter(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if not NOISE.search(line))


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Runs the first ``import tensorflow`` with file descriptor 2 captured."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)
        if "tensorflow" in sys.modules:
            return None
        try:
            saved = os.dup(2)
        except OSError:
            return None
        with tempfile.TemporaryFile() as buf:
            sys.stderr.flush()
            os.dup2(buf.fileno(), 2)
            try:
                __import__("tensorflow")
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                buf.seek(0)
                rest = _filter(buf.read().decode("utf-8", "replace"))
                if rest:
                    sys.stderr.write(rest)
        return sys.modules["tensorflow"].__spec__


_installed = False


def quiet() -> None:
    """Install the filters (once per process; before TensorFlow is imported to catch its
    start-up lines)."""
    global _installed
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)   # e.g. "triggered tf.function retracing"
    warnings.filterwarnings("ignore", message=r".*does not support masking.*")
    warnings.filterwarnings("ignore", message=r".*`shuffle=True` was passed.*")
    warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method.*")
    if not _installed and "tensorflow" not in sys.modules:
        sys.meta_path.insert(0, _QuietTensorFlowImport())
    _installed = True
