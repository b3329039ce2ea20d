"""The array work of the analytic kernels (``kernels``): the pair layout, the filter as
shifted in-place adds, and the activations' moments as a few fused passes.

Layout. A *pair array* holds one covariance for a set of input pairs, float64, shaped
``(*outer, *mid, *inner)`` and contiguous: ``outer`` are the spatial positions ``p`` of the
first input of each pair (empty for fcn), ``mid`` the input pairs (``(b1, b2)`` for a block
of a Gram matrix, ``(b,)`` for self-pairs), ``inner`` the positions of the second input
where the readout pools over position pairs (cnn_gap; empty for fcn, lcn, cnn_vec, which
only need same-position pairs):

* circular padding: ``inner`` are the offsets ``m = p' - p`` (mod the map's size, per
  axis), so that a filter, which moves ``p`` and ``p'`` together, moves ``p`` alone;
* zeros padding: ``inner`` are the positions ``p'`` themselves, each axis followed by
  ``pad = max(left, right)`` entries that are zero in every array a filter reads, so that
  ``p' + delta`` outside the map reads a zero (the one before index 0 of an axis is the
  previous row's last pad).

A filter ``(1/k^nd) sum_delta A[p + delta, p' + delta]`` is then, axis by axis (separable),
``k`` adds of shifted strided views: ``delta`` restricts (zeros) or splits in two wrapped
ranges (circular) the outer axis, and moves the inner axis by a constant flat offset (zeros)
or not at all (circular). Buffers carry ``slack`` zeros on both ends so that those offsets
never leave them. Outputs at inner pads are garbage, harmless where a factor is zero there
and cleared (``zero_pads``) where the array is read by a filter.

Moments. Per hidden layer the second moments of the activation are computed from the
covariance ``K`` and per-input factors of the self variances (broadcast over the pair
array): ReLU ``r = 1/sqrt(v)`` (0 where ``v = 0``) and ``s = sqrt(v)``: ``cos = K r1 r2``,
``theta' = pi - theta = arccos(-cos)``, ``2 pi Kphi = s1 s2 (sqrt(1 - cos^2) + theta' cos)``
and ``2 pi Kd = theta'``; erf ``q = 1/sqrt(1 + 2 v)`` (0 at pads): ``a = 2 K q1 q2``,
``(pi/2) Kphi = arcsin a`` and ``(pi/2) Kd = 2 q1 q2 / sqrt(1 - a^2)``. The ReLU cosine is
snapped to +-1 within ``COS_SNAP`` (which also clamps it) by two ``threshold_`` passes
around a negation.
"""

from __future__ import annotations

import math

import torch

#: ReLU cosines this close to +-1 are snapped to +-1 (see ``kernels``' docstring).
COS_SNAP = 1e-12
# threshold_(x, th, v) keeps x where x > th: on cos, keep cos >= -1 + COS_SNAP; on -cos,
# keep -cos >= -(1 - COS_SNAP), i.e. cos <= 1 - COS_SNAP (the bounds themselves are kept)
_KEEP_ABOVE_BOTTOM = math.nextafter(-1 + COS_SNAP, -math.inf)
_KEEP_NEG_BELOW_TOP = math.nextafter(-(1 - COS_SNAP), -math.inf)
TWO_PI = 2 * math.pi


class Geometry:
    """The shape of the pair arrays of one block and the filter's shifted views.

    ``outer`` and ``inner`` as in the module docstring (``inner`` padded sizes for zeros
    padding), ``mid`` the shape of the pairs. ``inner_n`` are the unpadded inner sizes.
    """

    def __init__(self, outer: tuple[int, ...], mid: tuple[int, ...], inner: tuple[int, ...],
                 inner_n: tuple[int, ...], k: int, circular: bool, slack: int):
        self.outer, self.mid, self.inner, self.inner_n = outer, mid, inner, inner_n
        self.shape = (*outer, *mid, *inner)
        self.numel = math.prod(self.shape)
        self.P, self.M, self.I = math.prod(outer), math.prod(mid), math.prod(inner)
        self.k, self.circular, self.slack = k, circular, slack
        self.left = (k - 1) // 2
        self.passes = [self._axis_ops(a) for a in range(len(outer))] if k > 1 else []

    def _axis_ops(self, a: int) -> list[tuple[tuple, tuple, int, int]]:
        """(size, stride, out offset, source offset) of the views added along outer axis
        ``a``; the first one (delta = 0) covers the whole array."""
        n = self.outer[a]
        step = math.prod(self.outer[a + 1:]) * self.M * self.I  # outer stride of axis a
        pre = math.prod(self.outer[:a])
        inner_step = 0
        if self.inner and not self.circular:  # zeros: p' moves with p
            inner_step = math.prod(self.inner[a + 1:])
        ops = []
        for delta in sorted(range(-self.left, self.k - self.left), key=abs):
            if self.circular:  # out rows [lo, hi) read rows [lo + delta, hi + delta) mod n
                segs = [(0, delta % n, n - delta % n), (n - delta % n, 0, delta % n)]
            else:
                lo, hi = max(0, -delta), min(n, n - delta)
                segs = [(lo, lo + delta, hi - lo)]
            for out_row, src_row, rows in segs:
                if rows > 0:
                    ops.append(((pre, rows, step), (n * step, step, 1), out_row * step,
                                src_row * step + delta * inner_step))
        return ops


class Workspace:
    """The scratch buffers of the blocks (flat, zeroed, ``slack`` included) and the views of
    them that the blocks of one geometry use, made once."""

    def __init__(self, count: int, elems: int, device: torch.device, sb2: float):
        self.bufs = [torch.zeros(elems, dtype=torch.float64, device=device)
                     for _ in range(count)]
        self.sb2 = torch.tensor(sb2, dtype=torch.float64, device=device)
        self.one = torch.ones((), dtype=torch.float64, device=device)
        self._views: dict[tuple, object] = {}

    def ones(self, n: int) -> torch.Tensor:
        """A vector of ``n`` ones."""
        if n not in self._views:
            self._views[n] = torch.ones(n, dtype=torch.float64, device=self.one.device)
        return self._views[n]

    def views(self, geo: Geometry) -> list[torch.Tensor]:
        """The pair arrays the buffers hold, by buffer."""
        if geo not in self._views:
            self._views[geo] = [b.narrow(0, geo.slack, geo.numel).view(geo.shape)
                                for b in self.bufs]
        return self._views[geo]

    def view(self, geo: Geometry, i: int) -> torch.Tensor:
        """The pair array held by buffer ``i``."""
        return self.views(geo)[i]

    def shifted(self, geo: Geometry, axis: int, src: int, dst: int) -> list:
        """``(dst view, src view)`` of the shifted adds along ``axis`` but the first."""
        key = (geo, axis, src, dst)
        if key not in self._views:
            s, d = self.bufs[src], self.bufs[dst]
            self._views[key] = [(d.as_strided(size, stride, geo.slack + o_off),
                                 s.as_strided(size, stride, geo.slack + s_off))
                                for size, stride, o_off, s_off in geo.passes[axis][1:]]
        return self._views[key]


def filter_into(ws: Workspace, geo: Geometry, src: int, dst: int, tmp: int, alpha: float,
                init: torch.Tensor, weight: int | None = None) -> None:
    """Buffer ``dst`` = ``init + alpha * sum_delta shift_delta(src * weight)`` over the
    filter's offsets (no ``1/k^nd``: fold it into ``alpha``); ``init`` a 0-dim tensor or a
    pair array, ``weight`` (a buffer) None for 1. ``tmp`` is scratch (2-D maps)."""
    v = ws.views(geo)
    if weight is not None and len(geo.passes) != 1:
        v[src].mul_(v[weight])
        weight = None
    if not geo.passes:
        torch.add(init, v[src], alpha=alpha, out=v[dst])
        return
    cur = src
    for axis in range(len(geo.passes)):
        last = axis == len(geo.passes) - 1
        out = dst if last else tmp
        a = alpha if last else 1.0
        if weight is not None:
            torch.addcmul(init, v[cur], v[weight], value=a, out=v[out])
            wviews = ws.shifted(geo, axis, weight, out)
            for (o, s), (_, w) in zip(ws.shifted(geo, axis, cur, out), wviews, strict=True):
                o.addcmul_(s, w, value=a)
        else:
            if last:
                torch.add(init, v[cur], alpha=a, out=v[out])
            else:
                v[out].copy_(v[cur])
            for o, s in ws.shifted(geo, axis, cur, out):
                o.add_(s, alpha=a)
        cur = out


def zero_pads(geo: Geometry, a: torch.Tensor) -> None:
    """Clear the inner pads (zeros padding) of the pair array ``a``."""
    if geo.circular:
        return
    lead = len(geo.outer) + len(geo.mid)
    for axis, (n, size) in enumerate(zip(geo.inner_n, geo.inner, strict=True)):
        if size > n:
            a.narrow(lead + axis, n, size - n).zero_()


# --------------------------------------------------------------------------------------------
# moments
# --------------------------------------------------------------------------------------------


def relu_angles(K: torch.Tensor, r1: torch.Tensor, r2: torch.Tensor, c: torch.Tensor,
                th: torch.Tensor, f: torch.Tensor, one: torch.Tensor) -> None:
    """Into ``c``: ``-cos`` (snapped); ``th``: ``theta' = pi - theta``; ``f``:
    ``sin theta + (pi - theta) cos theta``. ``c``, ``th``, ``f`` are pair arrays, ``one`` a
    0-dim 1."""
    torch.mul(K, r1, out=c)
    c.mul_(r2)
    torch.threshold_(c, _KEEP_ABOVE_BOTTOM, -1.0)
    c.neg_()
    torch.threshold_(c, _KEEP_NEG_BELOW_TOP, -1.0)
    torch.acos(c, out=th)
    torch.addcmul(one, c, c, value=-1.0, out=f)  # sin theta = sqrt(1 - cos^2)
    f.sqrt_()
    f.addcmul_(th, c, value=-1.0)


def erf_args(K: torch.Tensor, q1: torch.Tensor, q2: torch.Tensor, a: torch.Tensor,
             f: torch.Tensor) -> None:
    """Into ``a``: ``2 K q1 q2`` (``q1`` carries the 2), clamped; ``f``: ``arcsin a``."""
    torch.mul(K, q1, out=a)
    a.mul_(q2)
    a.clamp_(-1.0, 1.0)
    torch.asin(a, out=f)


def erf_scale_tangent(T: torch.Tensor, a: torch.Tensor, q1: torch.Tensor, q2: torch.Tensor,
                      w: torch.Tensor, one: torch.Tensor) -> None:
    """``T *= 2 q1 q2 / sqrt(1 - a^2)`` (``(pi/2) Kd``; ``q1`` carries the 2), ``w`` scratch,
    ``one`` a 0-dim 1."""
    torch.addcmul(one, a, a, value=-1.0, out=w)
    w.sqrt_()
    T.div_(w)
    T.mul_(q1)
    T.mul_(q2)


def self_moments(activation: str, K: torch.Tensor,
                 need_d: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Kphi and Kd at self-pairs (both inputs the same, the same position): variance ``K``."""
    if activation == "relu":  # theta = 0
        kd = torch.full_like(K, 0.5) if need_d else None
        return K * math.pi / TWO_PI, kd
    a = 1 + 2 * K
    kphi = torch.arcsin((2 * K / a).clamp_(-1.0, 1.0)) * (2 / math.pi)
    kd = (4 / math.pi) / torch.sqrt(1 + 4 * K) if need_d else None
    return kphi, kd


def outer_filter(t: torch.Tensor, nd: int, k: int, circular: bool) -> torch.Tensor:
    """``(1/k^nd) sum_delta t[..., p + delta]`` over the last ``nd`` axes of a small array
    (the self-variance recursion; not the hot path)."""
    left = (k - 1) // 2
    for axis in range(t.dim() - nd, t.dim()):
        acc = torch.zeros_like(t)
        n = t.shape[axis]
        for delta in range(-left, k - left):
            if circular:
                acc += torch.roll(t, -delta, axis)
                continue
            lo, hi = max(0, -delta), min(n, n - delta)
            acc.narrow(axis, lo, hi - lo).add_(t.narrow(axis, lo + delta, hi - lo))
        t = acc
    return t / k ** nd


def pair_sum(ws: Workspace, geo: Geometry, a: torch.Tensor) -> torch.Tensor:
    """Sum of a pair array over its outer and inner positions: ``mid``-shaped (two
    matrix-vector products)."""
    rows = torch.mv(a.view(geo.P, geo.M * geo.I).t(), ws.ones(geo.P))
    return torch.mv(rows.view(geo.M, geo.I), ws.ones(geo.I)).view(geo.mid)


def pair_recursion(ws: Workspace, geo: Geometry, activation: str,
                   factors: list[tuple[torch.Tensor, ...]], ntk: bool, sw2: float,
                   npos: int) -> torch.Tensor:
    """The readout's kernel (``mid``-shaped) of the pairs whose first-layer covariance
    ``K_1`` the caller wrote into buffer 0 of ``ws``; the other buffers are scratch (5
    suffice).

    ``factors[l]`` are hidden layer ``l``'s self-variance factors, broadcast against the pair
    array: relu ``(r1, r2, s1, s2)``, erf ``(2 q1, q2)``; ``sigma_b^2`` is ``ws.sb2``. ``npos``
    positions are averaged by the readout (cnn_gap ``P^2``, lcn/cnn_vec ``P``, fcn 1).
    """
    pool = list(range(1, len(ws.bufs)))
    kb = tb = 0
    knd = geo.k ** len(geo.outer)
    v = ws.views(geo)
    if not factors:  # fcn of depth 0: linear, Theta = K
        return pair_sum(ws, geo, v[kb]).div_(npos)
    for layer, fac in enumerate(factors):
        last = layer == len(factors) - 1
        K, T = v[kb], v[tb]
        cb, thb, fb = pool.pop(), pool.pop(), pool.pop()
        c, th, f = v[cb], v[thb], v[fb]
        weight = None
        if activation == "relu":
            r1, r2, s1, s2 = fac
            relu_angles(K, r1, r2, c, th, f, ws.one)
            f.mul_(s1)
            f.mul_(s2)  # 2 pi Kphi
            if ntk and last:
                f.addcmul_(T, th)  # + 2 pi Kd T
            weight = thb if ntk else None  # 2 pi Kd
            scale = sw2 / TWO_PI
        else:
            q1, q2 = fac
            erf_args(K, q1, q2, c, f)  # (pi/2) Kphi in f
            if ntk:
                erf_scale_tangent(T, c, q1, q2, th, ws.one)  # (pi/2) Kd T
                if last:
                    f.add_(T)
            scale = sw2 * 2 / math.pi
        if last:
            return torch.add(ws.sb2, pair_sum(ws, geo, f), alpha=scale / npos)
        pool += [cb] + ([] if ntk and kb == tb else [kb])
        knb, tmp = pool.pop(), pool.pop()
        filter_into(ws, geo, fb, knb, tmp, scale / knd, ws.sb2)
        pool.append(fb)
        if ntk:
            tnb = pool.pop()
            filter_into(ws, geo, tb, tnb, tmp, scale / knd, v[knb], weight)
            zero_pads(geo, v[tnb])
            pool.append(tb)
            tb = tnb
        else:
            tb = knb
        pool += [tmp, thb]
        kb = knb
    raise AssertionError("unreachable")
