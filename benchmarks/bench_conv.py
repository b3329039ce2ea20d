"""Circular convolutions of K jobs: one grouped direct convolution vs the Fourier form.

For each case (jobs K, channels in -> out, filter k, feature map), times forward +
backward (gradients for the input, the weights and the biases) of

* ``direct``: ``F.conv2d`` / ``F.conv1d`` with ``groups=K`` on the circularly padded input
  (``layers.same_pad``), what ``Conv.batched`` runs when the Fourier form does not pay;
* ``fourier``: ``layers.circular_conv_fourier``,
* ``bmm`` (1-D only): the receptive fields gathered job-major, ``(K, n * L, c_in * k)``, one
  batched matrix product with the filters, and the result permuted back: the form
  ``layers.conv_bmm`` takes for wide 1-D convolutions on GPUs, where cuDNN's grouped
  convolutions are slow, and for 1-D ones with one input channel on the CPU,

side by side in one run (median of ``--repeat`` runs of ``--iters`` iterations), and prints
the multiply-add saving the engine's rule predicts (``layers.fourier_saving``), whether the
rule picks the Fourier form (saving >= ``FOURIER_MIN_SAVING``), and the measured speed-ups.

    python benchmarks/bench_conv.py [--device cpu] [--batch 32] [--repeat 5] [--cases gpu]
        [--tf32]

``--cases gpu``: the anchors' GPU scale (1-D, 64 channels, d = 64, filter 3, batch 128)
for K = 16, 256 jobs.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F

from dmisearch_builtins.layers import (
    FOURIER_MIN_SAVING,
    circular_conv_fourier,
    fourier_saving,
    same_pad,
)

# (jobs, c_in, c_out, filter, map): the quickstart's 8 x 8 digits and a 1-D signal
CASES = [
    (6, 32, 32, 5, (8, 8)),
    (10, 16, 16, 5, (8, 8)),
    (10, 8, 8, 5, (8, 8)),
    (10, 1, 32, 5, (8, 8)),
    (6, 32, 32, 3, (8, 8)),
    (10, 16, 16, 3, (8, 8)),
    (10, 32, 32, 5, (64,)),
    (10, 32, 32, 3, (64,)),
    (16, 1, 16, 3, (32,)),  # a first layer on a 1-D signal
    (64, 1, 16, 5, (64,)),
    (4, 32, 32, 5, (16, 16)),
]

GPU_CASES = [(16, 64, 64, 3, (64,)), (256, 64, 64, 3, (64,)), (256, 1, 64, 3, (64,))]


def direct(x, w, b, k):
    conv = F.conv2d if x.ndim == 4 else F.conv1d
    return conv(same_pad(x, k, x.ndim - 2, "circular"), w.flatten(0, 1), b.flatten(),
                groups=w.shape[0])


def bmm(x, w, b, k):
    """1-D: ``(n, K * c_in, L) -> (n, K * c_out, L)`` as one batched matrix product."""
    n, length = x.shape[0], x.shape[-1]
    jobs, c_out, c_in = w.shape[:3]
    cols = same_pad(x, k, 1, "circular").unfold(2, k, 1)  # (n, K * c_in, L, k)
    cols = cols.reshape(n, jobs, c_in, length, k).permute(1, 0, 3, 2, 4).reshape(
        jobs, n * length, c_in * k)
    out = torch.baddbmm(b[:, None, :], cols, w.reshape(jobs, c_out, c_in * k).transpose(1, 2))
    return out.reshape(jobs, n, length, c_out).permute(1, 0, 3, 2).reshape(
        n, jobs * c_out, length)


def timed(fn, iters: int, repeat: int, device: torch.device) -> float:
    """Median seconds per call of ``fn``."""
    fn()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        for _ in range(iters):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - t) / iters)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cases", choices=["cpu", "gpu"], default="cpu")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matmuls and convolutions")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    print(f"# device: {device} ({name}); torch {torch.__version__}; batch {args.batch}; "
          f"float32{' + tf32' if args.tf32 else ''}; forward + backward; "
          f"FOURIER_MIN_SAVING = {FOURIER_MIN_SAVING}")
    print(f"{'K':>3} {'c_in':>5} {'c_out':>5} {'k':>2} {'map':>8} {'saving':>7} {'rule':>8} "
          f"{'direct ms':>10} {'fourier ms':>11} {'speed-up':>9} {'bmm ms':>8} {'speed-up':>9}")
    g = torch.Generator().manual_seed(0)
    for jobs, c_in, c_out, k, spatial in (GPU_CASES if args.cases == "gpu" else CASES):
        x = torch.randn(args.batch, jobs * c_in, *spatial, generator=g).to(device)
        w = torch.randn(jobs, c_out, c_in, *[k] * len(spatial), generator=g).to(device)
        b = torch.randn(jobs, c_out, generator=g).to(device)
        for t in (x, w, b):
            t.requires_grad_()
        grad = torch.randn(args.batch, jobs * c_out, *spatial, generator=g).to(device)

        def step(conv, x=x, w=w, b=b, k=k, grad=grad):
            torch.autograd.grad(conv(x, w, b, k), (x, w, b), grad)

        t_direct = timed(lambda s=step: s(direct), args.iters, args.repeat, device)
        t_fourier = timed(lambda s=step: s(circular_conv_fourier), args.iters, args.repeat,
                          device)
        bmm_cols = ""
        if len(spatial) == 1:
            with torch.no_grad():  # the candidate computes the same function
                err = (bmm(x, w, b, k) - direct(x, w, b, k)).abs().max().item()
                assert err < 1e-3 * direct(x, w, b, k).abs().max().item(), err
            t_bmm = timed(lambda s=step: s(bmm), args.iters, args.repeat, device)
            bmm_cols = f" {1e3 * t_bmm:>8.2f} {t_direct / t_bmm:>8.2f}x"
        saving = fourier_saving(c_in, c_out, k, spatial)
        rule = "fourier" if saving >= FOURIER_MIN_SAVING else "direct"
        shape = "x".join(map(str, spatial))
        print(f"{jobs:>3} {c_in:>5} {c_out:>5} {k:>2} {shape:>8} {saving:>7.2f} {rule:>8} "
              f"{1e3 * t_direct:>10.2f} {1e3 * t_fourier:>11.2f} "
              f"{t_direct / t_fourier:>8.2f}x{bmm_cols}", flush=True)


if __name__ == "__main__":
    main()
