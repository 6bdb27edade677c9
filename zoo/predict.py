"""Batch prediction over files of any size: ``zoo predict NAME --input FILE|DIR|- --output FILE``.

Rows are read as a stream (text lines, CSV/TSV with a column, JSONL, Parquet), predicted in
chunks and written as they come (CSV, JSONL or Parquet: the input's row number, the label and
the probabilities, or an error), so memory does not grow with the input.  The next chunk is
read and encoded in a second thread while the model runs on this one.  A bad row (empty, not a
string, not decodable) becomes an error row and a line on standard error; ``strict`` stops at
the first.  The output is written under a temporary name beside it and renamed at the end, so a
killed run leaves no partial output.  With a Ray address, the model runs on Ray Data
(``map_batches``, the model loaded once per actor) and the driver writes the same output.
"""

from __future__ import annotations

import csv
import json
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from zoo.errors import ZooError

CHUNK = 4096
INPUT_KINDS = {".txt": "text", ".text": "text", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl",
               ".ndjson": "jsonl", ".parquet": "parquet"}
OUTPUT_KINDS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}
EMPTY, NOT_STRING, NOT_DECODABLE = "empty", "not a string", "not decodable as UTF-8"


# ------------------------------------------------------------------------------- reading
def input_kind(path: Path) -> str:
    return INPUT_KINDS.get(path.suffix.lower(), "text")


def input_files(spec: str) -> list[Path]:
    """The files of ``--input``: one file, or a folder's files (hidden ones skipped) in name
    order; ``-`` is standard input (an empty list)."""
    if spec == "-":
        return []
    p = Path(spec).expanduser()
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
        if not files:
            raise ZooError(f"zoo predict: --input {spec}: the folder holds no files")
        return files
    if not p.is_file():
        raise ZooError(f"zoo predict: --input {spec}: no such file or folder")
    return [p]


def _text(value: Any) -> tuple[str | None, str | None]:
    """(text, None) for a usable row, else (None, why not)."""
    if not isinstance(value, str):
        return None, NOT_STRING
    if any("\udc80" <= c <= "\udcff" for c in value):
        return None, NOT_DECODABLE
    if not value.strip():
        return None, EMPTY
    return value, None


class Position:
    """How much of the input has been read (characters of text inputs, rows of Parquet
    batches as a share of the file's rows), for the ETA."""

    def __init__(self) -> None:
        self.read = 0.0

    def counted(self, stream) -> Iterator[str]:
        for line in stream:
            self.read += len(line)
            yield line


def _lines(stream) -> Iterator[Any]:
    for line in stream:
        yield line[:-1] if line.endswith("\n") else line


def _table(stream, delimiter: str, column: str, where: str) -> Iterator[Any]:
    reader = csv.reader(stream, delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        return
    if column not in header:
        raise ZooError(f"zoo predict: {where}: no column {column!r} (columns: "
                       f"{', '.join(header[:20])}); choose one with --column")
    i = header.index(column)
    for row in reader:
        yield row[i] if i < len(row) else None


def _jsonl(stream, column: str) -> Iterator[Any]:
    for line in stream:
        if not line.strip():
            yield None
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            yield None
            continue
        yield obj.get(column) if isinstance(obj, dict) else obj


def _parquet(path: Path, column: str, where: str, pos: Position) -> Iterator[Any]:
    import pyarrow.parquet as pq

    f = pq.ParquetFile(path)
    per_row = path.stat().st_size / max(f.metadata.num_rows, 1)
    if column not in f.schema_arrow.names:
        raise ZooError(f"zoo predict: {where}: no column {column!r} (columns: "
                       f"{', '.join(f.schema_arrow.names[:20])}); choose one with --column")
    for batch in f.iter_batches(batch_size=CHUNK, columns=[column]):
        pos.read += per_row * batch.num_rows
        yield from batch.column(0).to_pylist()


def read_values(path: Path | None, column: str, stdin=None,
                pos: Position | None = None) -> Iterator[Any]:
    """The raw values of one input (None: standard input, as text lines)."""
    pos = pos or Position()
    if path is None:
        stream = stdin if stdin is not None else sys.stdin
        if hasattr(stream, "buffer"):
            import io

            stream = io.TextIOWrapper(stream.buffer, encoding="utf-8", errors="surrogateescape")
        yield from _lines(stream)
        return
    kind = input_kind(path)
    if kind == "parquet":
        yield from _parquet(path, column, str(path), pos)
        return
    with open(path, encoding="utf-8", errors="surrogateescape", newline="" if kind in
              ("csv", "tsv") else None) as raw:
        stream = pos.counted(raw)
        if kind == "text":
            yield from _lines(stream)
        elif kind in ("csv", "tsv"):
            yield from _table(stream, "," if kind == "csv" else "\t", column, str(path))
        else:
            yield from _jsonl(stream, column)


def read_rows(files: list[Path], column: str, stdin=None,
              pos: Position | None = None) -> Iterator[tuple[int, str | None, str | None]]:
    """(row number from 1, text or None, error or None) over every input in order."""
    row = 0
    for path in files or [None]:
        for value in read_values(path, column, stdin, pos):
            row += 1
            text, error = _text(value)
            yield row, text, error


def chunks(rows: Iterator, size: int) -> Iterator[list]:
    chunk = []
    for r in rows:
        chunk.append(r)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# ------------------------------------------------------------------------------- writing
def output_kind(path: Path) -> str:
    kind = OUTPUT_KINDS.get(path.suffix.lower())
    if kind is None:
        raise ZooError(f"zoo predict: --output {path}: expected a .csv, .jsonl or .parquet file")
    return kind


def result_columns(result: dict[str, Any]) -> dict[str, Any]:
    """A prediction as flat columns: label and probability_<label>, else prediction."""
    if isinstance(result, dict) and "label" in result:
        return {"label": result["label"], **{f"probability_{k}": v for k, v in
                                            result.get("probabilities", {}).items()}}
    return {"prediction": result if isinstance(result, str) else json.dumps(result)}


class Writer:
    """Rows (dicts with ``row``, the result's columns and ``error``) to a CSV, JSONL or
    Parquet file under a temporary name, renamed to ``path`` by :meth:`close`; or, for no
    path, tab-separated lines on standard output (``zoo predict``'s console form)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.kind = output_kind(path) if path else "console"
        self.columns: list[str] | None = None
        self._f = self._csv = self._pq = None
        self.tmp = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")

    def _open(self, first: dict[str, Any]) -> None:
        self.columns = ["row", *[k for k in first if k not in ("row", "error", "text")], "error"]
        if self.kind == "csv":
            self._f = open(self.tmp, "w", newline="", encoding="utf-8")
            self._csv = csv.writer(self._f)
            self._csv.writerow(self.columns)
        elif self.kind == "jsonl":
            self._f = open(self.tmp, "w", encoding="utf-8")

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if self.columns is None:
            good = next((r for r in rows if r.get("error") is None), None)
            if good is None and self.kind == "parquet":
                self._pending = getattr(self, "_pending", []) + rows  # columns not known yet
                return
            self._open(good or rows[0])
            pending, self._pending = getattr(self, "_pending", []), []
            rows = pending + rows
        if self.kind == "console":
            for r in rows:
                if r.get("error"):
                    shown = (r.get("text") or "").encode("utf-8", "replace").decode("utf-8")
                    print(f"error\t{r['error']}\t{shown}")
                elif "label" in r:
                    probs = "  ".join(f"{k[len('probability_'):]}={v:.3f}" for k, v in r.items()
                                      if k.startswith("probability_"))
                    print(f"{r['label']}\t{probs}\t{r.get('text', '')}")
                else:
                    print(f"{r.get('prediction')}\t{r.get('text', '')}")
        elif self.kind == "csv":
            self._csv.writerows([[r.get(c) for c in self.columns] for r in rows])
        elif self.kind == "jsonl":
            for r in rows:
                out = {"row": r["row"]}
                if "label" in r:
                    out["label"] = r["label"]
                    out["probabilities"] = {k[len("probability_"):]: r[k] for k in self.columns
                                            if k.startswith("probability_") and k in r}
                elif "prediction" in r:
                    out["prediction"] = r["prediction"]
                out["error"] = r.get("error")
                self._f.write(json.dumps(out) + "\n")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.table({c: [r.get(c) for r in rows] for c in self.columns},
                             schema=self._schema())
            if self._pq is None:
                self._pq = pq.ParquetWriter(self.tmp, table.schema)
            self._pq.write_table(table)

    def _schema(self):
        import pyarrow as pa

        types = {"row": pa.int64(), "label": pa.string(), "prediction": pa.string(),
                 "error": pa.string()}
        return pa.schema([(c, types.get(c, pa.float64())) for c in self.columns])

    def close(self) -> None:
        """Finish the file and put it in place."""
        if self.path is None:
            sys.stdout.flush()
            return
        if self.columns is None:   # nothing but errors, or nothing: columns of errors
            self.columns = ["row", "error"]
            if self.kind != "parquet":
                self._open({"row": 0, "error": None})
            rows, self._pending = getattr(self, "_pending", []), []
            self.write(rows)
        if self.kind == "parquet" and self._pq is None:
            import pyarrow.parquet as pq

            pq.write_table(self._schema().empty_table(), self.tmp)
        if self._pq is not None:
            self._pq.close()
        if self._f is not None:
            self._f.close()
        os.replace(self.tmp, self.path)
        self.tmp = None

    def abort(self) -> None:
        for h in (self._pq, self._f):
            try:
                if h is not None:
                    h.close()
            except Exception:
                pass
        if self.tmp is not None:
            try:
                os.unlink(self.tmp)
            except OSError:
                pass


# ------------------------------------------------------------------------------ progress
class Progress:
    """A one-line progress bar on a terminal (rows/s, ETA from the bytes of the input read),
    and the summary at the end."""

    def __init__(self, files: list[Path], stream=None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.total_bytes = sum(f.stat().st_size for f in files) if files else 0
        self.start = time.monotonic()
        self.rows = self.errors = 0
        self._last = 0.0

    def update(self, rows: int, errors: int, fraction: float | None = None) -> None:
        self.rows += rows
        self.errors += errors
        now = time.monotonic()
        if not self.tty or now - self._last < 0.5:
            return
        self._last = now
        rate = self.rows / max(now - self.start, 1e-9)
        eta = ""
        if fraction:
            fraction = min(fraction, 1.0)
            left = (now - self.start) * (1 - fraction) / fraction
            eta = f"  ETA {int(left // 60)}:{int(left % 60):02d}"
            bar = "#" * int(20 * fraction)
            eta = f"  [{bar:<20}] {100 * fraction:3.0f}%" + eta
        self.stream.write(f"\r{self.rows:,} rows  {rate:,.0f} rows/s{eta}   ")
        self.stream.flush()

    def summary(self, output: Path | None) -> str:
        took = time.monotonic() - self.start
        if self.tty:
            self.stream.write("\r" + " " * 80 + "\r")
        where = f" -> {output}" if output else ""
        return (f"zoo predict: {self.rows:,} rows ({self.errors:,} bad) in {took:.1f} s, "
                f"{self.rows / max(took, 1e-9):,.0f} rows/s{where}")


# ---------------------------------------------------------------------------- predicting
class _Batcher:
    """Turns chunks of rows into results, with the model's encode/predict halves when it has
    them (sentiment), else its ``predict`` on the chunk's good texts."""

    def __init__(self, model) -> None:
        self.model = model
        self.split = hasattr(model, "encode") and hasattr(model, "predict_encoded")

    def prepare(self, chunk: list) -> tuple[list, Any]:
        good = [text for _, text, error in chunk if error is None]
        if self.split and good:
            return chunk, self.model.encode(good)
        return chunk, good

    def run(self, chunk: list, prepared: Any, keep_text: bool) -> list[dict[str, Any]]:
        if self.split:
            results = self.model.predict_encoded(prepared) if len(prepared) else []
        else:
            results = self._each(prepared) if prepared else []
        out, k = [], 0
        for row, text, error in chunk:
            r: dict[str, Any] = {"row": row}
            if keep_text:
                r["text"] = text
            if error is None:
                result, k = results[k], k + 1
                if isinstance(result, ZooError):   # the model refused this row's value
                    r["error"] = str(result)
                else:
                    r.update(result_columns(result))
                    r["error"] = None
            else:
                r["error"] = error
            out.append(r)
        return out

    def _each(self, texts: list) -> list:
        """The model's results for ``texts``; when the model refuses a value (an echo series
        that is not class ids, say), the chunk is predicted row by row and each refused row's
        result is its error, so one bad row does not stop the rest."""
        try:
            return self.model.predict(texts)
        except ZooError:
            out: list = []
            for text in texts:
                try:
                    out.extend(self.model.predict([text]))
                except ZooError as exc:
                    out.append(exc)
            return out


def _ahead(items: Iterator, fn, depth: int = 2) -> Iterator:
    """``fn(item)`` for each item, computed in a second thread at most ``depth`` ahead."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work():
        try:
            for item in items:
                if stop.is_set():
                    return
                q.put(("ok", fn(item)))
            q.put(("ok", done))
        except BaseException as exc:  # noqa: BLE001  (re-raised in the caller)
            q.put(("error", exc))

    t = threading.Thread(target=work, daemon=True)
    t.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "error":
                raise value
            if value is done:
                return
            yield value
    finally:
        stop.set()


def predict_rows(model, rows: Iterator, writer: Writer, *, strict: bool = False,
                 chunk_size: int = CHUNK, progress: Progress | None = None,
                 keep_text: bool = False, say=None, pos: Position | None = None) -> tuple[int, int]:
    """Predict ``rows`` ((row, text, error) tuples) into ``writer``; returns (rows, bad rows)."""
    say = say or (lambda msg: print(msg, file=sys.stderr))
    batcher = _Batcher(model)
    total = bad = 0

    def checked(chunk):
        for row, _, error in chunk:
            if error is not None and strict:
                raise ZooError(f"zoo predict: row {row}: {error} (--strict)")
        return batcher.prepare(chunk)

    for chunk, prepared in _ahead(chunks(rows, chunk_size), checked):
        out = batcher.run(chunk, prepared, keep_text)
        for r in out:
            if r["error"] is not None:
                if strict:
                    raise ZooError(f"zoo predict: row {r['row']}: {r['error']} (--strict)")
                bad += 1
                if bad <= 20:
                    say(f"zoo predict: row {r['row']}: {r['error']}")
                elif bad == 21:
                    say("zoo predict: more bad rows: see the error column")
        writer.write(out)
        total += len(out)
        if progress is not None:
            progress.update(len(out), sum(r["error"] is not None for r in out),
                            pos.read / progress.total_bytes if pos and progress.total_bytes
                            else None)
    return total, bad


def predict_file(model, spec: str, output: Path | None, *, column: str = "text",
                 strict: bool = False, chunk_size: int = CHUNK, stdin=None, say=None,
                 address: str | None = None, model_spec: str | None = None) -> str:
    """``zoo predict --input``: returns the summary line."""
    files = input_files(spec)
    if output is not None:
        output_kind(output)
    writer = Writer(output)
    progress = Progress(files)
    try:
        if address is not None:
            total, bad = predict_on_ray(model_spec, files, column, writer, address=address,
                                        strict=strict, chunk_size=chunk_size, progress=progress,
                                        keep_text=output is None, say=say)
        else:
            pos = Position()
            total, bad = predict_rows(model, read_rows(files, column, stdin, pos), writer,
                                      strict=strict, chunk_size=chunk_size, progress=progress,
                                      keep_text=output is None, say=say, pos=pos)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return progress.summary(output)


def predict_texts(model, texts: list, *, strict: bool = False, say=None) -> int:
    """``zoo predict NAME TEXT...`` (or ``-``): one console line per text; returns bad rows."""
    rows = []
    for i, t in enumerate(texts, 1):
        text, error = _text(t)
        rows.append((i, text if error is None else t, error))
    writer = Writer(None)
    _, bad = predict_rows(model, iter(rows), writer, strict=strict, keep_text=True, say=say)
    writer.close()
    return bad



# ----------------------------------------------------------------------------------- Ray
class RayPredictor:
    """A Ray Data actor: loads the model once, then turns batches of raw values into one JSON
    result per row (a stable schema: every batch has the same single column)."""

    def __init__(self, spec: str, store: str, column: str) -> None:
        from zoo.loading import load

        self.batcher = _Batcher(load(spec, store))
        self.column = column

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        chunk = []
        for i, value in enumerate(batch[self.column]):
            value = value.item() if hasattr(value, "item") else value
            chunk.append((i, *_text(value)))
        out = self.batcher.run(*self.batcher.prepare(chunk), keep_text=False)
        return {"result": np.array([json.dumps({k: v for k, v in r.items() if k != "row"})
                                    for r in out], dtype=object)}


def _ray_dataset(files: list[Path], column: str):
    import ray.data

    kinds = {input_kind(f) for f in files}
    if len(kinds) > 1:
        raise ZooError(f"zoo predict: --address: the input files mix formats "
                       f"({', '.join(sorted(kinds))}); Ray reads one format at a time")
    kind, paths = kinds.pop(), [str(f) for f in files]
    if kind == "text":
        return ray.data.read_text(paths, drop_empty_lines=False), "text"
    if kind in ("csv", "tsv"):
        from pyarrow import csv as pacsv

        ds = ray.data.read_csv(paths, parse_options=pacsv.ParseOptions(
            delimiter="," if kind == "csv" else "\t"),
            convert_options=pacsv.ConvertOptions(column_types={column: "string"}))
    elif kind == "jsonl":
        ds = ray.data.read_json(paths, lines=True)
    else:
        ds = ray.data.read_parquet(paths, columns=[column])
    return ds, column


def predict_on_ray(model_spec: str, files: list[Path], column: str, writer: Writer, *,
                   address: str, strict: bool = False, chunk_size: int = CHUNK,
                   progress: Progress | None = None, keep_text: bool = False,
                   say=None) -> tuple[int, int]:
    """The rows of ``files`` predicted on Ray Data (``map_batches`` over actors that each load
    the model once), in input order, into ``writer``; returns (rows, bad rows)."""
    say = say or (lambda msg: print(msg, file=sys.stderr))
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ZooError("zoo predict --address needs Ray Data, which is not installed: "
                       "pip install 'zoo[sweep]'") from None
    if not files:
        raise ZooError("zoo predict: --address needs --input FILE or DIR (not standard input)")
    from zoo import ray_cluster, tracking
    from zoo import store as stores

    ray_cluster.check_address(address, "zoo predict: --address")
    s = stores.resolve(None)
    if address != "local" and tracking.is_local_store(s.uri):
        raise ZooError(f"zoo predict: --address {address}: the Ray workers load the model from "
                       f"the store, and {s.uri} is a local file; use a tracking server "
                       "(MLFLOW_TRACKING_URI=http://HOST:PORT)")
    from zoo.loading import load

    load(model_spec)   # a model that does not exist is one line here, not a worker's error
    started = not ray.is_initialized()
    if started:
        ray_cluster.init(address)
    import logging

    for name in ("ray.data", "ray"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        ds, col = _ray_dataset(files, column)
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        out = ds.map_batches(RayPredictor, fn_constructor_args=(model_spec, s.uri, col),
                             batch_size=chunk_size, batch_format="numpy",
                             concurrency=(1, max(1, int(ray.cluster_resources().get("CPU", 1)))))
        total = bad = 0
        for batch in out.iter_batches(batch_size=chunk_size, batch_format="numpy"):
            rows = []
            for value in batch["result"]:
                total += 1
                r = {"row": total, **json.loads(value)}
                if r.get("error") is not None:
                    if strict:
                        raise ZooError(f"zoo predict: row {total}: {r['error']} (--strict)")
                    bad += 1
                    if bad <= 20:
                        say(f"zoo predict: row {total}: {r['error']}")
                rows.append(r)
            writer.write(rows)
            if progress is not None:
                progress.update(len(rows), sum(r["error"] is not None for r in rows))
        return total, bad
    finally:
        if started:
            ray.shutdown()
