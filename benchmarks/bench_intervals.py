"""Coverage and false-positive rates of dmisearch's intervals, by simulation.

For each seed count users run (3, 5, 8, 16) and each noise model, many trials are simulated
with a known true score (``dmisearch.simulate``); the table gives the share of 95%
intervals that hold it, for dmisearch's interval (jackknife over seeds + Student t,
``dmisearch.stats``) beside scipy's BCa and percentile bootstraps over seeds (what
dmisearch used before). A second table gives how often two *equal* triplets are called
different (paired on shared seeds, and unpaired).

Noise models: ``lognormal``, ``t3`` (heavy tails) and ``bad_seeds`` (one seed in ten 4x
worse) from ``dmisearch.simulate``; and ``stored``: real curves, resampling the seeds of
the 32-seed trials stored in studies/paper/results.log (the axes studies), whose 32-seed
mean is then the truth.

    python benchmarks/bench_intervals.py                 # the RESULTS.md tables (~5 min)
    python benchmarks/bench_intervals.py --reps 500 --fp-reps 2000   # a quick look
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import stats as st

from dmisearch import simulate, stats

ROOT = Path(__file__).resolve().parents[1]
STORED = ROOT / "studies" / "paper" / "results.log"


def _aulc_rows(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """aulc of seed-mean curves; ``x`` (sizes, ..., seeds) as scipy.stats.bootstrap
    passes a resampled sample."""
    mean = np.moveaxis(x.mean(axis=axis), 0, -1)
    y = np.log10(np.maximum(mean, 1e-300) / simulate.BASELINE)
    lx = np.log10(simulate.SIZES)
    return ((y[..., 1:] + y[..., :-1]) / 2 * np.diff(lx)).sum(-1) / (lx[-1] - lx[0])


def bootstrap(err: np.ndarray, method: str, rng: np.random.Generator) -> tuple[float, float]:
    """scipy's bootstrap interval over the seeds (columns) of ``err``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = st.bootstrap((err,), _aulc_rows, axis=-1, vectorized=True, method=method,
                           n_resamples=999, rng=rng, confidence_level=0.95)
    return res.confidence_interval.low, res.confidence_interval.high


def stored_populations() -> list[tuple[np.ndarray, np.ndarray, float]]:
    """(sizes, errors[size, seed], baseline) of every stored trial with 32 seeds."""
    import optuna

    from dmisearch.evidence import curve_matrix
    from dmisearch.storage import open_storage

    storage = open_storage(f"journal:{STORED}")
    out = []
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
            sizes, seeds, err = curve_matrix(t.user_attrs)
            if len(seeds) >= 32 and np.all(np.isfinite(err)):
                out.append((sizes, err, float(t.user_attrs["baseline_error"])))
    return out


def coverage_row(model: str, seeds: int, reps: int, boot_reps: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    row: dict[str, float] = {}
    if model == "stored":
        pops = stored_populations()
        hits = {"jackknife-t": 0}
        for r in range(reps):
            sizes, err, base = pops[r % len(pops)]
            from dmisearch.metrics import aulc

            truth = aulc(sizes, err.mean(1), base, 1e-300)
            sample = err[:, rng.integers(0, err.shape[1], seeds)]
            iv = stats.interval(sample, lambda e, n=sizes, b=base: aulc(n, e.mean(1), b, 1e-300))
            hits["jackknife-t"] += iv.low <= truth <= iv.high
        return {k: v / reps for k, v in hits.items()}
    m = simulate.MODELS[model]
    row["jackknife-t"] = simulate.coverage(m, seeds, reps, rng)
    truth = m.true_score()
    for method in ("BCa", "percentile"):
        hits = 0
        for err in m.draw(seeds, boot_reps, rng):
            lo, hi = bootstrap(err, method, rng)
            hits += lo <= truth <= hi
        row[method] = hits / boot_reps
    return row


def other_scores_row(model: str, seeds: int, reps: int, seed: int) -> dict[str, float]:
    """Coverage for final_error (interval on the log scale, as dmisearch computes it) and
    for n_to_target (the same jackknife-t on log n; dmisearch gives no interval for it)."""
    from dmisearch.metrics import n_to_target

    m = simulate.MODELS[model]
    expected = m.expected_curve()
    target = float(expected[2] * 1.1)  # crossed between the 2nd and 3rd sizes
    true_final = float(expected[-1])
    true_n = n_to_target(simulate.SIZES, expected, target, 1e-300)[0]
    hits = {"final_error": 0, "n_to_target": 0}
    for err in m.draw(seeds, reps, np.random.default_rng(seed)):
        iv = stats.interval(err, lambda e: float(e.mean(1)[-1]), log=True)
        hits["final_error"] += iv.low <= true_final <= iv.high
        iv = stats.interval(err, lambda e: math.log(
            n_to_target(simulate.SIZES, e.mean(1), target, 1e-300)[0]))
        hits["n_to_target"] += iv.low <= math.log(true_n) <= iv.high
    return {k: v / reps for k, v in hits.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=4000, help="simulated trials per cell")
    parser.add_argument("--fp-reps", type=int, default=20000,
                        help="simulated pairs per false-positive cell")
    parser.add_argument("--boot-reps", type=int, default=1000,
                        help="simulated trials per cell for the (slower) bootstraps")
    parser.add_argument("--seeds", default="3,5,8,16")
    args = parser.parse_args(argv)
    counts = [int(s) for s in args.seeds.split(",")]
    print(f"# {platform.processor() or platform.machine()}, python {sys.version.split()[0]}, "
          f"numpy {np.__version__}, scipy {__import__('scipy').__version__}")
    print(f"# coverage of 95% intervals; {args.reps} trials per jackknife-t cell "
          f"(binomial SE {math.sqrt(0.95 * 0.05 / args.reps):.3f}), {args.boot_reps} per "
          "bootstrap cell")
    print("| noise | seeds | jackknife-t (dmisearch) | BCa (scipy) | percentile |")
    print("|---|---:|---:|---:|---:|")
    t0 = time.monotonic()
    for model in ("lognormal", "t3", "bad_seeds", "stored"):
        for n in counts:
            row = coverage_row(model, n, args.reps, args.boot_reps, seed=1000 * n + len(model))
            cells = [f"{row[k]:.3f}" if k in row else "-" for k in
                     ("jackknife-t", "BCa", "percentile")]
            print(f"| {model} | {n} | {' | '.join(cells)} |", flush=True)
    print(f"\n# false positives: equal triplets called different at 95%; {args.fp_reps} pairs "
          f"per cell (binomial SE {math.sqrt(0.05 * 0.95 / args.fp_reps):.4f})")
    print("| noise | seeds | paired (same seeds) | unpaired |")
    print("|---|---:|---:|---:|")
    for model in ("lognormal", "t3"):
        for n in counts:
            rng = np.random.default_rng(7 * n + len(model))
            m = simulate.MODELS[model]
            paired = simulate.false_positive_rate(m, n, args.fp_reps, rng, paired=True)
            unpaired = simulate.false_positive_rate(m, n, args.fp_reps, rng, paired=False)
            print(f"| {model} | {n} | {paired:.4f} | {unpaired:.4f} |", flush=True)
    print(f"\n# other scores: coverage of 95% jackknife-t intervals; {args.reps} trials")
    print("| noise | seeds | final_error (log scale) | n_to_target (log n) |")
    print("|---|---:|---:|---:|")
    for model in ("lognormal", "t3"):
        for n in counts:
            row = other_scores_row(model, n, args.reps, seed=31 * n + len(model))
            print(f"| {model} | {n} | {row['final_error']:.3f} | {row['n_to_target']:.3f} |",
                  flush=True)
    print(f"\n# {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
