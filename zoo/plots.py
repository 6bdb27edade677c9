"""Plots for runs, drawn off-screen: one way to make a figure and to save it."""

from __future__ import annotations

from pathlib import Path


def figure(*args, **kwargs):
    """``plt.subplots(*args, **kwargs)`` on the off-screen Agg backend: (figure, axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save(fig, path: Path) -> Path:
    """Lay out, write as PNG and close ``fig``; returns ``path``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
