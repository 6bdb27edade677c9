"""zoo's native kernels can be trusted: they build and are used where zoo supports them, a
library planted in the cache or a broken one is never loaded, and direct calls of the ops with
wrong ranks are Python errors."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import write

from zoo import native

HAS_GXX = shutil.which("g++") is not None
SUPPORTED = sys.platform == "linux" and platform.machine() in ("x86_64", "aarch64")

PLANTED = r"""
#include <stdio.h>
__attribute__((constructor)) static void planted(void) {
  FILE* f = fopen("MARKER", "w");
  if (f) { fputs("ran", f); fclose(f); }
}
"""


@pytest.mark.skipif(not (SUPPORTED and HAS_GXX), reason="zoo builds its kernels on Linux "
                    "x86-64 and aarch64 with a C++ compiler")
def test_native_kernels_build_and_are_used_at_the_pinned_tensorflow():
    """A TensorFlow (or Eigen) upgrade that breaks the build fails here instead of silently
    costing users the native kernels' speed."""
    assert native.why_not() is None
    assert native.status_line().startswith("zoo: recurrent layers run on zoo's native kernels")


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """A fresh per-user native cache; returns the build folder this process would load from."""
    monkeypatch.setenv("ZOO_NATIVE_DIR", str(tmp_path / "native"))
    monkeypatch.setattr(native, "_state", {})
    cxx, why = native._compiler()
    if why is not None:
        pytest.skip(why)
    folder = os.path.join(native.cache_dir(), native._key(cxx))
    assert native._private_folder(folder) is None
    return folder


@pytest.mark.skipif(not HAS_GXX, reason="needs g++ to build the planted library")
@pytest.mark.parametrize("how", ["library of another user", "group-writable library",
                                 "folder of another user", "symbolic link"])
def test_a_planted_library_is_never_loaded(empty_cache, tmp_path, monkeypatch, how):
    """A library with a constructor, at the path and with the digest zoo expects, but owned by
    another user, writable by others or reached through a link, is refused in one line: its
    constructor never runs, and training takes the graph loop."""
    marker = tmp_path / "marker"
    src = write(tmp_path / "planted.c", PLANTED.replace("MARKER", str(marker)))
    lib = os.path.join(empty_cache, native._LIB)
    built = str(tmp_path / "planted.so")
    subprocess.run(["g++", "-x", "c", "-shared", "-fPIC", str(src), "-o", built], check=True)
    if how == "symbolic link":
        os.symlink(built, lib)
    else:
        shutil.copy(built, lib)
    write(tmp_path / "digest", native._sha256(lib) + "\n")
    shutil.copy(tmp_path / "digest", os.path.join(empty_cache, native._DIGEST))
    if how == "library of another user":
        os.chown(lib, 65534, 65534)
        expected = "is owned by uid 65534"
    elif how == "group-writable library":
        os.chmod(lib, 0o775)
        expected = "is writable by group or others"
    elif how == "folder of another user":
        os.chown(empty_cache, 65534, 65534)
        expected = "is owned by uid 65534"
    else:
        expected = "is a symbolic link"
    assert native.rnn_ops() is None
    assert expected in native.why_not()
    assert "\n" not in native.status_line()
    assert not marker.exists()  # the constructor did not run
    assert os.path.exists(lib) or how == "symbolic link"  # left for the user to look at


@pytest.mark.slow
@pytest.mark.skipif(not HAS_GXX, reason="needs the suite's native build")
def test_a_truncated_library_is_rebuilt_and_the_run_trains(store, tmp_path, monkeypatch):
    """A library cut to half its size (a full disk, a killed copy) does not match its recorded
    digest: the next process moves it aside, builds again and trains, instead of dying of
    SIGBUS in the loader.  The compiler here copies the suite's good build (a real rebuild is
    what the other tests do; this one is about what happens to the bad file)."""
    assert native.why_not() is None, native.why_not()
    good = os.path.join(native.cache_dir(), native._key(native._compiler()[0]), native._LIB)
    fake = write(tmp_path / "cxx", textwrap.dedent(f"""\
        #!/bin/sh
        while [ $# -gt 0 ]; do [ "$1" = -o ] && out=$2; shift; done
        [ -n "$out" ] && [ "$out" != /dev/null ] && cp {good} "$out"
        exit 0
        """))
    os.chmod(fake, 0o755)
    env = dict(os.environ, ZOO_NATIVE_DIR=str(tmp_path / "native"), CXX=str(fake))
    with monkeypatch.context() as m:  # the folder the run will look in
        m.setattr(native, "_state", {})
        m.setenv("ZOO_NATIVE_DIR", env["ZOO_NATIVE_DIR"])
        m.setenv("CXX", env["CXX"])
        folder = Path(native.cache_dir(), native._key([str(fake)]))
    folder.mkdir(parents=True, mode=0o700)
    lib = folder / native._LIB
    shutil.copy(good, lib)
    (folder / native._DIGEST).write_text(native._sha256(str(lib)) + "\n")
    with open(lib, "r+b") as f:
        f.truncate(lib.stat().st_size // 2)
    recipe = write(tmp_path / "echo.yaml", """
task: echo
data: {total_series_length: 600, eval_series_length: 150, truncated_backprop_length: 15}
model: {name: tanh-rnn, units: 4}
train: {epochs: 1, batch_size: 5, seed: 7}
track: {experiment: echo-test}
""")
    second = subprocess.run([sys.executable, "-m", "zoo.cli", "run", str(recipe),
                             "--fast-dev-run"], env=env, capture_output=True, text=True,
                            timeout=600, cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr[-3000:]
    assert "did not match its recorded digest" in second.stderr
    assert "run on zoo's native kernels" in second.stdout + second.stderr
    assert (folder / (native._LIB + ".bad")).stat().st_size == lib.stat().st_size // 2
    assert native._sha256(str(lib)) == (folder / native._DIGEST).read_text().strip()


@pytest.mark.skipif(not HAS_GXX, reason="needs g++")
def test_a_library_that_fails_its_check_in_a_child_is_not_installed(empty_cache, tmp_path,
                                                                   monkeypatch):
    """A build whose library cannot load is caught in a child process: nothing is installed,
    the failure is recorded, and this process never loaded it."""
    marker = tmp_path / "marker"
    src = write(tmp_path / "planted.c", PLANTED.replace("MARKER", str(marker)))
    fake = write(tmp_path / "cxx", textwrap.dedent(f"""\
        #!/bin/sh
        while [ $# -gt 0 ]; do [ "$1" = -o ] && out=$2; shift; done
        [ -n "$out" ] && [ "$out" != /dev/null ] && g++ -x c -shared -fPIC {src} -o "$out"
        exit 0
        """))
    os.chmod(fake, 0o755)
    monkeypatch.setenv("CXX", str(fake))
    monkeypatch.setattr(native, "_state", {})
    folder = os.path.join(native.cache_dir(), native._key([str(fake)]))
    assert native.rnn_ops() is None
    assert "failed its check in a child process: missing ops" in native.why_not()
    assert marker.exists()  # the child loaded it ...
    assert not os.path.exists(os.path.join(folder, native._LIB))  # ... nobody else will
    assert [n for n in os.listdir(folder) if n.startswith(".build-")] == []
    assert os.path.exists(os.path.join(folder, native._FAILED))


def test_the_cache_is_private_and_separate_from_the_corpus_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("ZOO_NATIVE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert native.cache_dir() == str(tmp_path / "xdg" / "zoo" / "native")
    assert not native.cache_dir().startswith(os.environ["ZOO_CACHE_DIR"])
    assert native._private_folder(native.cache_dir()) is None
    assert oct(os.stat(native.cache_dir()).st_mode & 0o777) == "0o700"


def test_cpu_features_are_read_on_x86_and_arm(tmp_path):
    x86 = write(tmp_path / "x86", "processor\t: 0\nflags\t\t: fpu sse avx2\n")
    arm = write(tmp_path / "arm", "processor\t: 0\nFeatures\t: fp asimd sve\nCPU part\t: 0xd40\n")
    assert native.cpu_flags(str(x86)) == ["fpu", "sse", "avx2"]
    assert native.cpu_flags(str(arm)) == ["fp", "asimd", "sve"]


def test_cxx_is_split_like_a_shell_command(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", f"env CCACHE_DIR={tmp_path} g++")
    assert native._compiler() == (["env", f"CCACHE_DIR={tmp_path}", "g++"], None)
    monkeypatch.setenv("CXX", "no-such-compiler -O2")
    assert native._compiler()[1] == "the compiler CXX='no-such-compiler -O2' was not found"


def test_flags_are_valid_for_the_platform(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert not any("avx" in f for flags in native._machine_flags() for f in flags)
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert native._machine_flags()[0] == ["-march=native", "-mno-avx512fp16"]


# Each op's inputs at the right ranks (B=2 rows, T=3 steps, U=4 units), the index of its
# recurrent kernel u, and the number of gates.
OPS = {
    "zoo_lstm_forward": ([(2, 3, 16), (2, 4), (2, 4), (4, 16), (0,)]),
    "zoo_lstm_backward": ([(2, 3, 16), (2, 3, 4), (2, 4), (2, 3, 4), (2, 4), (2, 4), (4, 16),
                           (2, 3)]),
    "zoo_gru_forward": ([(2, 3, 12), (2, 4), (4, 12), (4,), (2, 3)]),
    "zoo_gru_backward": ([(2, 3, 12), (2, 3, 4), (2, 3, 4), (2, 4), (2, 3, 4), (2, 4), (4, 12),
                          (0,)]),
    "zoo_tanh_forward": ([(2, 3, 4), (2, 4), (4, 4), (2, 3)]),
    "zoo_tanh_backward": ([(2, 3, 4), (2, 3, 4), (2, 4), (4, 4), (0,)]),
}


REFUSED = "Shape must be rank|must be at|Dimension must be 0|Dimensions must be equal"


@pytest.mark.skipif(not HAS_GXX, reason="needs the native build")
@pytest.mark.parametrize("op", sorted(OPS))
def test_wrong_ranks_are_python_errors(op):
    """Traced with any one input at a wrong rank (one more, one fewer dimension), every op's
    shape function refuses it: a ValueError naming the op, never a crash or a made-up shape."""
    import tensorflow as tf

    ops = native.rnn_ops()
    assert ops is not None, native.why_not()
    fn = getattr(ops, op)
    shapes = OPS[op]

    def trace(shapes):
        specs = [tf.TensorSpec(s, tf.float32) for s in shapes]
        return tf.function(lambda *a: fn(*a)).get_concrete_function(*specs)

    outputs = trace(shapes).structured_outputs
    assert all(o.shape.rank is not None for o in outputs)
    for i, shape in enumerate(shapes):
        for wrong in (shape + (2,), shape[:-1]):
            if i == len(shapes) - 1 and wrong in ((), (2, 3)):
                continue  # a mask is none (an empty vector) or (B, T): rank 1 or 2
            bad = list(shapes)
            bad[i] = wrong
            with pytest.raises(ValueError, match=REFUSED):
                trace(bad)
    bad = list(shapes)
    bad[-1] = (5,)  # a rank-1 mask that is not empty
    with pytest.raises(ValueError, match="must be 0"):
        trace(bad)


def test_a_compiler_that_hangs_is_stopped_and_recorded(empty_cache, tmp_path, monkeypatch):
    """A compile is bounded by ZOO_NATIVE_BUILD_TIMEOUT: past it the build is given up, its
    temporary file removed and the failure recorded, so the next process does not wait again."""
    slow = write(tmp_path / "cxx", '#!/bin/sh\ncase "$*" in *-###*) exit 0;; esac\nexec sleep 30\n')
    os.chmod(slow, 0o755)
    monkeypatch.setenv("CXX", str(slow))
    monkeypatch.setenv("ZOO_NATIVE_BUILD_TIMEOUT", "1")
    monkeypatch.setattr(native, "_state", {})
    folder = os.path.join(native.cache_dir(), native._key([str(slow)]))
    os.makedirs(folder, mode=0o700)
    write(Path(folder) / ".build-killed.so", "what a killed build left")
    assert native.rnn_ops() is None
    assert native.why_not() == "building rnn_ops.cc took over 1 s"
    assert sorted(os.listdir(folder)) == [".lock", native._FAILED]
    monkeypatch.setattr(native, "_state", {})
    assert not native.build_due() and "recorded in" in native.why_not()


def test_builds_unused_for_a_month_are_removed(tmp_path):
    root = tmp_path / "native"
    for name, age_days in (("current", 40), ("recent", 2), ("old", 31), ("old-failed", 45)):
        mark = write(root / name / (native._FAILED if "failed" in name else native._DIGEST), "x")
        when = time.time() - age_days * 86400
        os.utime(mark, (when, when))
    native._clean_old_builds(str(root), keep="current")
    assert sorted(p.name for p in root.iterdir()) == ["current", "recent"]
