"""Analytic kernels: seconds per Gram matrix K(X, X), the current implementation against the
pre-optimisation one (``tests/kernel_reference.py``) in the same run, with an elementwise
roofline.

    python benchmarks/bench_kernels.py                       # the default table
    python benchmarks/bench_kernels.py --headline            # cnn_gap NTK, n = 1000, (1, 40)
    python benchmarks/bench_kernels.py --block-sweep         # block size candidates
    python benchmarks/bench_kernels.py --device cuda --no-reference

Each case: NTK (or ``--kind``) Gram matrix of n Gaussian inputs of a shape, depth 2, filter
3, sigma_w = sqrt(2), sigma_b = 0.3. ``new s`` is the best of ``--repeat`` runs after a
warm-up, ``new cpu`` the process's CPU seconds in that run (all threads: about ``threads *
new s`` on an idle machine), ``ref s`` one run of the reference (skipped for an
architecture once one takes longer than ``--max-ref-seconds``). ``rel`` is max |new - ref|
/ max |ref|, ``elem`` the largest elementwise relative difference where |ref| > 1e-4 max
|ref| (not tiny: below that, entries come from cancellation, e.g. erf kernels of nearly
uncorrelated inputs). ``pass s`` is the roofline: one elementwise pass ``torch.mul(a, b,
out=c)`` over as many float64 elements as the kernel's blocks hold in all, in blocks of the
same size; ``passes`` = ``new s / pass s``. ``estimate s`` is
``kernels.estimate_seconds`` for the case, asked before it runs. The machine, torch and
threads are printed first; the output is also written to
``benchmarks/logs/bench_kernels_<date>.log`` (``--log``).

With ``--nt-python PYTHON`` (a Python that has neural-tangents and jax, in a venv of their
own: neither is a dependency of dmisearch; see ``compare_stax.py`` for the versions that
import together), each case also times neural-tangents' ``stax`` kernel of the same
architecture on the same inputs in float64 (``benchmarks/compare_stax_nt.py``, run as a
subprocess with the same thread count): ``nt first s`` is its first call (tracing and
compilation included), ``nt s`` a second, warm one, ``nt/new`` their ratio to ``new s``, and
``nt rel`` max |new - nt| / max |nt| off the diagonal (at a self-pair the ReLU angle is 0,
where both sides' rounding moves it by ~1e-8: see ``compare_stax.py``). Its kernel function is batched (``nt.batch``) in
blocks of ``--nt-batch`` inputs, without which a 1000-input convolutional Gram matrix would
hold every position pair at once (1000^2 x 40^2 float64: 13 GB).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from dmisearch_builtins import kernels
from dmisearch_builtins.architectures import FAMILIES
from dmisearch_builtins.kernel_plan import Plan

ROOT = Path(__file__).resolve().parent.parent


def load_reference():
    spec = importlib.util.spec_from_file_location("kernel_reference",
                                                  ROOT / "tests" / "kernel_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "L2 cache"):
                model += f"; {key.strip()} {value.strip()}"
    except OSError:
        pass
    return model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make(name: str, padding: str | None, activation: str):
    kw = {} if name == "fcn" else {"filter_size": 3, "padding": padding}
    return FAMILIES[name](depth=2, activation=activation, sigma_b=0.3, **kw)


def layout(arch, shape, n: int, device: torch.device, max_block_bytes: int | None):
    """(elements computed, elements per block) as ``kernels.kernel`` runs."""
    plan = Plan(arch, shape)
    b1, b2 = kernels._block_sizes(plan, n, n, kernels.block_bytes(device, max_block_bytes))
    columns = kernels._columns(n, n, b1, b2, True)
    elems = sum((i1 - i0) * (j1 - j0) for (j0, j1), rows in columns for i0, i1 in rows)
    return elems * plan.pair_elems, b1 * b2 * plan.pair_elems


def roofline(total: int, block: int, device: torch.device) -> float:
    """Seconds of one pass ``c = a * b`` over ``total`` elements, ``block`` at a time (torch's
    threads inside each operation), as the kernel's blocks run."""
    a, b, c = (torch.rand(block, dtype=torch.float64, device=device) for _ in range(3))
    best = math.inf
    for _ in range(3):
        sync(device)
        t = time.perf_counter()
        for _ in range(max(1, math.ceil(total / block))):
            torch.mul(a, b, out=c)
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def timed(fn, device, repeat: int) -> tuple[float, torch.Tensor, float]:
    """Best wall seconds of ``repeat`` runs, the last result, and the process's CPU seconds
    in the best run (all threads)."""
    best, out, cpu = math.inf, None, math.nan
    for _ in range(repeat):
        sync(device)
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        sync(device)
        if time.perf_counter() - t < best:
            best, cpu = time.perf_counter() - t, time.process_time() - c
    return best, out, cpu


def compare(new: torch.Tensor, old: torch.Tensor) -> tuple[float, float]:
    old = old.to(new.device)
    scale = old.abs().max()
    err = (new - old).abs()
    big = old.abs() > 1e-4 * scale
    return (err.max() / scale).item(), (err[big] / old.abs()[big]).max().item()


def neural_tangents(args, arch, name, shape, padding, activation, x) -> tuple[float, ...]:
    """(first s, warm s, kernel) of neural-tangents' stax on ``x``, or NaNs when not asked."""
    if not args.nt_python:
        return math.nan, math.nan, None
    import json
    import tempfile

    import numpy as np

    cfg = {"arch": name, "dims": len(shape) - 1, "depth": arch.depth,
           "filter_size": getattr(arch, "filter_size", 1), "padding": padding or "circular",
           "activation": activation, "sigma_w": arch.sigma_w, "sigma_b": arch.sigma_b,
           "gram_only": True, "batch": args.nt_batch if len(x) % args.nt_batch == 0 else None}
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(f"{tmp}/x.npz", **{f"x{cfg['dims']}d": x.cpu().numpy()})
        Path(f"{tmp}/c.json").write_text(json.dumps([cfg]))
        threads = str(torch.get_num_threads())
        env = {**os.environ, "OMP_NUM_THREADS": threads, "XLA_FLAGS":
               f"--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={threads}"}
        subprocess.run([args.nt_python, str(ROOT / "benchmarks" / "compare_stax_nt.py"),
                        f"{tmp}/x.npz", f"{tmp}/c.json", f"{tmp}/o.npz"], check=True,
                       env=env, capture_output=True)
        out = np.load(f"{tmp}/o.npz")
        first, warm = out["0.seconds"]
        return first, warm, torch.from_numpy(out[f"0.gram.{args.kind}"])


def run_case(args, ref, name, shape, padding, activation, n, out) -> float:
    device = torch.device(args.device)
    arch = make(name, padding, activation)
    x = torch.randn(n, *shape, generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64).to(device)
    estimate = kernels.estimate_seconds(arch, shape, n, kind=args.kind, device=device)
    kernels.kernel(arch, x[:8], None, args.kind, max_block_bytes=args.max_block_bytes)
    new_s, k, cpu_s = timed(lambda: kernels.kernel(arch, x, None, args.kind,
                                                   max_block_bytes=args.max_block_bytes),
                            device, args.repeat)
    total, block = layout(arch, shape, n, device, args.max_block_bytes)
    pass_s = roofline(total, block, device)
    ref_s, rel, elem = math.nan, math.nan, math.nan
    if ref is not None:
        ref_s, old, _ = timed(lambda: ref.kernel(arch, x.cpu(), None, args.kind),
                              torch.device("cpu"), 1)
        rel, elem = compare(k, old)
    nt_first, nt_s, nt_k = neural_tangents(args, arch, name, shape, padding, activation, x)
    off = ~torch.eye(n, dtype=torch.bool)  # self-pairs: the ReLU angle's rounding (1e-8)
    nt_rel = math.nan if nt_k is None else compare(k.cpu()[off], nt_k[off])[0]
    label = "x".join(map(str, shape))
    nt_cols = (f" {nt_first:>10.2f} {nt_s:>8.2f} {nt_s / new_s:>6.1f} {nt_rel:>8.1e}"
               if args.nt_python else "")
    out(f"{name:8} {label:7} {padding or '-':8} {activation:4} {n:>5} {new_s:>8.3f} "
        f"{cpu_s:>8.2f} {ref_s:>8.2f} {ref_s / new_s:>7.1f} {rel:>8.1e} {elem:>8.1e} "
        f"{pass_s:>7.3f} {new_s / pass_s:>6.1f} {estimate:>10.2f} {total / 1e6:>9.1f} "
        f"{block:>7}{nt_cols}")
    return ref_s


def block_sweep(args, out) -> None:
    """Seconds of the headline shape at several block sizes (``_CPU_BLOCK_BYTES_PER_THREAD``
    times the threads)."""
    device = torch.device(args.device)
    out("# block sweep: cnn_gap ntk relu depth 2 filter 3, n = "
        f"{args.sweep_n}, shapes 1x40 and 1x8x8, circular and zeros")
    for shape in ((1, 40), (1, 8, 8)):
        for padding in ("circular", "zeros"):
            arch = make("cnn_gap", padding, "relu")
            x = torch.randn(args.sweep_n, *shape, generator=torch.Generator().manual_seed(0),
                            dtype=torch.float64).to(device)
            for kib in (64, 128, 256, 512, 1024, 2048):
                nbytes = kib * 1024 - 8
                s, _, cpu = timed(lambda a=arch, x=x, b=nbytes: kernels.kernel(
                    a, x, None, "ntk", max_block_bytes=b), device, 2)
                total, block = layout(arch, shape, args.sweep_n, device, nbytes)
                out(f"{'x'.join(map(str, shape)):6} {padding:8} {kib:>5} KiB block {block:>7} "
                    f"elements: {s:.3f} s ({cpu:.3f} s CPU), "
                    f"{s / total * 1e9:.2f} ns/element")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--kind", default="ntk", choices=["nngp", "ntk"])
    ap.add_argument("--ns", default="250,1000")
    ap.add_argument("--archs", default=",".join(FAMILIES))
    ap.add_argument("--shapes", default="1x40,1x8x8")
    ap.add_argument("--paddings", default="circular,zeros")
    ap.add_argument("--activations", default="relu,erf")
    ap.add_argument("--headline", action="store_true",
                    help="only cnn_gap, (1, 40), relu, both paddings, n = 1000")
    ap.add_argument("--block-sweep", action="store_true")
    ap.add_argument("--sweep-n", type=int, default=300)
    ap.add_argument("--max-block-bytes", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--max-ref-seconds", type=float, default=600.0)
    ap.add_argument("--nt-python", default=None,
                    help="a Python with neural-tangents and jax: time its stax kernels too")
    ap.add_argument("--nt-batch", type=int, default=50,
                    help="inputs per nt.batch block (used where it divides n)")
    ap.add_argument("--log", default=str(ROOT / "benchmarks" / "logs" /
                                         f"bench_kernels_{datetime.date.today()}.log"))
    args = ap.parse_args()
    if args.headline:
        args.archs, args.shapes, args.activations, args.ns = "cnn_gap", "1x40", "relu", "1000"
    log = open(args.log, "a")  # noqa: SIM115 - closed at exit

    def out(line: str) -> None:
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()

    device = torch.device(args.device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "-"
    out(f"# {datetime.datetime.now().isoformat(timespec='seconds')} {' '.join(sys.argv)}")
    out(f"# machine: {machine()}; gpu: {gpu}; torch {torch.__version__}; "
        f"{torch.get_num_threads()} threads; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
        f"; load average {os.getloadavg()[0]:.2f} at start")
    if args.block_sweep:
        block_sweep(args, out)
        return
    out(f"# {args.kind} Gram matrices, depth 2, filter 3, sigma_b 0.3; float64")
    out(f"{'arch':8} {'input':7} {'padding':8} {'act':4} {'n':>5} {'new s':>8} {'new cpu':>8} "
        f"{'ref s':>8} "
        f"{'speedup':>7} {'rel':>8} {'elem':>8} {'pass s':>7} {'passes':>6} "
        f"{'estimate s':>10} {'Melements':>9} {'block':>7}"
        + (f" {'nt first s':>10} {'nt s':>8} {'nt/new':>6} {'nt rel':>8}"
           if args.nt_python else ""))
    ref = None if args.no_reference else load_reference()
    for name in args.archs.split(","):
        for shape_text in args.shapes.split(","):
            shape = tuple(int(v) for v in shape_text.split("x"))
            paddings = ["-"] if name == "fcn" else args.paddings.split(",")
            for padding in paddings:
                for activation in args.activations.split(","):
                    use_ref = ref
                    for n in (int(v) for v in args.ns.split(",")):
                        ref_s = run_case(args, use_ref, name, shape,
                                         None if padding == "-" else padding, activation, n, out)
                        if ref_s > args.max_ref_seconds:
                            use_ref = None
    out(f"# load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
