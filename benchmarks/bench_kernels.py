"""Analytic kernel computation: time to build K(X, X) and K(test, X) for each architecture.

    python benchmarks/bench_kernels.py [--device cuda] [--ns 500,1000,2000] [--kind ntk]

Inputs: 1-D (1, 64) and 2-D (1, 8, 8) Gaussian samples; depth 2, filter 3, relu, circular
padding. Prints seconds and million kernel entries per second (n^2 entries for K(X, X)),
plus the float64 solve that kernel regression then needs, for scale.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from dmisearch_builtins.architectures import FAMILIES
from dmisearch_builtins.kernels import kernel


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--ns", default="250,500,1000,2000")
    ap.add_argument("--kind", default="ntk", choices=["nngp", "ntk"])
    ap.add_argument("--archs", default=",".join(FAMILIES))
    ap.add_argument("--max-seconds", type=float, default=120.0,
                    help="skip larger n for an architecture once one run takes longer")
    args = ap.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"{platform.machine()}, {torch.get_num_threads()} threads")
    print(f"# device {device} ({name}); torch {torch.__version__}; kind {args.kind}; "
          "depth 2, filter 3, relu, circular")
    print(f"{'arch':8} {'input':10} {'n':>6} {'K(X,X) s':>9} {'Mentries/s':>11} "
          f"{'solve s':>8}")
    for arch_name in args.archs.split(","):
        cls = FAMILIES[arch_name]
        arch = cls(depth=2) if arch_name == "fcn" else cls(depth=2, filter_size=3)
        for shape in ((1, 64), (1, 8, 8)):
            for n in (int(v) for v in args.ns.split(",")):
                x = torch.randn(n, *shape, generator=torch.Generator().manual_seed(0)).to(device)
                kernel(arch, x[:8], None, args.kind)  # warm-up
                sync(device)
                t = time.perf_counter()
                k = kernel(arch, x, None, args.kind)
                sync(device)
                dt = time.perf_counter() - t
                t = time.perf_counter()
                torch.linalg.cholesky(k + 1e-6 * k.diagonal().mean() * torch.eye(
                    n, dtype=k.dtype, device=device))
                sync(device)
                solve = time.perf_counter() - t
                label = "x".join(map(str, shape[1:]))
                print(f"{arch_name:8} {label:10} {n:>6} {dt:>9.2f} {n * n / dt / 1e6:>11.2f} "
                      f"{solve:>8.3f}", flush=True)
                if dt > args.max_seconds:
                    break


if __name__ == "__main__":
    main()
