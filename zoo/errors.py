"""Errors that zoo reports to the user as one line (exit status 2), never as a stack trace."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ZooError(Exception):
    """A mistake the user made: bad name, bad recipe, bad file. Shown as one line, exit 2."""

    exit_code = 2


class RunFailed(Exception):
    """A failure during a run (not the user's input). Exit status 1, MLflow run marked FAILED."""

    exit_code = 1


def did_you_mean(word: str, choices: Iterable[str], n: int = 3) -> str:
    """' (did you mean: a, b?)' for the closest choices, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=n, cutoff=0.5)
    return f" (did you mean: {', '.join(close)}?)" if close else ""
