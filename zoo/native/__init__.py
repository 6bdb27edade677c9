"""zoo's native kernels: the sequential part of the LSTM, GRU and tanh recurrences, forward
and backward, as six TensorFlow ops (``rnn_ops.cc``), built on first use with the machine's C++
compiler against the installed TensorFlow, and cached.

:func:`rnn_ops` returns the loaded op module, or None when it cannot be had (no compiler, a
failed build, ``ZOO_NATIVE=0``, another backend); :func:`why_not` then says why in one line.
Callers fall back to the graph fast path in ``zoo.fast_rnn``, which computes the same thing.

The build is cached under ``$ZOO_CACHE_DIR/native`` (default ``~/.cache/zoo/native``) in a
folder named by a hash of the source, the TensorFlow version, the compiler command and the
CPU's instruction-set flags, so a changed source, an upgraded TensorFlow or another CPU builds
afresh.  Concurrent processes take a file lock; the library is written to a temporary name
and renamed, so no process ever loads a half-written file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile

log = logging.getLogger(__name__)

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rnn_ops.cc")
_LIB = "zoo_rnn_ops.so"

_state: dict = {}  # "ops" (module or None) and "why" (str or None) once tried


def cache_dir() -> str:
    root = os.environ.get("ZOO_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "zoo")
    return os.path.join(root, "native")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> list[str]:
    """The CPU's instruction-set flags as the kernel lists them; empty where they cannot be
    read (not Linux)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return line.split(":", 1)[-1].split()
    except OSError:
        pass
    return []


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def _commands(cxx: str, src: str, out: str) -> list[list[str]]:
    """Compile commands to try in turn: tuned for this CPU first, then generic."""
    import tensorflow as tf

    tf_flags = tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags()
    base = [cxx, "-shared", "-fPIC", "-O3", "-w", src, "-o", out] + tf_flags
    # -mno-avx512fp16: the float16 packet code of TensorFlow's Eigen does not build with GCC 12
    # when the CPU has AVX512-FP16 (Sapphire Rapids); zoo's kernels are float32.
    return [base + ["-march=native", "-mno-avx512fp16"], base + ["-march=native"], base]


def _build(target: str) -> str | None:
    """Builds the library at ``target``; returns None, or why it failed (one line)."""
    cxx = _compiler()
    if cxx is None:
        return "no C++ compiler (g++ or $CXX) found"
    folder = os.path.dirname(target)
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=folder)
    os.close(fd)
    last = ""
    try:
        for cmd in _commands(cxx, SOURCE, tmp):
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode == 0:
                os.replace(tmp, target)
                return None
            errors = [ln for ln in proc.stderr.splitlines() if "error" in ln]
            last = (errors or proc.stderr.splitlines() or ["(no output)"])[0].strip()
        return f"building {os.path.basename(SOURCE)} failed: {last[:300]}"
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _key() -> str:
    import tensorflow as tf

    h = hashlib.sha256()
    with open(SOURCE, "rb") as f:
        h.update(f.read())
    cxx = _compiler() or ""
    cpu = " ".join(cpu_flags()) or platform.processor() or platform.machine()
    for part in (tf.__version__, sys.version, cxx, cpu,
                 " ".join(_commands(cxx, "SRC", "OUT")[0])):
        h.update(b"\0" + part.encode())
    return h.hexdigest()[:16]


def _switched_off() -> bool:
    return os.environ.get("ZOO_NATIVE", "1").strip().lower() in ("0", "false", "no", "off")


def _target() -> str:
    return os.path.join(cache_dir(), _key(), _LIB)


def build_due() -> bool:
    """Whether the next :func:`rnn_ops` will compile (nothing cached for this source,
    TensorFlow and CPU yet, and a compiler to try)."""
    if "ops" in _state or _switched_off() or _compiler() is None:
        return False
    import keras

    return keras.backend.backend() == "tensorflow" and not os.path.exists(_target())


def _load():
    if _switched_off():
        return None, "switched off by ZOO_NATIVE"
    import keras

    if keras.backend.backend() != "tensorflow":
        return None, f"backend {keras.backend.backend()}"
    import tensorflow as tf
    from filelock import FileLock

    target = _target()
    folder = os.path.dirname(target)
    try:
        os.makedirs(folder, exist_ok=True)
        with FileLock(os.path.join(folder, ".lock"), timeout=600):
            if not os.path.exists(target):
                why = _build(target)
                if why is not None:
                    return None, why
    except OSError as e:
        return None, f"cannot write the native build to {folder}: {e}"
    try:
        return tf.load_op_library(target), None
    except Exception as e:  # a library built for another TensorFlow, say
        return None, f"cannot load {target}: {str(e).splitlines()[0][:300]}"


def rnn_ops():
    """The op module (``zoo_lstm_forward`` ... ``zoo_tanh_backward``), or None (see
    :func:`why_not`)."""
    if "ops" not in _state:
        ops, why = _load()
        _state["ops"], _state["why"] = ops, why
        if why is not None:
            log.info("zoo native kernels not used: %s", why)
    return _state["ops"]


def why_not() -> str | None:
    """None when :func:`rnn_ops` has the kernels, else why not (one line)."""
    rnn_ops()
    return _state["why"]
