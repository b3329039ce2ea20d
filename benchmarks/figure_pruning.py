"""docs' figure of the pruning benchmark: top-3 recall against model-steps, per pruner.

Reads the pooled table that ``benchmarks/bench_pruning.py`` printed into
``benchmarks/logs/bench_pruning.log`` (no rerun) and draws one point per pruner: the share
of no pruning's model-steps it spent (x) and the share of the unpruned study's top-3
triplets whose best trial it kept (y), with the issue's 40% line.

    python benchmarks/figure_pruning.py [--log benchmarks/logs/bench_pruning.log]
        [--out docs/findings/pruning_recall_vs_steps.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HEADER = "arm                 recall"
BELOW = {"curve t=0.2", "curve t=0.5", "curve k=1"}


def pooled(log: Path) -> list[tuple[str, float, float]]:
    """(pruner, recall, steps share) from the log's pooled table."""
    lines = log.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(HEADER)) + 1
    rows = []
    for line in lines[start:]:
        if not line.strip():
            break
        parts = line.split()
        # the name may hold spaces; the last six fields are numbers
        name, nums = " ".join(parts[:-6]), [float(v) for v in parts[-6:]]
        rows.append((name, nums[0], nums[4]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log", type=Path, default=ROOT / "benchmarks/logs/bench_pruning.log")
    ap.add_argument("--out", type=Path,
                    default=ROOT / "docs/findings/pruning_recall_vs_steps.png")
    args = ap.parse_args()
    rows = pooled(args.log)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, recall, steps in rows:
        curve = name.startswith("curve")
        ax.scatter(steps, recall, s=50 if curve else 30, marker="o" if curve else "s",
                   color="C3" if curve else ("C2" if name.startswith("oracle") else "C0"))
        below = name in BELOW  # labels that would overlap a neighbour's
        ax.annotate(name, (steps, recall), textcoords="offset points",
                    xytext=(5, -10 if below else 3), fontsize=7)
    ax.axvline(0.4, color="grey", ls=":", lw=1)
    ax.text(0.405, 0.05, "40% of no pruning's steps", fontsize=7, color="grey")
    ax.set_xlabel("model-steps spent (share of no pruning)")
    ax.set_ylabel("top-3 recall (share of the unpruned top-3 kept)")
    ax.set_xlim(0.15, 1.05)
    ax.set_ylim(0, 1.05)
    ax.set_title("Pruners replayed on the same stored curves (8 studies x 6 orders)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out} ({len(rows)} pruners)")


if __name__ == "__main__":
    main()
