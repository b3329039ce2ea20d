"""The symmetry probe's statistical procedure: its false-positive rate, and its power.

Level: pairs that ARE equivariant in distribution, forced onto the statistical path (an FCN
whose ``couple()`` returns None, so no exact comparison is made) are probed on many data
sets ``D`` (``--data-seed`` 0..N-1) with the default settings: the test on ``D`` at
``alpha/2``, then (when it does not reject) the witness search's pilot and its test on fresh
seeds at ``alpha/2``. Every "not equivariant" is a false positive; their rate must stay
within ``alpha`` (up to the binomial noise printed with it).

Power: ``fcn / adam`` under ``rotate`` (not equivariant) on the same data sets, with and
without the witness search: how often the probe answers "not equivariant".

    python benchmarks/bench_probe_level.py [--reps 200] [--alphas 0.01,0.1] [--jobs 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import multiprocessing
import platform
import time
from collections import Counter

import torch

from dmisearch import probe as P
from dmisearch.plugins import load_registry
from dmisearch_builtins.architectures import FCN


@dataclasses.dataclass(kw_only=True)
class FCNUncoupled(FCN):
    """``fcn`` without its coupling: the probe can only test it statistically."""

    name = "fcn_uncoupled"
    symmetries = frozenset()

    def couple(self, module, transform, input_shape):
        return None


#: (label, architecture, algorithm, transform, truly equivariant)
CASES = [
    ("fcn (uncoupled) / sgd under rotate", FCNUncoupled, "sgd", "rotate", True),
    ("fcn (uncoupled) / adam under permute", FCNUncoupled, "adam", "permute", True),
    ("fcn / adam under rotate", None, "adam", "rotate", False),
]


def one(task: tuple[int, int, float, int, bool]) -> tuple[int, int, float, bool, str, float]:
    """Probe case ``case`` on data seed ``seed``: (case, seed, alpha, witness, verdict, s)."""
    case, seed, alpha, seeds, witness = task
    torch.set_num_threads(1)
    reg = load_registry()
    _, arch, algo, group, _ = CASES[case]
    model = (P.instantiate(arch, {}, "architecture", P.PROBE_DEFAULTS["model"]) if arch
             else P.make_model(reg, "fcn"))
    settings = P.Settings(alpha=alpha, seeds=seeds, data_seed=seed, witness=witness)
    prober = P.Prober(P.make_data(reg, None), settings)
    cell = prober.probe(model, P.make_algorithm(reg, algo), P.make_group(reg, group))
    return case, seed, alpha, witness, cell.verdict, cell.seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=200, help="data seeds per case and alpha")
    ap.add_argument("--power-reps", type=int, default=100,
                    help="data seeds for the power of fcn / adam under rotate")
    ap.add_argument("--alphas", default="0.01,0.1")
    ap.add_argument("--seeds", type=int, default=P.Settings().seeds)
    ap.add_argument("--jobs", type=int, default=2, help="processes (one thread each)")
    args = ap.parse_args()
    alphas = [float(a) for a in args.alphas.split(",")]
    tasks = [(c, s, a, args.seeds, True) for c in (0, 1) for a in alphas
             for s in range(args.reps)]
    tasks += [(2, s, alphas[0], args.seeds, w) for w in (True, False)
              for s in range(args.power_reps)]
    print(f"# {platform.machine()}, {args.jobs} processes x 1 thread; torch {torch.__version__}; "
          f"{args.seeds} seeds per side, default data and settings")
    t0 = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
        results = pool.map(one, tasks, chunksize=4)
    wall = time.perf_counter() - t0
    counts: Counter = Counter()
    totals: Counter = Counter()
    seconds: Counter = Counter()
    for case, _, alpha, witness, verdict, secs in results:
        key = (case, alpha, witness)
        totals[key] += 1
        counts[key] += verdict == P.NOT_EQUIVARIANT
        seconds[key] += secs
    print(f"{'case':40} {'alpha':>6} {'witness':>7} {'not equivariant':>16} {'rate':>6} "
          f"{'+- 2 se':>8} {'s/cell':>6}")
    for key in sorted(totals):
        case, alpha, witness = key
        n, k = totals[key], counts[key]
        rate = k / n
        se = math.sqrt(max(rate, alpha) * (1 - max(rate, alpha)) / n)
        print(f"{CASES[case][0]:40} {alpha:>6g} {'on' if witness else 'off':>7} "
              f"{f'{k}/{n}':>16} {rate:>6.3f} {2 * se:>8.3f} {seconds[key] / n:>6.2f}")
    print(f"# false positives: the first two cases (equivariant); the rate should be <= alpha "
          f"within noise. The last: detections (power). {wall:.0f} s wall.")


if __name__ == "__main__":
    main()
