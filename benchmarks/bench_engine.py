"""Fused engine vs one model at a time: model-steps per second, side by side in one run.

For each built-in architecture, K jobs (each its own initialisation, data and minibatch
order) are trained for STEPS steps of SGD (momentum 0.9, or ``--momentum``) on a regression
task, by

* ``loop``: ``dmisearch.loop.train_one``, one model after another (an ordinary PyTorch
  loop with torch.optim, what a plain Optuna objective does), and
* ``fused``: ``dmisearch.engine.train``, all K jobs as one program.

Both include building the models and predicting the test set, so the rates are what a trial
sees; each is the median of ``--repeat`` runs, and the loop's and the engine's runs
alternate, so that a machine whose speed drifts slows both alike. The loop's rate does not
depend on K; it is measured on ``--loop-models`` models. On CUDA the fused engine runs twice,
eagerly and with its training step captured in a CUDA graph (the default; ``engine.py``).

    python benchmarks/bench_engine.py [--device cuda] [--ks 1,16,64,256] [--steps 100]
        [--repeat 3] [--preset gpu|cpu] [--tf32] [--archs fcn,cnn_gap] [--momentum 0]

``--momentum 0`` is plain SGD, the optimiser of the reference measurement (RESULTS.md, "the
anchors"): its step reads and writes each parameter three times instead of five, which at
large K is much of a step's memory traffic.

Prints one row per (architecture, K): model-steps/s of whole runs (what a trial sees) and
of the step loops alone (``loop.STEP_TIMES``: building the models and predicting left
out, as in the anchors' step loops), the fused engine's ratio to the loop for each, and
its achieved TFLOP/s per step (forward + backward: 3x the forward's multiply-adds x 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import platform
import statistics
import time
from collections.abc import Callable

import torch

from dmisearch import engine, loop
from dmisearch.components import Job, RunContext
from dmisearch.loop import train_one
from dmisearch_builtins.algorithms import SGD
from dmisearch_builtins.architectures import FAMILIES

PRESETS = {
    # the anchors' workload: d = 64, batch 128; FCN 3 x 256, convs 3 x 64 channels
    "gpu": {"length": 64, "batch": 128, "fcn_width": 256, "conv_width": 64, "depth": 3,
            "lcn_width": 16},
    # sized for a laptop-class CPU: the quickstart's scale
    "cpu": {"length": 32, "batch": 32, "fcn_width": 128, "conv_width": 16, "depth": 2,
            "lcn_width": 8},
}
LOOP_MODELS = 8


def forward_flops(module: torch.nn.Module, shape: tuple[int, ...]) -> int:
    """Multiply-adds x 2 of one forward pass on one sample (dense, conv and local layers)."""
    from dmisearch_builtins.layers import Conv, Dense, LocalConv

    total = 0
    spatial = math.prod(shape[1:])
    for layer in module.modules():
        if isinstance(layer, Dense):
            total += 2 * layer.weight.numel()
        elif isinstance(layer, Conv):
            total += 2 * layer.weight.numel() * spatial
        elif isinstance(layer, LocalConv):
            total += 2 * layer.weight.numel()
    return total


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeat: int) -> float:
    """Median wall time of ``repeat`` calls of ``fn``."""
    times = []
    for _ in range(repeat):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def workload(arch_name: str, k: int, steps: int, preset: dict, device: torch.device,
             momentum: float = 0.9):
    """K members of one architecture, and the fused program's FLOPs per model-step."""
    shape = (1, preset["length"])
    width = {"fcn": preset["fcn_width"], "lcn": preset["lcn_width"]}.get(
        arch_name, preset["conv_width"])
    model = FAMILIES[arch_name](depth=preset["depth"], width=width)
    algo = SGD(lr=0.01, momentum=momentum, steps=steps, batch_size=preset["batch"])
    ctx = RunContext(device, torch.float32, "regression", 1, shape)
    n = 4 * preset["batch"]
    g = torch.Generator().manual_seed(0)
    jobs = [Job(torch.randn(n, *shape, generator=g).to(device),
                torch.randn(n, 1, generator=g).to(device),
                torch.randn(256, *shape, generator=g).to(device), seed) for seed in range(k)]
    flops = 3 * forward_flops(model.build(shape, 1), shape) * preset["batch"]
    return [engine.Member(model, algo, j) for j in jobs], ctx, flops


def rates(runs: dict[str, tuple[Callable, list]], steps: int, device: torch.device,
          repeat: int) -> dict[str, tuple[float, float]]:
    """Model-steps/s of each ``run(members)`` in ``runs``: whole runs, and the step loops
    alone (timed by ``loop.step_clock`` between device syncs; building and predicting
    excluded). The runs alternate, ``repeat`` rounds, so that a machine whose speed drifts
    (a shared or throttled CPU) slows them alike; medians over the rounds."""
    for run, members in runs.values():
        run(members[:2])  # warm-up
    whole: dict[str, list[float]] = {name: [] for name in runs}
    per_step: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, (run, members) in runs.items():
            loop.STEP_TIMES = []
            try:
                seconds = timed(lambda run=run, members=members: run(members), device, 1)
                loops = loop.STEP_TIMES
            finally:
                loop.STEP_TIMES = None
            whole[name].append(len(members) * steps / seconds)
            per_step[name].append(sum(m * s for m, s, _ in loops) / sum(t for _, _, t in loops))
    return {name: (statistics.median(whole[name]), statistics.median(per_step[name]))
            for name in runs}


def side_by_side(arch_name: str, k: int, steps: int, preset: dict, device: torch.device,
                 repeat: int, loop_models: int = LOOP_MODELS, momentum: float = 0.9
                 ) -> dict[str, float]:
    """The loop (on ``loop_models`` models: its rate does not depend on K) and the engine's
    default on K models, alternating; on CUDA also the engine without CUDA graphs
    (``eager``). Model-steps/s: ``loop``, ``loop_step``, ``fused``, ``fused_step``,
    ``eager``; and the fused step's TFLOP/s."""
    members, ctx, flops = workload(arch_name, k, steps, preset, device, momentum)
    runs = {
        "loop": (lambda ms: [train_one(m.algo, m.model, m.job, ctx) for m in ms],
                 members[:loop_models] if k >= loop_models else
                 workload(arch_name, loop_models, steps, preset, device, momentum)[0]),
        "fused": (lambda ms: engine.train(ms, ctx), members),
    }
    if device.type == "cuda":
        eager = dataclasses.replace(ctx, cuda_graphs=False)
        runs["eager"] = (lambda ms: engine.train(ms, eager), members)
    got = rates(runs, steps, device, repeat)
    out = {name: r[0] for name, r in got.items()}
    out["loop_step"], out["fused_step"] = got["loop"][1], got["fused"][1]
    out["tflops"] = out["fused_step"] * flops / 1e12
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--ks", default="1,4,16,64,256")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3, help="median of this many runs")
    ap.add_argument("--preset", choices=PRESETS, default=None)
    ap.add_argument("--archs", default=",".join(FAMILIES))
    ap.add_argument("--loop-models", type=int, default=LOOP_MODELS,
                    help="models the loop's rate is measured on")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matmuls and convolutions")
    ap.add_argument("--momentum", type=float, default=0.9,
                    help="SGD momentum (0: plain SGD, as in the anchors)")
    args = ap.parse_args()
    device = torch.device(args.device)
    preset_name = args.preset or ("gpu" if device.type == "cuda" else "cpu")
    preset = PRESETS[preset_name]
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    print(f"# device: {device} ({name}); torch {torch.__version__}; preset {preset_name} "
          f"{preset}; steps {args.steps}; float32{' + tf32' if args.tf32 else ''}; "
          f"SGD momentum {args.momentum}")
    cuda = device.type == "cuda"
    print(f"{'':14} {'whole runs (build, train, predict)':^{43 if cuda else 32}}   "
          f"{'per training step':^35}")
    print(f"{'arch':8} {'K':>5} {'loop':>10} {'fused':>10}" + (f" {'eager':>10}" if cuda else "")
          + f" {'ratio':>8}   {'loop':>10} {'fused':>10} {'ratio':>8} {'TFLOP/s':>8}")
    for arch in args.archs.split(","):
        for k in (int(x) for x in args.ks.split(",")):
            r = side_by_side(arch, k, args.steps, preset, device, args.repeat, args.loop_models,
                             args.momentum)
            print(f"{arch:8} {k:>5} {r['loop']:>10.0f} {r['fused']:>10.0f}"
                  + (f" {r['eager']:>10.0f}" if cuda else "")
                  + f" {r['fused'] / r['loop']:>7.1f}x   {r['loop_step']:>10.0f} "
                  f"{r['fused_step']:>10.0f} {r['fused_step'] / r['loop_step']:>7.1f}x"
                  f" {r['tflops']:>8.3f}", flush=True)
    print("(model-steps/s; fused: the engine's default" + (", with CUDA graphs; eager: without"
                                                          if cuda else "") + ")")

if __name__ == "__main__":
    main()
