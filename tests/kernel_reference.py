"""The analytic kernels as they were before the optimisation of issue 23: a frozen copy of
``dmisearch_builtins.kernels`` (the pre-optimisation reference), kept for the exactness
tests (``tests/test_kernels.py``) and ``benchmarks/bench_kernels.py``. Do not change its
numbers; it is trimmed to ``kernel`` and ``kernel_diag``.

Conventions are those of ``dmisearch_builtins.kernels``. Here every covariance over position
pairs is carried in full: a filter pads (wraps or zero-fills) and sums shifted copies, the
moments are computed from ``torch.where``-guarded square roots, and pairs are processed in
blocks of at most ``max_block_bytes`` per array (capped at 1 MiB on the CPU).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

#: ReLU cosines this close to +-1 are snapped to +-1 (``dmisearch_builtins.kernels``).
_COS_SNAP = 1e-12
#: On the CPU, blocks stay near cache size: several times faster than large blocks, whose
#: fresh allocations are dominated by page faults and memory traffic.
_CPU_BLOCK_BYTES = 2**20
_DTYPE = torch.float64


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------


def _pad(t: torch.Tensor, dim: int, left: int, right: int, circular: bool) -> torch.Tensor:
    """Pad ``dim`` by ``left`` and ``right`` entries: wrapped around, or zeros."""
    n = t.shape[dim]
    if circular:
        return torch.cat([t.narrow(dim, n - left, left), t, t.narrow(dim, 0, right)], dim)
    shape = list(t.shape)
    shape[dim] = n + left + right
    out = t.new_zeros(shape)
    out.narrow(dim, left, n).copy_(t)
    return out


def _filter_mean(t: torch.Tensor, axes: Sequence[tuple[int, ...]], k: int,
                 circular: bool) -> torch.Tensor:
    """``(1/k^nd) sum_delta t[p + delta, p' + delta]`` over the offsets ``delta`` in
    ``-left .. k-1-left`` of every spatial axis; ``axes`` lists, per spatial axis, the dims
    offset together (one for same-position arrays, two for position pairs). Out-of-range
    indices wrap (circular) or contribute zero."""
    left = (k - 1) // 2
    for dims in axes:
        sizes = [t.shape[d] for d in dims]
        padded = t
        for d in dims:
            padded = _pad(padded, d, left, k - 1 - left, circular)
        acc = None
        for start in range(k):  # padded index start + p is original index p + start - left
            s = padded
            for d, n in zip(dims, sizes, strict=True):
                s = s.narrow(d, start, n)
            acc = s.clone() if acc is None else acc.add_(s)
        t = acc
    return t / k ** len(axes) if axes else t


def _moments(activation: str, k12: torch.Tensor, v1: torch.Tensor, v2: torch.Tensor,
             need_d: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``E[phi(u) phi(v)]`` and (if ``need_d``) ``E[phi'(u) phi'(v)]`` for centred Gaussian
    ``(u, v)`` with variances ``v1``, ``v2`` and covariance ``k12`` (broadcast together)."""
    if activation == "relu":
        norm = torch.sqrt(v1 * v2)
        pos = norm > 0
        cos = torch.where(pos, k12 / torch.where(pos, norm, torch.ones_like(norm)), 0.0)
        cos = cos.clamp_(-1.0, 1.0)
        cos = torch.where(cos > 1 - _COS_SNAP, 1.0, cos)
        cos = torch.where(cos < -1 + _COS_SNAP, -1.0, cos)
        theta = torch.arccos(cos)
        pi_theta = math.pi - theta
        kphi = norm * (torch.sin(theta) + pi_theta * cos) / (2 * math.pi)
        kd = pi_theta / (2 * math.pi) if need_d else None
        return kphi, kd
    if activation == "erf":
        a = torch.sqrt((1 + 2 * v1) * (1 + 2 * v2))
        kphi = torch.arcsin((2 * k12 / a).clamp_(-1.0, 1.0)) * (2 / math.pi)
        kd = None
        if need_d:
            # (1 + 2 v1)(1 + 2 v2) - 4 k12^2, with the PSD part v1 v2 - k12^2 clamped at 0
            det = 1 + 2 * (v1 + v2) + 4 * (v1 * v2 - k12 * k12).clamp_(min=0.0)
            kd = (4 / math.pi) / torch.sqrt(det)
        return kphi, kd
    raise ValueError(f"activation {activation!r} has no closed-form kernel")


def _recursion(arch, X: torch.Tensor, variances: Sequence[tuple] | None,
               filt: Callable[[torch.Tensor], torch.Tensor],
               readout: Callable[[torch.Tensor], torch.Tensor],
               ntk: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Layer recursion from the input covariance ``X``.

    ``variances[l]`` is the pair ``(K(x,x), K(x',x'))`` of same-position variances of hidden
    layer ``l``, broadcastable against ``X``; None means every pair is a self-pair (``X``
    holds same-position self-covariances) and the variances are the covariances themselves.
    Returns the readout's kernel and the hidden layers' pre-activation covariances.
    """
    sw2, sb2 = float(arch.sigma_w) ** 2, float(arch.sigma_b) ** 2
    depth = int(arch.depth)
    agg = readout if depth == 0 else filt
    K = agg(X) * sw2 + sb2
    T = K if ntk else None
    hidden = []
    for layer in range(depth):
        hidden.append(K)
        v1, v2 = (K, K) if variances is None else variances[layer]
        kphi, kd = _moments(arch.activation, K, v1, v2, ntk)
        agg = readout if layer == depth - 1 else filt
        K = agg(kphi).mul_(sw2).add_(sb2)
        del kphi
        if ntk:
            T = agg(T * kd).mul_(sw2).add_(K)
    return (T if ntk else K), hidden


class _Plan:
    """How one architecture's kernel is laid out for one input shape."""

    def __init__(self, arch, shape: tuple[int, ...]):
        self.arch = arch
        self.fcn = arch.name == "fcn"
        self.gap = arch.name == "cnn_gap"
        self.spatial = () if self.fcn else tuple(shape[1:])
        self.nd = len(self.spatial)
        self.P = math.prod(self.spatial)
        self.d = math.prod(shape)
        self.circular = (not self.fcn) and arch.padding == "circular"
        self.k = 1 if self.fcn else int(arch.filter_size)

    # -- per-pair size (elements) of the largest arrays --------------------------------------
    def pair_elems(self) -> int:
        """Elements per input pair of the largest array: the covariance, or its padded copy
        along one spatial axis inside a filter."""
        grow = max(((n + self.k - 1) / n for n in self.spatial), default=1.0)
        if self.gap:
            return math.ceil(self.P * self.P * grow * grow)
        return math.ceil(self.P * grow)

    # -- filter / readout along the layout's position axes ----------------------------------
    def _ops(self, lead: int, pairs: bool):
        if self.fcn:
            ident = lambda t: t  # noqa: E731
            return ident, ident
        nd = self.nd
        if pairs:
            axes = [(lead + i, lead + nd + i) for i in range(nd)]
        else:
            axes = [(lead + i,) for i in range(nd)]

        def filt(t):
            return _filter_mean(t, axes, self.k, self.circular)

        def readout(t):
            return t.flatten(lead).mean(-1)

        return filt, readout

    # -- self variances K(x, x)[p, p] of every hidden layer ---------------------------------
    def self_variances(self, x: torch.Tensor, max_block_bytes: int) -> list[torch.Tensor]:
        """Per hidden layer, ``(n, *spatial)`` (fcn: ``(n,)``) same-position variances."""
        n = x.shape[0]
        diag_elems = math.ceil(self.P * max(((n + self.k - 1) / n for n in self.spatial),
                                            default=1.0))
        rows = max(1, max_block_bytes // (8 * diag_elems))
        filt, readout = self._ops(1, pairs=False)
        per_layer: list[list[torch.Tensor]] = [[] for _ in range(self.arch.depth)]
        for i in range(0, n, rows):
            X = self.same_position_self(x[i:i + rows])
            _, hidden = _recursion(self.arch, X, None, filt, readout, ntk=False)
            for layer, h in enumerate(hidden):
                per_layer[layer].append(h)
        return [torch.cat(h) for h in per_layer]

    def same_position_self(self, x: torch.Tensor) -> torch.Tensor:
        if self.fcn:
            return (x.flatten(1) ** 2).sum(1) / self.d
        c = x.shape[1]
        return (x * x).sum(1) / c  # (n, *spatial)

    # -- pair kernel of a block --------------------------------------------------------------
    def pair_block(self, x1, x2, s1, s2, ntk: bool) -> torch.Tensor:
        b1, b2 = x1.shape[0], x2.shape[0]
        sp, nd = self.spatial, self.nd
        if self.fcn:
            X = x1.flatten(1) @ x2.flatten(1).T / self.d
            var = [(a[:, None], b[None, :]) for a, b in zip(s1, s2, strict=True)]
        else:
            c = x1.shape[1]
            f1, f2 = x1.flatten(2), x2.flatten(2)
            if self.gap:
                X = torch.einsum("icp,jcq->ijpq", f1, f2).reshape(b1, b2, *sp, *sp) / c
                one = (1,) * nd
                var = [(a.reshape(b1, 1, *sp, *one), b.reshape(1, b2, *one, *sp))
                       for a, b in zip(s1, s2, strict=True)]
            else:
                X = torch.einsum("icp,jcp->ijp", f1, f2).reshape(b1, b2, *sp) / c
                var = [(a[:, None], b[None]) for a, b in zip(s1, s2, strict=True)]
        filt, readout = self._ops(2, pairs=self.gap)
        out, _ = _recursion(self.arch, X, var, filt, readout, ntk)
        return out

    # -- self kernel (diagonal) of a block ---------------------------------------------------
    def self_block(self, x, s, ntk: bool) -> torch.Tensor:
        if not self.gap:
            filt, readout = self._ops(1, pairs=False)
            out, _ = _recursion(self.arch, self.same_position_self(x), None, filt, readout,
                                ntk)
            return out
        n, c, sp, one = x.shape[0], x.shape[1], self.spatial, (1,) * self.nd
        f = x.flatten(2)
        X = torch.einsum("icp,icq->ipq", f, f).reshape(n, *sp, *sp) / c
        var = [(a.reshape(n, *sp, *one), a.reshape(n, *one, *sp)) for a in s]
        filt, readout = self._ops(1, pairs=True)
        out, _ = _recursion(self.arch, X, var, filt, readout, ntk)
        return out


def _prepare(arch, kind: str, xs: Sequence[torch.Tensor]) -> tuple[_Plan, bool]:
    return _Plan(arch, tuple(xs[0].shape[1:])), kind == "ntk"


def _working_block(max_block_bytes: int, device: torch.device) -> int:
    return min(max_block_bytes, _CPU_BLOCK_BYTES) if device.type == "cpu" else max_block_bytes


def kernel(arch, x1: torch.Tensor, x2: torch.Tensor | None, kind: str, *,
           max_block_bytes: int = 256 * 2**20) -> torch.Tensor:
    """Infinite-width ``kind`` ("nngp" or "ntk") kernel of ``arch`` between ``x1``
    ``(n1, *input_shape)`` and ``x2`` ``(n2, *input_shape)`` (None: ``x1``, and the result is
    exactly symmetric). Returns ``(n1, n2)`` float64 on ``x1``'s device."""
    device = x1.device
    x1 = x1.to(device=device, dtype=_DTYPE)
    sym = x2 is None
    x2 = x1 if sym else x2.to(device=device, dtype=_DTYPE)
    plan, ntk = _prepare(arch, kind, (x1, x2))
    n1, n2 = x1.shape[0], x2.shape[0]
    if n1 == 0 or n2 == 0:
        return torch.zeros(n1, n2, dtype=_DTYPE, device=device)
    max_block_bytes = _working_block(max_block_bytes, device)
    s1 = plan.self_variances(x1, max_block_bytes)
    s2 = s1 if sym else plan.self_variances(x2, max_block_bytes)
    out = torch.zeros(n1, n2, dtype=_DTYPE, device=device)
    cap = max(1, max_block_bytes // (8 * plan.pair_elems()))
    b2 = max(1, min(n2, cap))
    b1 = max(1, min(n1, cap // b2))
    with torch.no_grad():
        for i in range(0, n1, b1):
            for j in range(0, n2, b2):
                if sym and j + b2 <= i:  # strictly below the diagonal: mirrored below
                    continue
                out[i:i + b1, j:j + b2] = plan.pair_block(
                    x1[i:i + b1], x2[j:j + b2], [s[i:i + b1] for s in s1],
                    [s[j:j + b2] for s in s2], ntk)
    if sym:
        out = torch.triu(out) + torch.triu(out, 1).T
    return out


def kernel_diag(arch, x: torch.Tensor, kind: str, *,
                max_block_bytes: int = 256 * 2**20) -> torch.Tensor:
    """``kernel(arch, x_i, x_i, kind)`` for every input: ``(n,)`` float64 on ``x``'s device."""
    x = x.to(dtype=_DTYPE)
    plan, ntk = _prepare(arch, kind, (x,))
    max_block_bytes = _working_block(max_block_bytes, x.device)
    s = plan.self_variances(x, max_block_bytes) if plan.gap else None
    rows = max(1, max_block_bytes // (8 * plan.pair_elems()))
    parts = []
    with torch.no_grad():
        for i in range(0, x.shape[0], rows):
            parts.append(plan.self_block(x[i:i + rows],
                                         None if s is None else [a[i:i + rows] for a in s],
                                         ntk))
    if not parts:
        return torch.zeros(0, dtype=_DTYPE, device=x.device)
    return torch.cat(parts)
