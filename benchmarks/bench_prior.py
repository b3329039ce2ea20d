"""The theory prior (``[search] prior = "theory"``) against the plain search: how soon each
finds the study's best triplet.

Each shipped paper study that samples its search (TPE: the alignment and patch studies) is
run from scratch with and without the prior, for several search seeds, with its own budget
and settings (the ``[confirm]`` stage left out: it comes after the search either way). The
study's best triplet is the one with the lowest score over every run of that study (with
any that ties it to rounding); per run
the script records the search trials, model-steps (gradient steps x networks; kernel
learners take none) and seconds since the run started (the prior's prediction included)
up to and including the first trial of that triplet (a run that never tries it counts as
the budget + 1 trials), and whether the run's own final best triplet is it. One row per
(study, seed, arm), then the medians per study and over all.

    python benchmarks/bench_prior.py [--studies alignment_fcn ...] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import tomllib
import torch

from dmisearch.plugins import load_registry
from dmisearch.runner import run_study
from dmisearch.study_file import build_spec
from dmisearch.trialinfo import FINISHED, PAIR_PARAM, is_search

ROOT = Path(__file__).resolve().parent.parent
#: Relative difference within which two pairs' best scores tie.
TIE = 1e-6
STUDIES = ["alignment_fcn", "alignment_lcn", "alignment_cnn_vec", "alignment_cnn_gap",
           "patches_local", "patches_local_invariant", "patches_global"]


def model_steps(t: Any, sizes: int, seeds: int) -> int:
    """Gradient steps x networks the trial trained (0 for a kernel learner)."""
    params = t.user_attrs.get("algorithm_params") or {}
    steps = params.get("steps")
    return int(steps) * sizes * seeds if steps else 0


def run_once(stem: str, seed: int, prior: bool, registry: Any, folder: Path) -> dict:
    path = ROOT / "studies" / "paper" / f"{stem}.toml"
    doc = tomllib.loads(path.read_text())
    doc.pop("confirm", None)
    doc["search"]["seed"] = seed
    if prior:
        doc["search"]["prior"] = "theory"
    name = f"{stem}-{seed}-{'prior' if prior else 'plain'}"
    doc["study"]["name"] = name
    spec = build_spec(doc, registry, source=str(path),
                      storage=f"sqlite:///{folder}/{name}.db")
    start = time.time()
    study = run_study(spec)
    wall = time.time() - start
    n_sizes, n_seeds = len(spec.grid.sizes), len(spec.grid.seeds)
    trials = [t for t in sorted(study.trials, key=lambda t: t.number)
              if is_search(t) and t.state in FINISHED]
    return {"study": stem, "seed": seed, "arm": "prior" if prior else "plain", "wall": wall,
            "trials": [(t.params[PAIR_PARAM], t.value if t.value is not None else math.inf,
                        model_steps(t, n_sizes, n_seeds),
                        t.datetime_complete.timestamp() - start) for t in trials]}


def best_pairs(runs: list[dict]) -> set[str]:
    """The pair with the lowest score over every run, and any pair that ties it (lcn and
    cnn_vec share one kernel, so their ntk learners score the same to rounding)."""
    best = min(v for r in runs for _, v, _, _ in r["trials"])
    return {p for r in runs for p, v, _, _ in r["trials"]
            if abs(v - best) <= TIE * max(1.0, abs(best))}


def first_of(run: dict, pairs: set[str]) -> tuple[int, int, float]:
    """Trials, model-steps and seconds since the run started (the prior's prediction
    included) up to the first trial of one of ``pairs``."""
    steps = 0
    for i, (p, _, s, done) in enumerate(run["trials"], 1):
        steps += s
        if p in pairs:
            return i, steps, done
    return len(run["trials"]) + 1, steps, run["wall"]  # never found: past the budget


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--studies", nargs="+", default=STUDIES, choices=STUDIES)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    registry = load_registry()
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s); seeds {args.seeds}")
    print("study                    seed arm    trials steps     seconds  found_best  "
          "best_value  wall_s")
    summary: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for stem in args.studies:
            runs = [run_once(stem, s, p, registry, Path(folder))
                    for s in args.seeds for p in (False, True)]
            best = best_pairs(runs)
            for r in runs:
                n, steps, secs = first_of(r, best)
                own = min(r["trials"], key=lambda t: t[1])
                print(f"{stem:24} {r['seed']:4} {r['arm']:6} {n:6} {steps:9} {secs:8.1f}  "
                      f"{str(own[0] in best):10}  {own[1]:10.4f}  {r['wall']:6.1f}",
                      flush=True)
                for key in (stem, "all"):
                    arm = summary.setdefault(key, {}).setdefault(r["arm"], [])
                    arm.append(n)
            print(f"# {stem}: best triplet {' = '.join(sorted(best))}")
    print("\nmedian search trials to the best triplet's first trial (plain -> prior)")
    for key, arms in sorted(summary.items(), key=lambda kv: kv[0] == "all"):
        print(f"{key:24} {statistics.median(arms['plain']):5.1f} -> "
              f"{statistics.median(arms['prior']):5.1f}   (runs: {len(arms['plain'])} each)")


if __name__ == "__main__":
    main()
