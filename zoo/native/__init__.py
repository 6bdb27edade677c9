"""zoo's native kernels: the sequential part of the LSTM, GRU and tanh recurrences, forward
and backward, as six TensorFlow ops (``rnn_ops.cc``), built on first use with the machine's C++
compiler against the installed TensorFlow, and cached.

:func:`rnn_ops` returns the loaded op module, or None when it cannot be had (no compiler, a
failed build, an untrusted cache, ``ZOO_NATIVE=0``, another backend); :func:`why_not` then says
why in one line and :func:`status_line` what a user can do about it.  Callers fall back to the
graph fast path in ``zoo.fast_rnn``, which computes the same thing.

What is loaded, and from where:

- The cache is per user: ``$ZOO_NATIVE_DIR``, else ``$XDG_CACHE_HOME/zoo/native`` (default
  ``~/.cache/zoo/native``), created with mode 0700, never the shareable corpus cache
  (``ZOO_CACHE_DIR``).  A cache folder or library that is not owned by the user, is writable by
  group or others, or is a symbolic link is refused (one line, and the graph loop); so is a
  folder above it that another user could rename things in.
- Each build lives in a folder named by a hash of the source, TensorFlow and Python, the
  compiler command and what it targets (``-march=native`` as the compiler resolves it), and the
  CPU's feature flags (``flags`` on x86, ``Features`` on ARM).
- A build is compiled to a temporary name (with a timeout), loaded once in a child process
  that runs one of its ops, fsynced, renamed into place, and its SHA-256 is written beside it.
  A process loads the library only when its digest matches that record; a file that does not
  match (truncated, replaced) is moved aside and rebuilt, never loaded.
- A failed build is recorded in its folder, keyed by the compiler's identity, so that later
  processes do not try again for nothing; another compiler (or ``CXX``) tries again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time

log = logging.getLogger(__name__)

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rnn_ops.cc")
_LIB = "zoo_rnn_ops.so"
_DIGEST = _LIB + ".sha256"
_FAILED = "build-failed.json"
_OPS = ("zoo_lstm_forward", "zoo_lstm_backward", "zoo_gru_forward", "zoo_gru_backward",
        "zoo_tanh_forward", "zoo_tanh_backward")
_OLD_BUILDS_S = 30 * 24 * 3600  # other builds unused this long are removed after a build
_HOW = "install g++ (or clang) or set CXX to a C++ compiler"

_state: dict = {}  # "ops" (module or None), "why" (str or None), "key" once computed


def cache_dir() -> str:
    """The per-user folder of native builds (see the module's docstring)."""
    env = os.environ.get("ZOO_NATIVE_DIR")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(os.path.abspath(base), "zoo", "native")


def build_timeout() -> float:
    """Seconds one compile may take (``ZOO_NATIVE_BUILD_TIMEOUT``, default 300)."""
    try:
        return float(os.environ.get("ZOO_NATIVE_BUILD_TIMEOUT", "300"))
    except ValueError:
        return 300.0


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> list[str]:
    """The CPU's instruction-set flags as the kernel lists them (``flags`` on x86,
    ``Features`` on ARM); empty where they cannot be read (not Linux)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.split(":", 1)[0].strip() in ("flags", "Features"):
                    return line.split(":", 1)[-1].split()
    except OSError:
        pass
    return []


def _compiler() -> tuple[list[str] | None, str | None]:
    """The compiler command (``$CXX`` split like a shell does, so ``ccache g++`` works; else
    g++, c++ or clang++ on ``PATH``), or None and why not."""
    env = os.environ.get("CXX", "").strip()
    if env:
        try:
            argv = shlex.split(env)
        except ValueError as e:
            return None, f"CXX={env!r} cannot be read as a command ({e})"
        if not argv or shutil.which(argv[0]) is None:
            return None, f"the compiler CXX={env!r} was not found"
        return argv, None
    for name in ("g++", "c++", "clang++"):
        path = shutil.which(name)
        if path:
            return [path], None
    return None, "no C++ compiler (g++, c++ or clang++) on PATH"


def _machine_flags() -> list[list[str]]:
    """Target flags to try in turn on this platform: tuned for this CPU first, then generic."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        # -mno-avx512fp16: the float16 packet code of TensorFlow's Eigen does not build with
        # GCC 12 when the CPU has AVX512-FP16 (Sapphire Rapids); zoo's kernels are float32.
        return [["-march=native", "-mno-avx512fp16"], ["-march=native"], []]
    if machine in ("aarch64", "arm64"):
        return [["-mcpu=native"], []]
    return [["-march=native"], []]


def _commands(cxx: list[str], src: str, out: str) -> list[list[str]]:
    """Compile commands to try in turn (TensorFlow's custom-op flags; on macOS the link flag
    its guide asks for)."""
    import tensorflow as tf

    tf_flags = tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags()
    base = [*cxx, "-shared", "-fPIC", "-O3", "-w", src, "-o", out] + tf_flags
    if sys.platform == "darwin":
        base += ["-undefined", "dynamic_lookup"]
    return [base + flags for flags in _machine_flags()]


def _target_description(cxx: list[str]) -> str:
    """What the compiler will generate code for with the first command's flags, as the
    compiler itself resolves them (``-march=native`` expanded into the CPU's features)."""
    flags = _machine_flags()[0]
    try:
        proc = subprocess.run([*cxx, *flags, "-###", "-x", "c++", "-S", os.devnull,
                               "-o", os.devnull], capture_output=True, text=True, timeout=30)
        return proc.stderr
    except (OSError, subprocess.SubprocessError) as e:
        return f"unresolved: {e}"


def _key(cxx: list[str]) -> str:
    if "key" not in _state:
        import tensorflow as tf

        h = hashlib.sha256()
        with open(SOURCE, "rb") as f:
            h.update(f.read())
        cpu = " ".join(cpu_flags()) or platform.processor()
        for part in (tf.__version__, sys.version, platform.machine(), shlex.join(cxx), cpu,
                     _target_description(cxx), " ".join(_commands(cxx, "SRC", "OUT")[0])):
            h.update(b"\0" + part.encode())
        _state["key"] = h.hexdigest()[:16]
    return _state["key"]


def _compiler_identity(cxx: list[str]) -> str:
    """What names the compiler a failed build was tried with: its command and each program's
    path, size and time of change (installing or upgrading a compiler changes it)."""
    parts = [shlex.join(cxx)]
    for word in cxx[:2]:
        path = shutil.which(word)
        if path:
            st = os.stat(path)
            parts.append(f"{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}")
    return " ".join(parts)


def _switched_off() -> bool:
    return os.environ.get("ZOO_NATIVE", "1").strip().lower() in ("0", "false", "no", "off")


# ------------------------------------------------------------------------------ trust checks

def _untrusted(path: str) -> str | None:
    """Why ``path`` (a cache folder or file) cannot be trusted, or None: it must be the
    user's own, not a symbolic link, and writable by nobody else."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symbolic link"
    if st.st_uid != os.geteuid():
        return f"{path} is owned by uid {st.st_uid}, not by you (uid {os.geteuid()})"
    if st.st_mode & 0o022:
        return f"{path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def _untrusted_ancestor(folder: str) -> str | None:
    """Why a folder above the cache lets another user swap it, or None: each must be owned
    by you or root and writable by nobody else, unless sticky (like /tmp)."""
    path = os.path.dirname(folder)
    while True:
        st = os.stat(path)
        if st.st_uid not in (0, os.geteuid()):
            return f"{path} (above the native cache) is owned by uid {st.st_uid}"
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            return (f"{path} (above the native cache) is writable by group or others "
                    f"(mode {stat.S_IMODE(st.st_mode):o})")
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


def _private_folder(path: str) -> str | None:
    """Creates ``path`` (and missing parents) with mode 0700 where missing; then why it
    cannot be trusted, or None."""
    missing = []
    p = path
    while not os.path.lexists(p):
        missing.append(p)
        p = os.path.dirname(p)
    for p in reversed(missing):
        try:
            os.mkdir(p, 0o700)
        except FileExistsError:
            pass
    return _untrusted(path)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verified(folder: str) -> str | None:
    """The library's path when it is there, trusted and matches its recorded digest; None
    when there is none yet. Raises _Refused for a library that must not be loaded."""
    target = os.path.join(folder, _LIB)
    if not os.path.lexists(target):
        return None
    for path in (target, os.path.join(folder, _DIGEST)):
        if os.path.lexists(path):
            why = _untrusted(path)
            if why is not None:
                raise _Refused(why)
    try:
        with open(os.path.join(folder, _DIGEST), encoding="ascii") as f:
            recorded = f.read().strip()
    except (OSError, UnicodeDecodeError):
        recorded = ""
    if recorded and _sha256(target) == recorded:
        return target
    raise _Mismatch(target)


class _Refused(Exception):
    pass


class _Mismatch(Exception):
    pass


# ------------------------------------------------------------------------------------ build

_CHECK = """
import sys
import tensorflow as tf
ops = tf.load_op_library(sys.argv[1])
missing = [name for name in sys.argv[2:] if not hasattr(ops, name)]
if missing:
    sys.exit("missing ops: " + " ".join(missing))
hs, _ = ops.zoo_tanh_forward(tf.ones([2, 3, 4]), tf.zeros([2, 4]), tf.zeros([4, 4]),
                             tf.ones([2, 3]))
assert abs(float(hs[0, 0, 0]) - 0.7615942) < 1e-5, float(hs[0, 0, 0])
"""


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_private(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` atomically, mode 0600, fsynced."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _first_error(stderr: str) -> str:
    lines = stderr.splitlines()
    errors = [ln for ln in lines if "error" in ln]
    return (errors or lines or ["(no output)"])[0].strip()[:300]


def _build(cxx: list[str], folder: str) -> str | None:
    """Builds, checks and installs the library in ``folder`` (whose lock is held); returns
    None, or why it failed (one line)."""
    for name in os.listdir(folder):  # what a killed build left behind
        if name.startswith(".build-") or name.endswith(".tmp"):
            os.unlink(os.path.join(folder, name))
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=folder)
    os.close(fd)
    last = ""
    try:
        for cmd in _commands(cxx, SOURCE, tmp):
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True,
                                      timeout=build_timeout())
            except subprocess.TimeoutExpired:
                return f"building {os.path.basename(SOURCE)} took over {build_timeout():.0f} s"
            except OSError as e:
                return f"cannot run the compiler {shlex.join(cxx)}: {e}"
            if proc.returncode == 0:
                break
            last = _first_error(proc.stderr)
        else:
            return f"building {os.path.basename(SOURCE)} failed: {last}"
        os.chmod(tmp, 0o500)
        _fsync(tmp)
        try:  # a library that cannot load or run (SIGILL, SIGBUS) fails here, not in a run
            check = subprocess.run([sys.executable, "-c", _CHECK, tmp, *_OPS],
                                   capture_output=True, text=True, timeout=build_timeout(),
                                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        except subprocess.TimeoutExpired:
            return f"checking the native build took over {build_timeout():.0f} s"
        if check.returncode != 0:
            lines = check.stderr.strip().splitlines() or ["(no output)"]
            detail = (lines[-1][:300] if check.returncode > 0
                      else f"killed by signal {-check.returncode}")
            return f"the native build failed its check in a child process: {detail}"
        digest = _sha256(tmp)
        os.replace(tmp, os.path.join(folder, _LIB))
        _write_private(os.path.join(folder, _DIGEST), digest + "\n")
        _fsync(folder)
        return None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _clean_old_builds(root: str, keep: str) -> None:
    """Removes the other build folders unused for 30 days (a digest is touched at each
    load) or holding only a failed build that old."""
    now = time.time()
    for name in os.listdir(root):
        folder = os.path.join(root, name)
        if name == keep or not os.path.isdir(folder) or os.path.islink(folder):
            continue
        marks = [os.path.join(folder, n) for n in (_DIGEST, _FAILED)]
        last = max((os.path.getmtime(p) for p in marks if os.path.exists(p)),
                   default=os.path.getmtime(folder))
        if now - last > _OLD_BUILDS_S:
            shutil.rmtree(folder, ignore_errors=True)


def _lock_timeout() -> float:
    """How long a process waits for another that is building (a build is bounded by
    :func:`build_timeout`; the lock goes with a process that dies)."""
    return build_timeout() + 60


def _load():
    if _switched_off():
        return None, "switched off by ZOO_NATIVE=0"
    import keras

    if keras.backend.backend() != "tensorflow":
        return None, f"backend {keras.backend.backend()}"
    cxx, why = _compiler()
    _state["compiler_fault"] = True  # until the cache is in use: no compiler, a failed build
    if why is not None:
        return None, why
    root = cache_dir()
    try:
        _state["compiler_fault"] = False
        why = _private_folder(root) or _untrusted_ancestor(root)
        if why is not None:
            return None, why
        folder = os.path.join(root, _key(cxx))
        why = _private_folder(folder)
        if why is not None:
            return None, why
        try:
            target = _verified(folder)
        except _Mismatch:
            target = None
        if target is None:
            target, why = _build_locked(cxx, root, folder)
            _state["compiler_fault"] = why is not None and not why.startswith("another process")
            if why is not None:
                return None, why
    except _Refused as e:
        return None, str(e)
    except OSError as e:
        return None, f"cannot use the native cache {root}: {e}"
    import tensorflow as tf

    try:
        os.utime(os.path.join(folder, _DIGEST))  # in use: not an old build
    except OSError:
        pass
    try:
        return tf.load_op_library(target), None
    except Exception as e:  # a library built for another TensorFlow, say
        return None, f"cannot load {target}: {str(e).splitlines()[0][:300]}"


def _build_locked(cxx: list[str], root: str, folder: str) -> tuple[str | None, str | None]:
    """Under the folder's lock (waited for at most a bounded time): the verified library,
    after moving a bad one aside and building where needed; or None and why not."""
    from filelock import FileLock, Timeout

    lock = os.path.join(folder, ".lock")
    try:
        with FileLock(lock, timeout=_lock_timeout(), mode=0o600):
            try:
                target = _verified(folder)
                if target is not None:
                    return target, None
            except _Mismatch as bad:
                os.replace(str(bad), os.path.join(folder, _LIB + ".bad"))
                log.warning("zoo: the native build %s did not match its recorded digest; "
                            "moved it aside to %s.bad and rebuilding it", bad, _LIB)
            failed = os.path.join(folder, _FAILED)
            identity = _compiler_identity(cxx)
            if os.path.exists(failed):
                with open(failed, encoding="utf-8") as f:
                    record = json.load(f)
                if record.get("compiler") == identity:
                    return None, (f"{record.get('why')} (recorded in {failed}; delete it to "
                                  "try again)")
            why = _build(cxx, folder)
            if why is not None:
                _write_private(failed, json.dumps({"why": why, "compiler": identity}))
                return None, why
            if os.path.exists(failed):
                os.unlink(failed)
            _clean_old_builds(root, os.path.basename(folder))
            return os.path.join(folder, _LIB), None
    except Timeout:
        return None, (f"another process has been building the native kernels for over "
                      f"{_lock_timeout():.0f} s (it holds {lock}); this run does not wait longer")


def build_due() -> bool:
    """Whether the next :func:`rnn_ops` will compile (nothing cached for this source,
    TensorFlow and CPU yet, and a compiler to try)."""
    if "ops" in _state or _switched_off():
        return False
    cxx, why = _compiler()
    if why is not None:
        return False
    import keras

    if keras.backend.backend() != "tensorflow":
        return False
    folder = os.path.join(cache_dir(), _key(cxx))
    return not (os.path.exists(os.path.join(folder, _LIB))
                or os.path.exists(os.path.join(folder, _FAILED)))


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


def status_line() -> str:
    """One line saying which path recurrent layers train on and, when it is not the native
    one, why and how to get it."""
    why = why_not()
    if why is None:
        return f"zoo: recurrent layers run on zoo's native kernels (built in {cache_dir()})"
    if _switched_off():
        how = "unset ZOO_NATIVE to use them"
    elif why.startswith("backend "):
        how = "they are TensorFlow ops (KERAS_BACKEND=tensorflow)"
    elif _state.get("compiler_fault"):
        how = _HOW
    else:
        how = "the README's 'What zoo guarantees: native kernels' says what is checked"
    return f"zoo: recurrent layers run on the slower graph loop, not native kernels: {why}; {how}"
