"""Where a fused training run spends its time: torch.profiler over one ``engine.train`` call.

Builds the ``bench_engine.py`` workload (K jobs of one built-in architecture, preset ``gpu``
on CUDA, ``cpu`` otherwise), runs it once to warm up, times a second run (the step loops
alone, ``loop.STEP_TIMES``, and the rest: building the models, predicting), then
profiles a third and prints the operators that took the most device time (CUDA) or CPU
time.

    python benchmarks/profile_engine.py [--device cuda] [--arch fcn] [--k 1024]
        [--steps 50] [--rows 25] [--no-graphs]

With CUDA graphs on (the default), replayed steps show as graph launches; ``--no-graphs``
shows each step's kernels.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from bench_engine import PRESETS, sync, workload
from torch.profiler import ProfilerActivity, profile

from dmisearch import engine, loop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--arch", default="fcn")
    ap.add_argument("--k", type=int, default=256)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--rows", type=int, default=25)
    ap.add_argument("--no-graphs", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    preset = PRESETS["gpu" if device.type == "cuda" else "cpu"]
    members, ctx, _ = workload(args.arch, args.k, args.steps, preset, device)
    ctx = dataclasses.replace(ctx, cuda_graphs=not args.no_graphs)
    engine.train(members, ctx)  # warm-up
    loop.STEP_TIMES = []
    sync(device)
    t = time.perf_counter()
    engine.train(members, ctx)
    sync(device)
    full, loops = time.perf_counter() - t, loop.STEP_TIMES
    loop.STEP_TIMES = None
    in_steps = sum(t for _, _, t in loops)
    print(f"# {args.arch}, K = {args.k}, {args.steps} steps on {device}: {full:.3f} s, of "
          f"which the step loops {in_steps:.3f} s ({len(loops)} chunks; "
          f"{in_steps / args.steps * 1e3:.2f} ms a step); building and predicting "
          f"{full - in_steps:.3f} s")
    activities = [ProfilerActivity.CPU] + (
        [ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        engine.train(members, ctx)
        sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=args.rows))


if __name__ == "__main__":
    main()
