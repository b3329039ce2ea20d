"""How far the analytic kernels' eager passes are from fused code: the headline Gram matrix
(cnn_gap NTK, depth 2, filter 3, ReLU, inputs of length 40) by ``kernels.kernel`` beside the
same blocks computed by loops that ``torch.compile`` (TorchInductor's C++ backend) fuses.

    python benchmarks/bench_kernel_fusion.py                 # n = 1000, both paddings
    python benchmarks/bench_kernel_fusion.py --n 400 --block-kib 1024,8192

The fused variant is an experiment, not a code path of dmisearch: it keeps ``kernels``'
blocks, first-layer product and factors, and replaces each block's recursion by three
compiled functions: a hidden layer's moments (one loop: the cosine, its snap, the arccos,
``Kphi`` and ``Theta * Kd``), the filter of both into the next layer's ``K`` and ``Theta``
(one loop reading shifted entries), and the readout layer's moments, whose sum over positions
stays eager. Its intermediates are materialised on purpose: compiled as one function,
Inductor recomputes the arccos at every filter tap (three times per entry). Blocks of another
shape than the full one (the ragged last row and column) run eagerly, so that one compilation
serves a run. Columns: ``eager s`` the kernel as dmisearch computes it (best of
``--repeat``); for fused, ``compile s`` the first run (compilation included), ``fused s``
the best warm run, ``rel`` max |fused - eager| / max |eager|; ``passes`` each time over one
elementwise pass ``torch.mul(a, b, out=c)`` over the same elements in the same blocks
(``bench_kernels.roofline``); ``stage passes`` one full block's moments, filter and readout
moments, each in passes of that block. ``--arccos-only`` times ``acos(a * b / 2) * b`` over
one 1 MiB block: ATen's operations, Inductor's one loop, ATen's arccos alone, one
multiplication pass; ``--profile-eager`` prints torch.profiler's table of the eager kernel
of ``--n`` inputs by operation. Output goes to ``benchmarks/logs/
bench_kernel_fusion_<date>.log`` too.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
from bench_kernels import ROOT, layout, machine, make, roofline

from dmisearch_builtins import kernel_ops as ops
from dmisearch_builtins import kernels
from dmisearch_builtins.kernel_plan import Plan, Side


def shift_filter(a: torch.Tensor, plan: Plan) -> torch.Tensor:
    """``sum_delta a[p + delta, p' + delta]`` along each spatial axis (no ``1/k^nd``), on the
    unpadded pair layout ``(*outer, b1, b2, *inner)``."""
    left = (plan.k - 1) // 2
    for axis in range(plan.nd):
        if plan.circular:  # inner axes are offsets: only p moves
            terms = [torch.roll(a, -d, dims=axis) for d in range(-left, plan.k - left)]
        else:  # zeros: p and p' move together, reading zeros outside the map
            inner_axis = plan.nd + 2 + axis
            pad = [0, 0] * a.dim()
            for dim in (axis, inner_axis):
                pad[2 * (a.dim() - 1 - dim):2 * (a.dim() - dim)] = [left, plan.k - 1 - left]
            padded = F.pad(a, pad)
            terms = [padded.narrow(axis, left + d, a.shape[axis])
                     .narrow(inner_axis, left + d, a.shape[inner_axis])
                     for d in range(-left, plan.k - left)]
        a = sum(terms[1:], terms[0])
    return a


def moments(K, T, r1, r2, s1, s2):
    """ReLU: ``2 pi Kphi`` and ``Theta * 2 pi Kd`` of a hidden layer (``kernel_ops``)."""
    c = K * r1 * r2
    c = torch.where(c >= -1 + ops.COS_SNAP, c, -1.0)
    c = torch.where(c <= 1 - ops.COS_SNAP, c, 1.0)
    th = torch.acos(-c)
    return (torch.sqrt(1 - c * c) + th * c) * s1 * s2, T * th


def make_filter(plan: Plan):
    alpha = plan.sw2 / ops.TWO_PI / plan.k ** plan.nd

    def filtered(f, w):
        K = shift_filter(f, plan) * alpha + plan.sb2
        return K, K + shift_filter(w, plan) * alpha
    return filtered


def readout_moments(K, T, r1, r2, s1, s2):
    f, w = moments(K, T, r1, r2, s1, s2)
    return f + w


class Fused:
    """The compiled stages for one plan and one full block shape."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.stages = [torch.compile(fn, dynamic=False) for fn in
                       (moments, make_filter(plan), readout_moments)]

    def unpadded(self, t: torch.Tensor) -> torch.Tensor:
        if not (self.plan.gap and not self.plan.circular) or t.shape[-1] == 1:
            return t
        return t[(Ellipsis, *(slice(0, m) for m in self.plan.inner_n))]

    def block(self, K1: torch.Tensor, factors) -> torch.Tensor:
        plan, (mom, filt, last) = self.plan, self.stages
        K = T = self.unpadded(K1)
        for layer, fac in enumerate(factors):
            fac = [self.unpadded(f) for f in fac]
            if layer == len(factors) - 1:
                f = last(K, T, *fac)
                dims = list(range(plan.nd)) + list(range(plan.nd + 2, f.dim()))
                return f.sum(dims) * (plan.sw2 / ops.TWO_PI / plan.npos) + plan.sb2
            K, T = filt(*mom(K, T, *fac))
        raise AssertionError("unreachable")


def fused_kernel(arch, x: torch.Tensor, nbytes: int, fused: dict) -> torch.Tensor:
    """``kernels.kernel(arch, x, None, "ntk")`` with full blocks through ``Fused``."""
    plan = Plan(arch, tuple(x.shape[1:]))
    n = len(x)
    b1, b2 = kernels._block_sizes(plan, n, n, nbytes)
    out = torch.zeros(n, n, dtype=torch.float64)
    if (b1, b2) not in fused:
        fused[(b1, b2)] = Fused(plan)
    with torch.no_grad():
        side = Side(plan, x)
        ws = ops.Workspace(kernels._BUFFERS, b1 * b2 * plan.pair_elems + 2 * plan.slack,
                           x.device, plan.sb2)
        outers = {i0: plan.outer_block(side, i0, min(n, i0 + b1)) for i0 in range(0, n, b1)}
        for (j0, j1), rows in kernels._columns(n, n, b1, b2, True):
            inner = plan.inner_block(side, j0, j1)
            for i0, i1 in rows:
                outer = outers[i0]
                if (outer["b"], inner["b"]) != (b1, b2):
                    out[i0:i1, j0:j1] = plan.pair_block(ws, outer, inner, True)
                    continue
                K1 = first_layer(plan, ws, outer, inner)
                out[i0:i1, j0:j1] = fused[(b1, b2)].block(
                    K1, plan._pair_factors(outer["fac"], inner["fac"]))
    return torch.triu(out) + torch.triu(out, 1).T


def first_layer(plan: Plan, ws: ops.Workspace, outer: dict, inner: dict) -> torch.Tensor:
    """The block's first-layer covariance, as ``Plan.pair_block`` computes it."""
    b1, b2 = outer["b"], inner["b"]
    K1 = ws.view(plan.geometry((b1, b2)), 0)
    if plan.gap and not plan.circular:
        torch.mm(outer["A"], inner["B"].T, out=K1.view(plan.P * b1, b2 * plan.I))
    else:
        torch.bmm(outer["A"], inner["B"], out=K1.view(plan.P, b1, b2 * plan.I))
    return K1


def stage_passes(x: torch.Tensor, nbytes: int, fused: Fused) -> list[float]:
    """One full block's three stages, each in elementwise passes over that block."""
    with torch.no_grad():
        return _stage_passes(x, nbytes, fused)


def _stage_passes(x: torch.Tensor, nbytes: int, fused: Fused) -> list[float]:
    plan = fused.plan
    b1, b2 = kernels._block_sizes(plan, len(x), len(x), nbytes)
    side = Side(plan, x)
    ws = ops.Workspace(kernels._BUFFERS, b1 * b2 * plan.pair_elems + 2 * plan.slack,
                       x.device, plan.sb2)
    outer, inner = plan.outer_block(side, 0, b1), plan.inner_block(side, b1, b1 + b2)
    K = T = fused.unpadded(first_layer(plan, ws, outer, inner))
    facs = [[fused.unpadded(f) for f in fac]
            for fac in plan._pair_factors(outer["fac"], inner["fac"])]
    mom, filt, last = fused.stages
    f, w = mom(K, T, *facs[0])
    K2, T2 = filt(f, w)
    a, b, c = (torch.rand(K.numel(), dtype=torch.float64) for _ in range(3))
    calls = ((mom, (K, T, *facs[0])), (filt, (f, w)), (last, (K2, T2, *facs[1])),
             (torch.mul, (a, b)))
    times = []
    for fn, args in calls:
        fn(*args)
        t = time.perf_counter()
        for _ in range(20):
            fn(*args) if fn is not torch.mul else torch.mul(a, b, out=c)
        times.append(time.perf_counter() - t)
    return [s / times[-1] for s in times[:-1]]


def arccos_alone(out) -> None:
    """One block's worth (129,600 elements, 1 MiB) of ``acos(a * b / 2) * b``: ATen's four
    operations against the one loop Inductor compiles, and a multiplication pass."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.rand(129600, dtype=torch.float64, generator=g) for _ in range(2))
    c = torch.empty_like(a)

    def chain(a, b):
        return torch.acos(a * b * 0.5) * b

    def aten_acos():
        torch.acos(a, out=c)

    def aten_mul():
        torch.mul(a, b, out=c)

    compiled = torch.compile(chain, dynamic=False)
    with torch.no_grad():
        for name, fn, args in (("eager ops", chain, (a, b)), ("compiled loop", compiled, (a, b)),
                               ("ATen acos alone", aten_acos, ()),
                               ("multiplication pass", aten_mul, ())):
            for _ in range(10):
                fn(*args)
            t = time.perf_counter()
            for _ in range(2000):
                fn(*args)
            out(f"# acos(a * b / 2) * b over 1 MiB, {name}: "
                f"{(time.perf_counter() - t) / 2000 * 1e6:.1f} us")


def profile_eager(out, n: int) -> None:
    """torch.profiler's table of the eager headline kernel (circular) by operation."""
    from torch.profiler import profile

    arch = make("cnn_gap", "circular", "relu")
    x = torch.randn(n, 1, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    kernels.kernel(arch, x, None, "ntk")
    with profile() as prof:
        kernels.kernel(arch, x, None, "ntk")
    out(f"# profile of the eager cnn_gap circular relu ntk Gram matrix, n = {n}")
    out(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--paddings", default="circular,zeros")
    ap.add_argument("--block-kib", default="1024,8192",
                    help="bytes of one pair array of a block, in KiB, for the fused runs")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--arccos-only", action="store_true",
                    help="only time the arccos chain, eager against compiled")
    ap.add_argument("--profile-eager", action="store_true",
                    help="only profile the eager kernel (n inputs) by operation")
    ap.add_argument("--log", default=str(ROOT / "benchmarks" / "logs" /
                                         f"bench_kernel_fusion_{datetime.date.today()}.log"))
    args = ap.parse_args()
    log = open(args.log, "a")  # noqa: SIM115 - closed at exit

    def out(line: str) -> None:
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()

    cpu = torch.device("cpu")
    out(f"# {datetime.datetime.now().isoformat(timespec='seconds')} {' '.join(sys.argv)}")
    out(f"# machine: {machine()}; torch {torch.__version__}; {torch.get_num_threads()} "
        f"threads; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; load average "
        f"{os.getloadavg()[0]:.2f} at start")
    if args.arccos_only:
        arccos_alone(out)
        return
    if args.profile_eager:
        profile_eager(out, args.n)
        return
    out(f"# cnn_gap ntk relu depth 2 filter 3, n = {args.n} inputs of (1, 40), float64")
    out(f"{'padding':8} {'variant':7} {'block KiB':>9} {'compile s':>9} {'seconds':>8} "
        f"{'passes':>6} {'rel':>8}  stage passes (moments, filter, readout)")
    for padding in args.paddings.split(","):
        arch = make("cnn_gap", padding, "relu")
        x = torch.randn(args.n, 1, 40, generator=torch.Generator().manual_seed(0),
                        dtype=torch.float64)
        kernels.kernel(arch, x[:8], None, "ntk")
        best, eager = math.inf, None
        for _ in range(args.repeat):
            t = time.perf_counter()
            eager = kernels.kernel(arch, x, None, "ntk")
            best = min(best, time.perf_counter() - t)
        total, block = layout(arch, (1, 40), args.n, cpu, None)
        out(f"{padding:8} {'eager':7} {block * 8 // 1024:>9} {'-':>9} {best:>8.2f} "
            f"{best / roofline(total, block, cpu):>6.1f} {'-':>8}")
        for kib in (int(k) for k in args.block_kib.split(",")):
            torch.compiler.reset()  # each variant compiles afresh (dynamo's recompile limit)
            nbytes, fused = kib * 1024, {}
            t = time.perf_counter()
            fused_kernel(arch, x, nbytes, fused)
            first = time.perf_counter() - t
            best = math.inf
            for _ in range(args.repeat):
                t = time.perf_counter()
                k = fused_kernel(arch, x, nbytes, fused)
                best = min(best, time.perf_counter() - t)
            rel = ((k - eager).abs().max() / eager.abs().max()).item()
            total, block = layout(arch, (1, 40), args.n, cpu, nbytes)
            stages = stage_passes(x, nbytes, next(iter(fused.values())))
            out(f"{padding:8} {'fused':7} {kib:>9} {first:>9.1f} {best:>8.2f} "
                f"{best / roofline(total, block, cpu):>6.1f} {rel:>8.1e}  "
                + ", ".join(f"{s:.1f}" for s in stages))
    out(f"# load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
