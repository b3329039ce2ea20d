"""The device's two ceilings, measured: matrix-product rate and memory bandwidth.

The rates a fused step can reach are bounded by these (``benchmarks/RESULTS.md``, "What
fcn's 500x needs"): TFLOP/s of a large square matrix product in float32, TF32 and bf16,
and GB/s of a large device-to-device copy, counting the bytes read and the bytes written.
Medians of ``--repeat`` timed runs after a warm-up, on random data.

    python benchmarks/ceilings.py [--device cuda] [--n 8192] [--gib 2] [--repeat 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def timed(fn, device: torch.device, repeat: int) -> float:
    """Median seconds of ``fn()`` (CUDA: device events; else the host clock)."""
    fn()  # warm-up: handles, kernel choice
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(
                enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def matmul_tflops(n: int, dtype: torch.dtype, tf32: bool, device: torch.device,
                  repeat: int) -> float:
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        return 2 * n**3 / timed(lambda: a @ b, device, repeat) / 1e12
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def copy_gbs(gib: float, device: torch.device, repeat: int) -> float:
    src = torch.randn(int(gib * 2**30) // 4, device=device)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / timed(lambda: dst.copy_(src), device, repeat) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n", type=int, default=None, help="matrix side (8192 CUDA, 2048 CPU)")
    ap.add_argument("--gib", type=float, default=None, help="copied GiB (2 CUDA, 0.25 CPU)")
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    n = args.n or (8192 if cuda else 2048)
    gib = args.gib or (2.0 if cuda else 0.25)
    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    rates = {"float32": matmul_tflops(n, torch.float32, False, device, args.repeat)}
    if cuda:
        rates["tf32"] = matmul_tflops(n, torch.float32, True, device, args.repeat)
        rates["bf16"] = matmul_tflops(n, torch.bfloat16, False, device, args.repeat)
    print(f"# ceilings on {device} ({name}); torch {torch.__version__}")
    print(f"matmul {n}^3 TFLOP/s: " + ", ".join(f"{k} {v:.1f}" for k, v in rates.items()))
    print(f"copy {gib:g} GiB, read + written: {copy_gbs(gib, device, args.repeat):.0f} GB/s")


if __name__ == "__main__":
    main()
