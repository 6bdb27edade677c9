"""Plots of the committed benchmark results, for the docs' Benchmarks page.

Reads the summary table of ``bench/results/vs_torch.txt`` (written by ``bench/bench_vs_torch.py``)
and writes ``docs/img/vs_torch.png``: zoo's training speed over PyTorch's, per builder and size
(ratios of bests, the medians' ratio as a dot).  Run it after a new benchmark run:

    python bench/plot_results.py
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROW = re.compile(r"^(small|large)\s+(\S+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s")


def read_vs_torch(path: Path) -> tuple[str, list[tuple[str, str, float, float]]]:
    """(the run's date line, [(size, builder, ratio of bests, ratio of medians)])."""
    text = path.read_text(encoding="utf-8")
    when = next((ln.lstrip("# ").strip() for ln in text.splitlines()[1:2]), "")
    rows = [(m[1], m[2], float(m[5]), float(m[6]))
            for m in map(ROW.match, text.splitlines()) if m]
    if not rows:
        raise SystemExit(f"{path}: no summary table found")
    return when, rows


def plot_vs_torch(src: Path, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    when, rows = read_vs_torch(src)
    builders = list(dict.fromkeys(b for _, b, _, _ in rows))
    sizes = list(dict.fromkeys(s for s, _, _, _ in rows))
    fig, ax = plt.subplots(figsize=(7.5, 3.8), dpi=110)
    width = 0.8 / len(sizes)
    for i, size in enumerate(sizes):
        got = {b: (best, med) for s, b, best, med in rows if s == size}
        xs = [k + (i - (len(sizes) - 1) / 2) * width for k in range(len(builders))]
        ax.bar(xs, [got[b][0] for b in builders], width * 0.9, label=f"{size}: ratio of bests")
        ax.plot(xs, [got[b][1] for b in builders], "k.", markersize=8)
    ax.plot([], [], "k.", label="ratio of medians")
    ax.axhline(1.0, color="grey", linewidth=1, linestyle="--")
    ax.set_xticks(range(len(builders)), builders)
    ax.set_ylabel("zoo / PyTorch training chars/s")
    ax.set_title(f"zoo against PyTorch 2.13 on a 2-core CPU ({when.split(',')[0]})", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=ROOT / "bench/results/vs_torch.txt")
    p.add_argument("--out", type=Path, default=ROOT / "docs/img/vs_torch.png")
    args = p.parse_args()
    print(f"wrote {plot_vs_torch(args.results, args.out)}")


if __name__ == "__main__":
    main()
