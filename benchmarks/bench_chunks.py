"""CPU chunk size: the fused engine's speed as ``engine.CPU_CHUNK_BYTES`` varies.

On the CPU a group of jobs is split into chunks whose saved activations stay under
``CPU_CHUNK_BYTES`` (``engine._chunk_limit``): past the caches a fused step turns
memory-bound, while too small a chunk pays the per-program costs (build, first backward,
predictions) more often and fuses less. This trains the ``bench_engine.py`` workload (preset
``cpu``) with each limit, alternating the limits in every round, and prints the median
wall time of whole runs and of their step loops, with the chunk count.

    python benchmarks/bench_chunks.py [--archs fcn,cnn_gap] [--k 64] [--steps 100]
        [--mib 8,16] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from bench_engine import PRESETS, workload

from dmisearch import engine, loop
from dmisearch_builtins.architectures import FAMILIES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default=",".join(FAMILIES))
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--mib", default="8,16", help="limits to compare, MiB")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    limits = [int(m) for m in args.mib.split(",")]
    print(f"# K = {args.k}, {args.steps} steps, preset cpu; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median of {args.repeat} (all runs, s)")
    print(f"{'arch':8} {'MiB':>4} {'chunks':>6} {'whole':>7} {'steps':>7} {'vs first':>8}   all")
    default = engine.CPU_CHUNK_BYTES
    try:
        for arch in args.archs.split(","):
            members, ctx, _ = workload(arch, args.k, args.steps, PRESETS["cpu"],
                                       torch.device("cpu"))
            engine.train(members[:2], ctx)  # warm-up
            runs: dict[int, list[tuple[float, float, int]]] = {m: [] for m in limits}
            for _ in range(args.repeat):
                for mib in limits:
                    engine.CPU_CHUNK_BYTES = mib * 2**20
                    loop.STEP_TIMES = []
                    t = time.perf_counter()
                    engine.train(members, ctx)
                    whole = time.perf_counter() - t
                    loops = loop.STEP_TIMES
                    loop.STEP_TIMES = None
                    runs[mib].append((whole, sum(s for _, _, s in loops), len(loops)))
            first = statistics.median(w for w, _, _ in runs[limits[0]])
            for mib, rs in runs.items():
                whole = statistics.median(w for w, _, _ in rs)
                print(f"{arch:8} {mib:>4} {rs[0][2]:>6} {whole:>7.3f} "
                      f"{statistics.median(s for _, s, _ in rs):>7.3f} {first / whole:>7.2f}x   "
                      + " ".join(f"{w:.2f}" for w, _, _ in rs), flush=True)
    finally:
        engine.CPU_CHUNK_BYTES = default
        loop.STEP_TIMES = None


if __name__ == "__main__":
    main()
