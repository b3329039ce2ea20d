"""Load test: many workers, many short trials, one study; trials per second and overhead.

    python benchmarks/bench_workers.py [--storage URL] [--workers 8] [--n-trials 200]
    python benchmarks/bench_workers.py --claims 100,1000,5000 [--storage URL]

Runs ``dmisearch run STUDY --workers W`` on a study whose trials train almost nothing (an
fcn of width 4 for 1 SGD step per job), so the time is Optuna's and dmisearch's: sampling,
the storage round trips (ask, parameters, attributes, heartbeats, tell) and the study lock.
Reports trials per second and, per trial, the worker-seconds spent (workers x wall time /
trials) next to the training time the trials recorded.

``--claims K1,K2,...`` measures instead what bounds the number of workers: how long one
claim holds the study lock (reap lost trials, read every trial, ask and plan one) on a
study that already holds K finished trials. Workers claim one after another, so W workers
whose trials last T seconds keep the lock busy W x claim / T of the time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna

from dmisearch.storage import mask, open_storage

STUDY = """
[study]
name = "{name}"
device = "cpu"

[data]
name = "teacher"
family = "fcn"
shape = [1, 8]
width = 8

[curve]
sizes = [8, 16]
seeds = 1
test_size = 16

[search]
models = ["fcn"]
algorithms = ["sgd"]
n_trials = {n}
pruner = "none"
sampler = "random"

[search.space.model.fcn]
width = 4
depth = 1

[search.space.algorithm.sgd]
steps = 1
batch_size = 8
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--storage", help="default: a journal file in a temporary folder")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--n-trials", type=int, default=200)
    ap.add_argument("--claims", help="comma-separated study sizes: time one claim at each")
    args = ap.parse_args()
    if args.claims:
        claim_costs(args.storage, [int(k) for k in args.claims.split(",")])
        return
    tmp = Path(tempfile.mkdtemp())
    storage = args.storage or f"journal:{tmp / 'journal.log'}"
    name = f"load-{uuid.uuid4().hex[:8]}"
    path = tmp / "load.toml"
    path.write_text(STUDY.format(name=name, n=args.n_trials))
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "dmisearch", "run", str(path), "--storage",
                          storage, "--workers", str(args.workers), "--no-progress"],
                         capture_output=True, text=True)
    wall = time.perf_counter() - t
    if res.returncode != 0:
        sys.exit(res.stdout + res.stderr)
    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    trials = study.get_trials(deepcopy=False)
    complete = sum(tr.state.name == "COMPLETE" for tr in trials)
    training = sum(sum(set(tr.user_attrs["curve"]["seconds"])) for tr in trials)
    span = sum((tr.datetime_complete - tr.datetime_start).total_seconds() for tr in trials)
    print(f"# storage {mask(storage)}; {args.workers} workers; {complete} complete trials "
          f"of {len(trials)} (wall time includes starting the workers)")
    print(f"wall {wall:.1f} s, {complete / wall:.1f} trials/s; per trial: "
          f"{args.workers * wall / complete * 1e3:.0f} worker-ms in all, "
          f"{span / complete * 1e3:.0f} ms from ask to tell, "
          f"{training / complete * 1e3:.1f} ms training")
    if args.storage:
        optuna.delete_study(study_name=name, storage=open_storage(storage))


def claim_costs(storage: str | None, sizes: list[int], repeats: int = 20) -> None:
    """Seconds one claim holds the study lock on a study of K finished trials."""
    import tomllib

    from dmisearch.claims import claim
    from dmisearch.objective import StudyData, TrialObjective, make_context
    from dmisearch.plugins import load_registry
    from dmisearch.runner import open_study
    from dmisearch.study_file import build_spec

    tmp = Path(tempfile.mkdtemp())
    storage = storage or f"journal:{tmp / 'journal.log'}"
    print(f"# storage {mask(storage)}; one claim (reap, read all trials, ask and plan 1)")
    print("| finished trials | ms per claim (median of 20) |")
    print("|---:|---:|")
    registry = load_registry()
    for k in sizes:
        name = f"claims-{uuid.uuid4().hex[:8]}"
        doc = tomllib.loads(STUDY.format(name=name, n=k + 10 * repeats))
        spec = build_spec(doc, registry, storage=storage)
        study = open_study(spec)
        ctx = make_context(spec)
        objective = TrialObjective(spec, StudyData.prepare(spec, ctx), ctx)
        _fill(study, objective, k)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            got = claim(study, spec, 1, [], objective)
            times.append(time.perf_counter() - t)
            for plan in got.plans:  # keep the study's size: finish what was asked
                study.tell(plan.trial, 0.0)
        times.sort()
        print(f"| {k} | {times[len(times) // 2] * 1e3:.1f} |", flush=True)
        if storage.split(":")[0] not in ("journal",):
            optuna.delete_study(study_name=name, storage=open_storage(storage))


def _fill(study: optuna.Study, objective, k: int) -> None:
    """K finished trials with the attributes dmisearch stores (the curve included)."""
    template = None
    for i in range(k):
        if template is None:
            trial = study.ask()
            plan = objective.plan(trial)
            objective.execute([plan])
            study.tell(trial, plan.value)
            template = study.trials[-1]
            continue
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE, value=float(i),
            params={**template.params, "algorithm.sgd.lr": 0.001 + i * 1e-7},
            distributions=template.distributions, user_attrs=template.user_attrs))


if __name__ == "__main__":
    main()
