"""Predicted aulc (``dmisearch predict``) against the aulc the paper studies measured.

For each study of the alignment and patch groups, the prediction of each kernel
architecture is set beside the measured scores in docs/findings/<group>/leaderboard.csv
(the confirmed score where there is one): the ``ntk`` triplets (what the theory predicts)
and the ``adam`` ones (finite networks: a prior, not a promise). Prints one row per
(study, model) and, per group, the Spearman rank correlations across all its rows.

    python benchmarks/bench_predict_findings.py [--pool N] [--studies alignment_fcn ...]
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch
from scipy.stats import spearmanr

from dmisearch.plugins import load_registry
from dmisearch.predict import predict
from dmisearch.study_file import load_study

ROOT = Path(__file__).resolve().parent.parent
GROUPS = {
    "alignment": ["alignment_fcn", "alignment_lcn", "alignment_cnn_vec", "alignment_cnn_gap"],
    "patches": ["patches_local", "patches_local_invariant", "patches_global"],
}


def measured(group: str) -> dict[tuple[str, str, str], float]:
    """(study name, model, algorithm) -> the confirmed score, else the search score."""
    out = {}
    with open(ROOT / "docs" / "findings" / group / "leaderboard.csv") as f:
        for row in csv.DictReader(f):
            score = row["confirmed_score"] or row["score"]
            if score:
                out[(row["study"], row["model"], row["algorithm"])] = float(score)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", type=int, default=None, help="default: predict's own default")
    ap.add_argument("--groups", nargs="+", default=list(GROUPS), choices=list(GROUPS))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    registry = load_registry()
    print(f"# torch {torch.__version__}, {args.threads} threads, pool {args.pool or 'default'}")
    for group in args.groups:
        meas = measured(group)
        rows = []
        for stem in GROUPS[group]:
            spec = load_study(ROOT / "studies" / "paper" / f"{stem}.toml", registry)
            start = time.monotonic()
            preds = predict(spec, pool=args.pool, kinds=["ntk"])
            seconds = time.monotonic() - start
            for p in preds:
                ntk = meas.get((spec.name, p.model, "ntk"))
                adam = meas.get((spec.name, p.model, "adam"))
                rows.append((p.aulc, ntk, adam))
                print(f"{spec.name:26s} {p.model:8s} predicted {p.aulc:7.3f} "
                      f"(ridge {p.ridge:.1e}, pool {p.pool}, modes90 {p.modes_90:4d}) "
                      f"measured ntk {ntk if ntk is None else f'{ntk:7.3f}'} "
                      f"adam {adam if adam is None else f'{adam:7.3f}'}", flush=True)
            print(f"# {spec.name}: {seconds:.0f} s", flush=True)
        for col, name in ((1, "ntk"), (2, "adam")):
            pairs = [(r[0], r[col]) for r in rows if r[col] is not None]
            rho = spearmanr([a for a, _ in pairs], [b for _, b in pairs]).statistic
            print(f"# {group}: Spearman(predicted, measured {name}) = {rho:.2f} over "
                  f"{len(pairs)} triplets", flush=True)


if __name__ == "__main__":
    main()
