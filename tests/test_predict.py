"""`zoo predict` over files: every input and output format, bad rows as error rows (or an
abort with --strict), one output line per input line on standard input, no partial output from
a killed run, and the same predictions on Ray Data (--address local)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import write

pytestmark = pytest.mark.slow

GOOD, BAD = "a gripping film and great fun", "a boring mess so tedious"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny lstm-sentiment model, registered in a store of its own; yields its folder."""
    root = tmp_path_factory.mktemp("predict")
    (root / "mlruns").mkdir()
    rows = ["text,label"] + [f"{t} {i},{lab}" for i in range(30)
                             for t, lab in ((GOOD, "pos"), (BAD, "neg"))]
    write(root / "reviews.csv", "\n".join(rows) + "\n")
    recipe = write(root / "s.yaml", """
task: {name: sentiment, embedding_dim: 8}
data: {path: reviews.csv, vocabulary_size: 50, max_length: 8}
model: {name: lstm, units: 8}
train: {epochs: 3, batch_size: 16, seed: 2, verbose: 0, optimizer: {learning_rate: 0.02}}
""")
    from zoo.engine import run
    from zoo.recipe import load_recipe

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
        mp.setenv("ZOO_MODEL_CACHE", str(root / "cache"))
        run(load_recipe(recipe, []), echo=lambda *a: None)
        yield root


def _expected(texts):
    import zoo

    return zoo.load("lstm-sentiment").predict(texts)


def _read(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    import pandas as pd

    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    return [{k: (None if v != v else v) for k, v in r.items()} for r in df.to_dict("records")]


def _probability(r: dict) -> float:
    return r["probabilities"]["pos"] if "probabilities" in r else r["probability_pos"]


def test_files_with_bad_rows_every_format(model, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from zoo.cli import main

    texts = [GOOD, "", BAD, "   ", "great fun", "tedious"]
    want = _expected([t for t in texts if t.strip()])
    lines = tmp_path / "in.txt"
    lines.write_bytes(("\n".join(texts) + "\n").encode() + b"\xff\xfe broken\n" + b"dull\n")
    csv_in = write(tmp_path / "in.csv", "id,review\n" + "".join(
        f'{i},"{t}"\n' for i, t in enumerate(texts)))
    jsonl_in = write(tmp_path / "in.jsonl", "".join(
        json.dumps({"review": t}) + "\n" for t in texts) + '{"review": 3}\n{"other": "x"}\n')
    pq.write_table(pa.table({"review": texts + [None]}), tmp_path / "in.parquet")
    cases = [(lines, "text", ".csv", 8, {2: "empty", 4: "empty", 7: "not decodable as UTF-8"}),
             (csv_in, "review", ".jsonl", 6, {2: "empty", 4: "empty"}),
             (jsonl_in, "review", ".parquet", 8, {2: "empty", 4: "empty", 7: "not a string",
                                                  8: "not a string"}),
             (tmp_path / "in.parquet", "review", ".csv", 7, {2: "empty", 4: "empty",
                                                           7: "not a string"})]
    for src, column, ext, n, errors in cases:
        out = tmp_path / f"out-{src.suffix[1:]}{ext}"
        capsys.readouterr()
        assert main(["predict", "lstm-sentiment", "--input", str(src), "--output", str(out),
                     "--column", column, "--chunk-size", "3"]) == 0
        err = capsys.readouterr().err
        got = _read(out)
        assert [r["row"] for r in got] == list(range(1, n + 1)), src
        assert {r["row"]: r["error"] for r in got if r["error"]} == errors, src
        for row, why in errors.items():
            assert f"row {row}: {why}" in err
        assert f"{n} rows ({len(errors)} bad)" in err and str(out) in err
        good = [r for r in got if not r["error"]][:4]
        assert [r["label"] for r in good] == [w["label"] for w in want]
        assert [_probability(r) for r in good] == pytest.approx(
            [w["probabilities"]["pos"] for w in want], abs=1e-6)
    # a folder: its files in name order, rows numbered on
    folder = tmp_path / "many"
    write(folder / "b.txt", "dull\n")
    write(folder / "a.txt", f"{GOOD}\n\n")
    assert main(["predict", "lstm-sentiment", "--input", str(folder), "--output",
                 str(tmp_path / "many.csv")]) == 0
    assert [(r["row"], r["error"]) for r in _read(tmp_path / "many.csv")] == \
        [(1, None), (2, "empty"), (3, None)]


def test_strict_aborts_and_bad_arguments(model, tmp_path, capsys):
    from zoo.cli import main

    src = write(tmp_path / "in.txt", f"{GOOD}\n\n{BAD}\n")
    out = tmp_path / "out.csv"
    assert main(["predict", "lstm-sentiment", "--input", str(src), "--output", str(out),
                 "--strict"]) == 2
    assert "row 2: empty (--strict)" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".out.csv*"))
    assert main(["predict", "lstm-sentiment", "--input", str(src), "--output",
                 str(tmp_path / "out.xlsx")]) == 2
    assert "expected a .csv, .jsonl or .parquet file" in capsys.readouterr().err
    assert main(["predict", "lstm-sentiment", "--input", str(tmp_path / "nope.txt")]) == 2
    assert "nope.txt: no such file or folder" in capsys.readouterr().err
    csv_in = write(tmp_path / "in.csv", "review\nfine\n")
    assert main(["predict", "lstm-sentiment", "--input", str(csv_in)]) == 2
    assert "no column 'text' (columns: review); choose one with --column" in \
        capsys.readouterr().err


def test_stdin_and_arguments_keep_one_line_per_input(model, monkeypatch, capsys):
    from zoo.cli import main

    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{GOOD}\n\n{BAD}\n  \nlast"))
    assert main(["predict", "lstm-sentiment", "-"]) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert len(lines) == 5
    assert lines[1].startswith("error\tempty") and lines[3].startswith("error\tempty")
    assert lines[0].endswith(GOOD) and lines[2].endswith(BAD)
    assert "row 2: empty" in out.err
    assert main(["predict", "lstm-sentiment", GOOD, "", BAD]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[1].startswith("error\tempty")


def test_a_killed_run_leaves_no_output(model, tmp_path):
    src = tmp_path / "big.txt"
    src.write_text(f"{GOOD}\n{BAD}\n" * 100_000)
    out = tmp_path / "out.csv"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    for sig in (signal.SIGKILL,):   # SIGTERM and Ctrl-C remove the temporary as well
        proc = subprocess.Popen([sys.executable, "-m", "zoo.cli", "predict", "lstm-sentiment",
                                 "--input", str(src), "--output", str(out), "--chunk-size", "256"],
                                cwd=model, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + 240
        while not list(tmp_path.glob(".out.csv.tmp-*")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        time.sleep(0.5)
        proc.send_signal(sig)
        proc.communicate(timeout=60)
        assert proc.returncode != 0
        assert not out.exists()   # only the hidden temporary is left


def test_ray_local_gives_the_same_predictions(model, tmp_path):
    pytest.importorskip("ray.data")
    from zoo.cli import main

    texts = [GOOD, "", BAD, "great fun", "tedious and dull", "  "] * 3
    src = write(tmp_path / "in.csv", "text\n" + "".join(f'"{t}"\n' for t in texts))
    assert main(["predict", "lstm-sentiment", "--input", str(src), "--output",
                 str(tmp_path / "local.csv")]) == 0
    assert main(["predict", "lstm-sentiment", "--input", str(src), "--output",
                 str(tmp_path / "ray.csv"), "--address", "local", "--chunk-size", "4"]) == 0
    local, ray = _read(tmp_path / "local.csv"), _read(tmp_path / "ray.csv")
    assert [r["row"] for r in ray] == list(range(1, len(texts) + 1))
    assert [(r["label"], r["error"]) for r in ray] == [(r["label"], r["error"]) for r in local]
    assert [r["probability_pos"] for r in ray] == pytest.approx(
        [r["probability_pos"] for r in local], abs=1e-6, nan_ok=True)


def test_a_row_the_model_refuses_is_an_error_row_not_an_abort(store, tmp_path, capsys):
    """An echo series that is not class ids (or holds an id out of range) is refused by the
    model itself, not by the reader: it becomes that row's error, and the other rows are
    predicted; --strict stops at it."""
    from zoo.engine import run
    from zoo.errors import ZooError
    from zoo.predict import predict_file
    from zoo.recipe import load_recipe
    import zoo

    recipe = write(tmp_path / "echo.yaml", """
task: echo
data: {total_series_length: 1500, eval_series_length: 750, truncated_backprop_length: 15}
model: {name: tanh-rnn, units: 4}
train: {epochs: 1, batch_size: 5, seed: 1, verbose: 0}
track: {registered_name: echo-rows}
""")
    run(load_recipe(recipe, []), echo=lambda *a: None)
    m = zoo.load("echo-rows/1")
    good = ["0 1 1 0 1", "1 1 0 0 1 0"]
    write(tmp_path / "series.txt", f"{good[0]}\nabc\n{good[1]}\n0 7 1\n")
    out = tmp_path / "echo.jsonl"
    predict_file(m, str(tmp_path / "series.txt"), out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["row"] for r in rows] == [1, 2, 3, 4]
    assert rows[1]["error"] and "abc" in rows[1]["error"]
    assert rows[3]["error"] and "0..1" in rows[3]["error"]
    assert rows[0]["error"] is None and rows[2]["error"] is None
    expected = m.predict(good)
    assert [rows[0]["prediction"], rows[2]["prediction"]] == [json.dumps(e) for e in expected]
    err = capsys.readouterr().err
    assert "row 2:" in err and "row 4:" in err
    with pytest.raises(ZooError, match="row 2:.*--strict"):
        predict_file(m, str(tmp_path / "series.txt"), tmp_path / "strict.jsonl", strict=True)
    assert not (tmp_path / "strict.jsonl").exists()


def test_an_unreachable_ray_cluster_is_one_line(store, tmp_path, capsys):
    """--address to a Ray cluster that does not answer: one line within seconds, no output."""
    from zoo.cli import main

    write(tmp_path / "in.txt", f"{GOOD}\n")
    out = tmp_path / "out.csv"
    t0 = time.time()
    rc = main(["predict", "lstm-sentiment", "--input", str(tmp_path / "in.txt"),
               "--output", str(out), "--address", "127.0.0.1:9"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, lines
    assert "--address 127.0.0.1:9: the Ray cluster cannot be reached" in lines[0], lines
    assert time.time() - t0 < 10 and not out.exists()
