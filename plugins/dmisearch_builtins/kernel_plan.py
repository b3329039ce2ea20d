"""How one architecture's analytic kernel (``kernels``) is laid out for one input shape:
the inputs' patches, self variances and factors (``Side``), and each block's first-layer
covariance and factors in the pair layout of ``kernel_ops``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dmisearch_builtins import kernel_ops as ops
from dmisearch_builtins.layers import patches, same_pad


class Plan:
    """One architecture and input shape: sizes, layout, and the per-block work."""

    def __init__(self, arch, shape: tuple[int, ...]):
        self.activation = arch.activation
        self.fcn, self.gap = arch.name == "fcn", arch.name == "cnn_gap"
        self.spatial = () if self.fcn else tuple(shape[1:])
        self.nd, self.P = len(self.spatial), math.prod(self.spatial)
        self.k = 1 if self.fcn else int(arch.filter_size)
        self.circular = (not self.fcn) and arch.padding == "circular"
        self.sw2, self.sb2 = float(arch.sigma_w) ** 2, float(arch.sigma_b) ** 2
        self.depth = int(arch.depth)
        left = (self.k - 1) // 2
        pad = max(left, self.k - 1 - left)
        self.inner_n = self.spatial if self.gap else ()
        zeros_gap = self.gap and not self.circular
        self.inner = tuple(n + pad for n in self.inner_n) if zeros_gap else self.inner_n
        self.I = math.prod(self.inner)
        self.pair_elems = self.P * self.I  # elements of a pair array per input pair
        self.slack = self.I if zeros_gap else 0
        self.npos = self.P * self.P if self.gap else self.P  # positions the readout averages
        fan_in = math.prod(shape) if self.fcn else shape[0] * self.k ** self.nd
        self.scale1 = self.sw2 / fan_in
        self.roll = _roll_index(self.spatial) if self.gap and self.circular else None
        self._geometries: dict[tuple[int, ...], ops.Geometry] = {}

    def geometry(self, mid: tuple[int, ...]) -> ops.Geometry:
        if mid not in self._geometries:
            self._geometries[mid] = ops.Geometry(self.spatial, mid, self.inner, self.inner_n,
                                                 self.k, self.circular, self.slack)
        return self._geometries[mid]

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, P, D)``: what the first layer sees at each position (fcn: the input)."""
        if self.fcn:
            return x.flatten(1)[:, None, :]
        padding = "circular" if self.circular else "zeros"
        return patches(same_pad(x, self.k, self.nd, padding), self.k, self.nd).transpose(1, 2)

    def self_recursion(self, K: torch.Tensor, ntk: bool = False,
                       readout: bool = False) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """From the first layer's self variances ``K`` ``(n, P)``: every hidden layer's
        ``(n, P)`` self variances, and with ``readout`` the kernel of each input with itself
        where only same-position pairs enter (fcn, lcn, cnn_vec)."""
        n, sp = K.shape[0], self.spatial
        K = T = K.reshape(n, *sp)
        variances, kphi, kd = [], None, None
        for layer in range(self.depth):
            variances.append(K.reshape(n, self.P))
            kphi, kd = ops.self_moments(self.activation, K, ntk)
            if layer < self.depth - 1:
                K = ops.outer_filter(kphi, self.nd, self.k, self.circular) * self.sw2 + self.sb2
                if ntk:
                    T = K + self.sw2 * ops.outer_filter(T * kd, self.nd, self.k, self.circular)
        if not readout:
            return variances, None
        if kphi is None:  # depth 0 (fcn): linear
            return variances, K.reshape(n, -1).mean(1)
        out = self.sw2 * kphi.reshape(n, -1).mean(1) + self.sb2
        if ntk:
            out += self.sw2 * (T * kd).reshape(n, -1).mean(1)
        return variances, out

    def factors(self, v: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], ...]:
        """The outer-role and inner-role factors of self variances ``v`` (module docstring of
        ``kernel_ops``): relu ``((r, s), (r, s))``, erf ``((2 q,), (q,))``."""
        if self.activation == "relu":
            r = torch.where(v > 0, v.rsqrt(), 0.0)
            s = v.sqrt()
            return (r, s), (r, s)
        q = (1 + 2 * v).rsqrt()
        return (2 * q,), (q,)

    def _pad_inner(self, t: torch.Tensor) -> torch.Tensor:
        """``(n, P, ...)`` -> ``(n, *inner, ...)`` with zeros at the pads (zeros padding)."""
        n, rest = t.shape[0], t.shape[2:]
        t = t.reshape(n, *self.spatial, *rest)
        pads = []
        for size, m in zip(reversed(self.inner), reversed(self.inner_n), strict=True):
            pads += [0, size - m]
        pads = [0, 0] * len(rest) + pads
        return F.pad(t, pads)

    def _rolled(self, t: torch.Tensor) -> torch.Tensor:
        """``(b, P, ...)`` -> ``(P, b, M, ...)``: ``t[i, p + m]`` (circular offsets)."""
        return t[:, self.roll.to(t.device)].transpose(0, 1)

    # -- blocks of a Gram matrix ---------------------------------------------------------
    def outer_block(self, side: Side, i0: int, i1: int) -> dict:
        """The rows ``i0:i1`` of a block: patches ``(P * b1, D)`` or ``(P, b1, D)`` (the
        first layer's product) and factors."""
        b = i1 - i0
        shape = (*self.spatial, b, 1) + (1,) * len(self.inner)
        A = side.A_t[:, i0:i1]
        if self.gap and not self.circular:
            A = A.reshape(self.P * b, -1)
        return {"A": A, "b": b,
                "fac": [tuple(f[:, i0:i1].view(shape) for f in fo) for fo in side.outer_t]}

    def inner_block(self, side: Side, j0: int, j1: int) -> dict:
        """The columns ``j0:j1`` of a block: the second operand of the first layer's product
        and the factors, laid out along the inner positions."""
        b = j1 - j0
        if not self.gap:
            shape = (*self.spatial, 1, b)
            return {"B": side.B_t[:, :, j0:j1], "b": b,
                    "fac": [tuple(f[:, j0:j1].view(shape) for f in fi) for fi in side.inner_t]}
        if not self.circular:
            shape = (1,) * self.nd + (1, b, *self.inner)
            return {"B": side.B_pad[j0:j1].reshape(b * self.I, -1), "b": b,
                    "fac": [tuple(f[j0:j1].view(shape) for f in fi) for fi in side.inner_pad]}
        shape = (*self.spatial, 1, b, *self.spatial)
        B = self._rolled(side.B[j0:j1]).permute(0, 3, 1, 2).reshape(self.P, -1, b * self.I)
        return {"B": B, "b": b,
                "fac": [tuple(self._rolled(f[j0:j1]).reshape(shape) for f in fi)
                        for fi in side.inner]}

    def pair_block(self, ws: ops.Workspace, outer: dict, inner: dict,
                   ntk: bool) -> torch.Tensor:
        b1, b2 = outer["b"], inner["b"]
        geo = self.geometry((b1, b2))
        K1 = ws.view(geo, 0)
        if self.gap and not self.circular:
            torch.mm(outer["A"], inner["B"].T, out=K1.view(self.P * b1, b2 * self.I))
        else:
            torch.bmm(outer["A"], inner["B"], out=K1.view(self.P, b1, b2 * self.I))
        return ops.pair_recursion(ws, geo, self.activation, self._pair_factors(
            outer["fac"], inner["fac"]), ntk, self.sw2, self.npos)

    def _pair_factors(self, fo, fi) -> list[tuple[torch.Tensor, ...]]:
        if self.activation == "relu":
            return [(o[0], i[0], o[1], i[1]) for o, i in zip(fo, fi, strict=True)]
        return [(o[0], i[0]) for o, i in zip(fo, fi, strict=True)]

    # -- self-pairs of cnn_gap (kernel_diag) ----------------------------------------------
    def diag_block(self, ws: ops.Workspace, side: Side, i0: int, i1: int,
                   ntk: bool) -> torch.Tensor:
        b = i1 - i0
        geo = self.geometry((b,))
        A = side.A[i0:i1]  # (b, P, D)
        if self.circular:
            B = self._rolled(side.B[i0:i1]).transpose(0, 1)  # (b, P, M, D)
            G = (A[:, :, None, :] @ B.transpose(-1, -2))[:, :, 0]
        else:
            G = A @ side.B_pad[i0:i1].transpose(1, 2)
        ws.view(geo, 0).view(self.P, b, self.I).copy_(G.transpose(0, 1))
        outer_shape = (*self.spatial, b) + (1,) * len(self.inner)
        fo = [tuple(f[:, i0:i1].view(outer_shape) for f in fs) for fs in side.outer_t]
        if self.circular:
            shape = (*self.spatial, b, *self.spatial)
            fi = [tuple(self._rolled(f[i0:i1]).reshape(shape) for f in fs) for fs in side.inner]
        else:
            shape = (1,) * self.nd + (b, *self.inner)
            fi = [tuple(f[i0:i1].view(shape) for f in fs) for fs in side.inner_pad]
        return ops.pair_recursion(ws, geo, self.activation, self._pair_factors(fo, fi), ntk,
                                  self.sw2, self.npos)


class Side:
    """One set of inputs, prepared for either role in a pair: first-layer patches (``A``
    scaled by ``sigma_w^2 / fan_in``, ``B`` not; both end with the entry ``sigma_b``),
    hidden layers' self variances, and the factors of the moments."""

    def __init__(self, plan: Plan, x: torch.Tensor):
        self.plan = plan
        a = plan.patches(x)
        bias = torch.full((*a.shape[:2], 1), math.sqrt(plan.sb2), dtype=a.dtype,
                          device=a.device)
        self.A = torch.cat([a * plan.scale1, bias], -1)  # (n, P, D)
        self.B = torch.cat([a, bias], -1)
        self.K1 = (self.A * self.B).sum(-1)  # first layer's self variances (n, P)
        self.variances, _ = plan.self_recursion(self.K1)
        facs = [plan.factors(v) for v in self.variances]
        self.outer = [f[0] for f in facs]
        self.inner = [f[1] for f in facs]
        self.A_t = self.A.transpose(0, 1).contiguous()  # (P, n, D)
        self.outer_t = [tuple(f.T.contiguous() for f in fs) for fs in self.outer]
        if not plan.gap:
            self.B_t = self.B.permute(1, 2, 0).contiguous()  # (P, D, n)
            self.inner_t = [tuple(f.T.contiguous() for f in fs) for fs in self.inner]
        elif not plan.circular:
            self.B_pad = plan._pad_inner(self.B).reshape(len(x), plan.I, -1)
            self.inner_pad = [tuple(plan._pad_inner(f) for f in fs) for fs in self.inner]

    def self_kernel(self, ntk: bool) -> torch.Tensor:
        """Each input's kernel with itself, where only same-position pairs enter."""
        return self.plan.self_recursion(self.K1, ntk, readout=True)[1]


def _roll_index(spatial: tuple[int, ...]) -> torch.Tensor:
    """``(P, P)``: the flat position ``(p + m) mod spatial`` of position ``p``, offset ``m``."""
    grids = torch.meshgrid(*[torch.arange(n) for n in spatial], indexing="ij")
    coords = torch.stack([g.flatten() for g in grids], -1)  # (P, nd)
    summed = (coords[:, None, :] + coords[None, :, :]) % torch.tensor(spatial)
    strides = torch.tensor([math.prod(spatial[a + 1:]) for a in range(len(spatial))])
    return (summed * strides).sum(-1)
