"""Labelled texts for classification: the default Rotten Tomatoes sentences with human
ratings (pinned ``vaderSentiment==3.3.2`` source distribution), and the user's own files as
CSV/TSV, one folder per label, or one file per label."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Sequence

from zoo.data.fetch import cache_dir, extract_members, fetch_sdist
from zoo.data.text import decode_bytes
from zoo.errors import ZooError

PACKAGE = ("vaderSentiment", "3.3.2", "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9")
FORMATS = ("auto", "csv", "tsv", "folders", "files")

Examples = list[tuple[str, str]]


def load_rotten_tomatoes() -> Examples:
    """10,605 movie-review sentences rated −4..+4: positive above 0, negative below, 0 dropped."""
    archive = fetch_sdist(*PACKAGE)
    root = cache_dir() / "vaderSentiment-3.3.2"
    inner = extract_members(archive, "*/additional_resources/hutto_ICWSM_2014.tar.gz", root)[0]
    files = extract_members(inner, "*/movieReviewSnippets_GroundTruth.txt", root / "hutto_ICWSM_2014")
    path = files[0]
    out: Examples = []
    for n, line in enumerate(decode_bytes(path.read_bytes(), path, "utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        try:
            rating = float(parts[1])
        except (IndexError, ValueError):
            raise ZooError(f"{path}: line {n}: expected id<TAB>rating<TAB>text") from None
        if rating:
            out.append((parts[2].strip(), "positive" if rating > 0 else "negative"))
    return out


def _read(path: Path, encoding: str) -> str:
    text = decode_bytes(path.read_bytes(), path, encoding)
    return text.replace("\r\n", "\n")


def _check(examples: Examples, where: str) -> Examples:
    if not examples:
        raise ZooError(f"{where}: no examples found")
    labels = {label for _, label in examples}
    if len(labels) < 2:
        raise ZooError(f"{where}: only one label ({next(iter(labels))!r}); classification needs two or more")
    return examples


def _table(path: Path, delimiter: str, encoding: str, text_column: str, label_column: str) -> Examples:
    reader = csv.DictReader(io.StringIO(_read(path, encoding)), delimiter=delimiter)
    columns = reader.fieldnames or []
    for key, col in (("data.text_column", text_column), ("data.label_column", label_column)):
        if col not in columns:
            raise ZooError(f"{path}: {key}: no column {col!r} (columns: {', '.join(columns) or 'none'})")
    out = []
    for row in reader:
        line = reader.line_num
        text, label = (row.get(text_column) or "").strip(), (row.get(label_column) or "").strip()
        if not text:
            raise ZooError(f"{path}: line {line}: empty text")
        if not label:
            raise ZooError(f"{path}: line {line}: empty label")
        out.append((text, label))
    return out


def _folders(path: Path, encoding: str) -> Examples:
    out = []
    for label_dir in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(p for p in label_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
            text = _read(f, encoding).strip()
            if not text:
                raise ZooError(f"{f}: empty text")
            out.append((text, label_dir.name))
    return out


def _files(paths: Sequence[Path], encoding: str) -> Examples:
    out = []
    for f in paths:
        label = f.name.rsplit(".", 1)[-1] if f.suffix in (".pos", ".neg") else f.stem
        for n, line in enumerate(_read(f, encoding).split("\n"), 1):
            if line.strip():
                out.append((line.strip(), label))
    return out


def load_labelled(path: str | Path, fmt: str = "auto", *, encoding: str = "utf-8",
                  text_column: str = "text", label_column: str = "label") -> Examples:
    """(text, label) pairs from the user's files; labels are the strings found in the data."""
    path = Path(path)
    if not path.exists():
        raise ZooError(f"{path}: file or folder not found")
    if fmt not in FORMATS:
        raise ZooError(f"data.format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "auto":
        if path.is_file():
            fmt = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv"}.get(path.suffix.lower(), "")
            if not fmt:
                raise ZooError(f"{path}: cannot tell the format from the name; set data.format")
        else:
            subdirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
            fmt = "folders" if subdirs else "files"
    if fmt in ("csv", "tsv"):
        if not path.is_file():
            raise ZooError(f"{path}: data.format {fmt} expects a file, got a folder")
        examples = _table(path, "," if fmt == "csv" else "\t", encoding, text_column, label_column)
    elif fmt == "folders":
        if not path.is_dir():
            raise ZooError(f"{path}: data.format folders expects a folder with one sub-folder per label")
        examples = _folders(path, encoding)
    else:
        files = [path] if path.is_file() else sorted(
            p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        examples = _files(files, encoding)
    return _check(examples, str(path))


def stratified_split(examples: Examples, val_fraction: float, test_fraction: float,
                     seed: int) -> tuple[Examples, Examples, Examples]:
    """(train, val, test), stratified by label and seeded."""
    from sklearn.model_selection import train_test_split

    labels = [label for _, label in examples]
    rest, test = train_test_split(examples, test_size=test_fraction, random_state=seed,
                                  stratify=labels)
    rel = val_fraction / (1.0 - test_fraction)
    train, val = train_test_split(rest, test_size=rel, random_state=seed,
                                  stratify=[label for _, label in rest])
    return train, val, test
