"""End-to-end study throughput: the fused engine with batched trials vs one model at a time.

Runs a study file in one process, on in-memory Optuna storage, in up to three ways:

* ``loop``: ``engine = "loop"``, ``trials_per_batch = 1``: each trial asked on its own and
  each of its networks trained by a plain PyTorch loop, one after another (what a plain
  Optuna objective with a PyTorch loop does);
* ``fused``: the engine with trials asked ``--batch`` at a time;
* ``loop, replayed``: the fused run's own trials (same parameters, same order; a pruned
  trial up to the stage where it stopped) trained again one model at a time, outside
  Optuna. The two sampled studies draw different trials (a batch of four is sampled
  before any of it is told), so their architectures differ; the replay compares identical
  work, and checks that each complete trial's objective value repeats.

For each it prints the wall time, trials per hour, and the share of the wall time spent
outside training (sampler, storage, metrics, Python): the time inside ``engine.train`` /
``training.train_one`` is counted as training.

    python benchmarks/bench_study.py studies/quickstart.toml [--n-trials 30] [--batch 8]
        [--device cuda] [--skip-loop] [--skip-replay] [--loop-trials N]

``--loop-trials N`` runs the sampled loop study for its first N trials only (the same
sampler and seed, so the same first trials as a full run): on a GPU the loop is so much
slower that a whole study would take most of an hour. Rates are per hour either way.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time

import optuna
import torch

from dmisearch import engine, training
from dmisearch.objective import StudyData, TrialObjective, make_context
from dmisearch.plugins import load_registry
from dmisearch.runner import run_study
from dmisearch.study_file import load_study


class Clock:
    """Accumulates the wall time spent inside the wrapped training functions."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, module, name: str):
        real = getattr(module, name)

        def timed(*args, **kw):
            t = time.perf_counter()
            try:
                return real(*args, **kw)
            finally:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                self.seconds += time.perf_counter() - t

        setattr(module, name, timed)
        return real


def measure(spec) -> dict:
    clock = Clock()
    real_train = clock.wrap(engine, "train")
    real_one = clock.wrap(training, "train_one")
    t = time.perf_counter()
    try:
        study = run_study(spec)
    finally:
        engine.train, training.train_one = real_train, real_one
    wall = time.perf_counter() - t
    n = len(study.trials)
    return {"wall": wall, "trials": n, "per_hour": 3600 * n / wall,
            "overhead": 1 - clock.seconds / wall,
            "best": min((tr.value for tr in study.trials if tr.value is not None),
                        default=float("nan")), "study": study}


def replay(spec, study: optuna.Study) -> dict:
    """Train ``study``'s finished trials again under ``spec`` (one model at a time): a
    complete trial's whole curve, a pruned one's stages up to where it stopped."""
    ctx = make_context(spec)
    objective = TrialObjective(spec, StudyData.prepare(spec, ctx), ctx)
    stages = objective.stages
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    trials = [t for t in study.trials if t.state in done]
    t0 = time.perf_counter()
    values = {}
    for t in trials:
        reached = max(t.user_attrs["curve"]["size"])
        objective.stages = [s for s in stages if s[0] <= reached]
        plan = objective.plan(optuna.trial.FixedTrial(t.params, number=t.number))
        objective.execute([plan])
        if t.state == optuna.trial.TrialState.COMPLETE:
            values[t.number] = plan.value
    wall = time.perf_counter() - t0
    gap = max((abs(v - study.trials[n].value) for n, v in values.items()), default=0.0)
    return {"wall": wall, "trials": len(trials), "per_hour": 3600 * len(trials) / wall,
            "overhead": float("nan"), "best": min(values.values(), default=float("nan")),
            "value_gap": gap}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study")
    ap.add_argument("--n-trials", type=int)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device")
    ap.add_argument("--skip-loop", action="store_true", help="no sampled loop study")
    ap.add_argument("--skip-replay", action="store_true",
                    help="do not replay the fused run's trials with the loop")
    ap.add_argument("--loop-trials", type=int,
                    help="trials of the sampled loop study (default: the study's)")
    args = ap.parse_args()
    spec = load_study(args.study, load_registry(), storage="memory", n_trials=args.n_trials,
                      device=args.device)
    dev = spec.device if spec.device != "auto" else (
        "cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if dev.startswith("cuda") else (
        f"{platform.machine()}, {torch.get_num_threads()} threads")
    print(f"# {args.study}: {spec.n_trials} trials, device {dev} ({name}), torch "
          f"{torch.__version__}")
    rows = []
    if not args.skip_loop:
        loop_spec = dataclasses.replace(spec, engine="loop", trials_per_batch=1)
        if args.loop_trials:
            loop_spec = dataclasses.replace(loop_spec, n_trials=args.loop_trials)
        rows.append(("loop, 1 trial at a time", measure(loop_spec)))
    fused = measure(dataclasses.replace(spec, engine="fused", trials_per_batch=args.batch))
    rows.append((f"fused, {args.batch} trials per batch", fused))
    if not args.skip_replay:
        rows.append(("loop, replayed fused trials",
                     replay(dataclasses.replace(spec, engine="loop"), fused["study"])))
    print(f"{'mode':28} {'trials':>6} {'wall s':>8} {'trials/h':>10} {'outside training':>17} "
          f"{'best':>8}")
    for label, r in rows:
        print(f"{label:28} {r['trials']:>6} {r['wall']:>8.1f} {r['per_hour']:>10.0f} "
              f"{r['overhead']:>16.1%} {r['best']:>8.3f}")
    for label, r in rows:
        if r is not fused and r["per_hour"]:
            print(f"speed-up of fused over {label} (trials per hour): "
                  f"{fused['per_hour'] / r['per_hour']:.2f}x")
        if "value_gap" in r:
            print(f"replayed objective values differ from the fused run's by at most "
                  f"{r['value_gap']:.2g}")


if __name__ == "__main__":
    main()
