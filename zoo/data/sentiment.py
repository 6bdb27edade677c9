"""Labelled texts for classification.

* :func:`load_rotten_tomatoes`: the 10,605 Rotten Tomatoes review sentences that Hutto and
  Gilbert (ICWSM 2014) had rated from -4 to +4 by people, shipped in the pinned
  ``vaderSentiment==3.3.2`` source distribution.
* :func:`load_labelled`: the user's own data as a CSV/TSV file, one folder per label (the
  aclImdb layout) or one file per label with one example a line (the rt-polarity layout).
* :func:`stratified_split`: seeded train / validation / test split that keeps the label mix.
"""

from __future__ import annotations

import csv
import html
import io
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from zoo.data.fetch import cache_dir, extract_members, fetch_sdist
from zoo.data.text import check_encoding, check_fractions, decode_bytes
from zoo.errors import ZooError

PACKAGE = ("vaderSentiment", "3.3.2", "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9")
APPROX_MB = 2.5
INNER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
SNIPPETS = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
FORMATS = ("auto", "csv", "tsv", "folders", "files")
SKIPPED_FOLDERS = frozenset({"unsup"})  # aclImdb's unlabelled reviews
LINE_FILE_SUFFIXES = frozenset({"", ".txt", ".text"})  # other suffixes name the label

Examples = list[tuple[str, str]]


def load_rotten_tomatoes() -> Examples:
    """``(sentence, "positive" | "negative")`` pairs: positive when the mean human rating is
    above 0, negative below; the 37 sentences rated exactly 0 are left out (10,568 remain)."""
    archive = fetch_sdist(*PACKAGE, approx_mb=APPROX_MB)
    root = cache_dir()
    inner = extract_members(archive, INNER, root / "vaderSentiment-3.3.2-resources")[0]
    path = extract_members(inner, SNIPPETS, root / "vaderSentiment-3.3.2-hutto_ICWSM_2014")[0]
    text = decode_bytes(path.read_bytes(), path, "utf-8")
    out: Examples = []
    for n, line in enumerate(text.replace("\r\n", "\n").split("\n"), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        try:
            rating = float(parts[1])
            sentence = _clean(parts[2])
        except (IndexError, ValueError):
            raise ZooError(f"{path}: line {n}: expected id<TAB>rating<TAB>sentence") from None
        if rating != 0 and sentence:
            out.append((sentence, "positive" if rating > 0 else "negative"))
    if not out:
        raise ZooError(f"{path}: no rated sentences found")
    return out


def _clean(sentence: str) -> str:
    # the file writes a double quote as two single quotes, and & as &amp;
    return " ".join(html.unescape(sentence.replace("''", '"')).split())


def _read(path: Path, encoding: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ZooError(f"{path}: cannot read the file ({exc.strerror})") from None
    if b"\x00" in data[: 1 << 16] and not check_encoding(encoding).startswith(("utf-16", "utf-32")):
        raise ZooError(f"{path}: looks like a binary file (it holds NUL bytes), expected text")
    return decode_bytes(data, path, encoding).replace("\r\n", "\n").replace("\r", "\n")


def _table(path: Path, delimiter: str, encoding: str, text_column: str, label_column: str) -> Examples:
    reader = csv.reader(io.StringIO(_read(path, encoding), newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise ZooError(f"{path}: the file is empty (expected a header row naming the columns)") from None
    except csv.Error as exc:
        raise ZooError(f"{path}: line 1: {exc}") from None
    columns = [c.strip() for c in header]
    where = {}
    for key, col in (("data.text_column", text_column), ("data.label_column", label_column)):
        if col not in columns:
            listed = ", ".join(repr(c) for c in columns) or "none"
            raise ZooError(f"{path}: {key}: no column {col!r} (columns: {listed})")
        where[key] = columns.index(col)
    ti, li = where["data.text_column"], where["data.label_column"]
    out: Examples = []
    last = reader.line_num
    while True:
        start = last + 1  # the line the record starts on (a quoted field may span lines)
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise ZooError(f"{path}: line {reader.line_num}: {exc}") from None
        last = reader.line_num
        if not row or not any(cell.strip() for cell in row):
            continue  # a blank line
        if len(row) <= max(ti, li):
            raise ZooError(f"{path}: line {start}: {len(row)} field(s), but the header names "
                           f"{len(columns)}; is data.format right ({'tsv' if delimiter == ',' else 'csv'}?)")
        text, label = row[ti].strip(), row[li].strip()
        if not text:
            raise ZooError(f"{path}: line {start}: empty text in column {text_column!r}")
        if not label:
            raise ZooError(f"{path}: line {start}: empty label in column {label_column!r}")
        out.append((text, label))
    return out


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _folders(path: Path, encoding: str) -> Examples:
    out: Examples = []
    for label_dir in _visible(path):
        if not label_dir.is_dir() or label_dir.name in SKIPPED_FOLDERS:
            continue
        for f in _visible(label_dir):
            if not f.is_file():
                continue
            text = " ".join(_read(f, encoding).split())
            if not text:
                raise ZooError(f"{f}: empty text (one example per file)")
            out.append((text, label_dir.name))
    return out


def label_of(path: Path) -> str:
    """The label a line file stands for: ``pos.txt`` -> ``pos``, ``rt-polarity.pos`` -> ``pos``."""
    return path.stem if path.suffix.lower() in LINE_FILE_SUFFIXES else path.suffix[1:]


def _files(paths: Sequence[Path], encoding: str) -> Examples:
    out: Examples = []
    for f in paths:
        if not f.exists():
            raise ZooError(f"{f}: file not found")
        if f.is_dir():
            raise ZooError(f"{f}: is a folder; data.format files expects one text file per label")
        label = label_of(f)
        lines = _read(f, encoding).split("\n")
        while lines and not lines[-1].strip():
            lines.pop()  # blank lines at the end are not examples
        if not lines:
            raise ZooError(f"{f}: file is empty (expected one example per line)")
        for n, line in enumerate(lines, 1):
            if not line.strip():
                raise ZooError(f"{f}: line {n}: empty text (one example per line)")
            out.append((" ".join(line.split()), label))
    return out


def _infer_format(path: Path) -> str:
    if path.is_file():
        fmt = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv"}.get(path.suffix.lower())
        if fmt is None:
            raise ZooError(f"{path}: cannot tell the format from the file name (expected .csv or "
                           f".tsv); set data.format to one of {', '.join(FORMATS[1:])}")
        return fmt
    entries = _visible(path)
    if any(p.is_dir() and p.name not in SKIPPED_FOLDERS for p in entries):
        return "folders"
    if any(p.is_file() for p in entries):
        return "files"
    raise ZooError(f"{path}: the folder is empty (expected one sub-folder or one file per label)")


def load_labelled(path: str | Path | Sequence[str | Path], fmt: str = "auto", *,
                  encoding: str = "utf-8", text_column: str = "text",
                  label_column: str = "label") -> Examples:
    """``(text, label)`` pairs from the user's data; labels are the strings found there.

    ``fmt``: ``csv`` / ``tsv`` (a header row; the columns ``text_column`` and
    ``label_column``), ``folders`` (``path/<label>/<one example per file>``, as aclImdb's
    ``train/pos/*.txt``; a folder ``unsup`` is skipped), ``files`` (a folder of files or a list
    of them, one per label, one example per line; the label is the file name without
    ``.txt``, or the suffix of any other name: ``rt-polarity.pos`` -> ``pos``), or ``auto``
    (``.csv``/``.tsv`` by suffix, a folder with sub-folders as ``folders``, otherwise
    ``files``).  Mistakes are one-line :class:`ZooError` naming the file (and line).
    """
    if fmt not in FORMATS:
        raise ZooError(f"data.format: {fmt!r} is not one of {', '.join(FORMATS)}")
    check_encoding(encoding)
    if isinstance(path, (list, tuple)):
        paths = [Path(p) for p in path]
        if not paths:
            raise ZooError("data.path: an empty list of files")
        if fmt not in ("auto", "files"):
            raise ZooError(f"data.path: a list of files needs data.format files, not {fmt}")
        fmt, where = "files", ", ".join(str(p) for p in paths)
    else:
        paths = [Path(path)]
        where = str(paths[0])
        if not paths[0].exists():
            raise ZooError(f"{where}: file or folder not found")
        if fmt == "auto":
            fmt = _infer_format(paths[0])
    p = paths[0]
    if fmt in ("csv", "tsv"):
        if not p.is_file():
            raise ZooError(f"{p}: data.format {fmt} expects a file, not a folder")
        examples = _table(p, "," if fmt == "csv" else "\t", encoding, text_column, label_column)
    elif fmt == "folders":
        if not p.is_dir():
            raise ZooError(f"{p}: data.format folders expects a folder with one sub-folder per label")
        examples = _folders(p, encoding)
    else:
        if len(paths) == 1 and p.is_dir():
            paths = [f for f in _visible(p) if f.is_file()]
        examples = _files(paths, encoding)
    if not examples:
        raise ZooError(f"{where}: no examples found")
    labels = Counter(label for _, label in examples)
    if len(labels) < 2:
        raise ZooError(f"{where}: only one label ({next(iter(labels))!r}, {len(examples)} "
                       "examples); classification needs two or more")
    return examples


def _quotas(counts: dict[str, int], total: int) -> dict[str, int]:
    """Split ``total`` over the labels in proportion to ``counts`` (largest remainders)."""
    n = sum(counts.values())
    exact = {k: c * total / n for k, c in counts.items()}
    out = {k: int(v) for k, v in exact.items()}
    order = sorted(counts, key=lambda k: (-(exact[k] - out[k]), k))
    for k in order[: total - sum(out.values())]:
        out[k] += 1
    return out


def stratified_split(examples: Sequence[tuple[str, str]], val_fraction: float,
                     test_fraction: float, seed: int) -> tuple[Examples, Examples, Examples]:
    """``(train, val, test)`` with each label in the same proportion in all three (as near as
    whole examples allow), seeded and deterministic.  The test and validation sets get
    ``round(n * fraction)`` examples, at least one when the fraction is above 0, and every
    label keeps at least one training example."""
    check_fractions(val_fraction, test_fraction)
    by_label: dict[str, list[tuple[str, str]]] = {}
    for ex in examples:
        by_label.setdefault(ex[1], []).append(tuple(ex))
    counts = {k: len(v) for k, v in sorted(by_label.items())}
    n = sum(counts.values())
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    test_q = _quotas(counts, n_test)
    rest = {k: counts[k] - test_q[k] for k in counts}
    val_q = _quotas(rest, n_val) if n_val else {k: 0 for k in counts}
    short = [f"{k!r} ({c})" for k, c in counts.items() if c - test_q[k] - val_q[k] < 1]
    if short:
        raise ZooError(f"too few examples to split by label: {', '.join(short)} would have none "
                       "left to train on; add examples or lower data.val_fraction / "
                       "data.test_fraction")
    rng = random.Random(seed)
    train: Examples = []
    val: Examples = []
    test: Examples = []
    for label in counts:
        items = by_label[label]
        rng.shuffle(items)
        t, v = test_q[label], val_q[label]
        test += items[:t]
        val += items[t:t + v]
        train += items[t + v:]
    for part in (train, val, test):
        rng.shuffle(part)
    return train, val, test
