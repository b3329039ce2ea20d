"""Building a fused program's K models: built all, then stacked, against streamed into place.

Every fused run starts by building its K jobs' modules from their seeds on the CPU, exactly
as the one-model-at-a-time loop builds them, and stacking their tensors along a job axis.
For many small models that build is a large part of a whole run on a GPU (1024 fcn 3 x 256
models are 152 M parameters). This times, alternating in one process:

* ``list+stack``: all K modules built, then ``torch.func.stack_module_state`` (the engine
  before ``engine.build_stacked``), then one copy per stacked tensor to the device;
* ``stream``: ``engine.build_stacked``: one module at a time copied into place (on a GPU
  through a host buffer of ``engine.STAGE_BYTES``).

On the CPU, ``--staged`` also times ``build_stacked``'s GPU path (the host buffer) with the
CPU as the destination, which is that path's host-side cost.

    python benchmarks/bench_build.py [--device cuda] [--arch fcn] [--k 1024] [--repeat 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch
from bench_engine import PRESETS, sync, workload
from torch.func import stack_module_state

from dmisearch import engine
from dmisearch.training import build_module


def list_and_stack(members, ctx) -> dict[str, torch.Tensor]:
    cpu = dataclasses.replace(ctx, device=torch.device("cpu"))
    params, buffers = stack_module_state([build_module(m.model, m.job.seed, cpu)
                                          for m in members])
    return {n: t.detach().to(ctx.device) for n, t in {**params, **buffers}.items()}


def stream(members, ctx) -> dict[str, torch.Tensor]:
    _, params, buffers = engine.build_stacked(members, ctx)
    return {**params, **buffers}


def staged(members, ctx) -> dict[str, torch.Tensor]:
    real = engine._staged
    engine._staged = lambda device: True
    try:
        return stream(members, ctx)
    finally:
        engine._staged = real


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--arch", default="fcn")
    ap.add_argument("--k", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--staged", action="store_true",
                    help="CPU only: also time the host-buffer path")
    args = ap.parse_args()
    device = torch.device(args.device)
    members, ctx, _ = workload(args.arch, args.k, 1, PRESETS["gpu"], device)
    ways = {"list+stack": list_and_stack, "stream": stream}
    if args.staged and device.type == "cpu":
        ways["stream, staged"] = staged
    times: dict[str, list[float]] = {w: [] for w in ways}
    first = None
    for _ in range(args.repeat):
        for name, way in ways.items():
            sync(device)
            t = time.perf_counter()
            out = way(members, ctx)
            sync(device)
            times[name].append(time.perf_counter() - t)
            if first is None:
                first = out
            else:  # every way gives the same tensors, bit for bit
                assert all(torch.equal(out[n], first[n]) for n in first), name
            del out
    size = sum(t.numel() for t in first.values())
    print(f"# {args.arch}, K = {args.k}, preset gpu ({size / 1e6:.1f} M parameters) onto "
          f"{device}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"median of {args.repeat} (all runs, s)")
    base = statistics.median(times["list+stack"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:16} {med:7.3f} s  {base / med:5.2f}x   "
              + " ".join(f"{t:.3f}" for t in ts))


if __name__ == "__main__":
    main()
