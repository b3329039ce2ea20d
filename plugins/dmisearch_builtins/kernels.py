"""Infinite-width NNGP and NTK kernels of the built-in architectures (fcn, lcn, cnn_vec, cnn_gap).

The kernels are the width -> infinity limits of exactly the networks ``layers`` and
``architectures`` build, in the conventions of neural-tangents' ``stax`` layers
(Novak et al. 2020, "Neural Tangents"; the NNGP recursions of Lee et al. 2018 and Novak et al.
2019, "Bayesian deep CNNs with many channels are GPs"; the NTK recursions of Jacot et al. 2018
and Arora et al. 2019, "On exact computation with an infinitely wide neural net").

Conventions
-----------
* Every layer, the readout included, is affine with weight variance ``sigma_w^2 / fan_in``
  and bias variance ``sigma_b^2`` (the same ``sigma_w``, ``sigma_b`` for every layer).
  ``fan_in`` of a convolution or locally connected layer is ``C_in * k**nd``, of the fcn's
  first layer ``d = prod(input_shape)`` (the input is flattened), of a VEC/LCN readout
  ``C * P`` (P spatial positions), of a GAP readout ``C``. Width and ``parameterization`` do
  not enter the limits. The NTK is that of the NTK parameterisation (derivatives with
  respect to the N(0, 1) parameters): per layer, a bias adds ``sigma_b^2`` and a weight adds
  ``sigma_w^2`` times the mean (over the fan-in) of the input covariance.
* Input covariance: ``X[p, p'] = (1/C) sum_c x_c[p] x'_c[p']`` (fcn: ``<x, x'> / d``).
* A filter layer (convolution or locally connected; stride 1, "same" size, filter ``k`` on
  every spatial axis, offsets ``-left .. k-1-left`` with ``left = (k-1)//2``, so an even
  filter's extra tap is on the right/bottom) maps a covariance ``A`` over position pairs to
  ``sigma_w^2 (1/k^nd) sum_delta A[p+delta, p'+delta] + sigma_b^2``. Padding applies to the
  layer's input: ``circular`` wraps the indices, ``zeros`` makes every term with an index
  outside the map zero (the input and the post-activation maps are padded with zeros).
* First layer: ``K_1 = Theta_1 = filter(X)``. After each activation,
  ``Kphi = E[phi(u) phi(v)]`` and ``Kd = E[phi'(u) phi'(v)]`` with ``(u, v)`` centred
  Gaussian of covariance ``[[K(x,x)[p,p], K(x,x')[p,p']], [., K(x',x')[p',p']]]``; the next
  layer gives ``K_{l+1} = filter(Kphi)`` and ``Theta_{l+1} = K_{l+1} + sigma_w^2 (1/k^nd)
  sum_delta (Theta_l * Kd)[p+delta, p'+delta]``.
* Readout after the last activation: GAP (cnn_gap) ``K = sigma_w^2 mean_{p,p'} Kphi +
  sigma_b^2``, ``Theta = K + sigma_w^2 mean_{p,p'} (Theta * Kd)``; VEC (cnn_vec) and LCN the
  same with the mean over ``p = p'`` only. Without pooling only same-position terms are ever
  needed, and those obey the same recursion whether or not filters are shared, so cnn_vec and
  lcn have identical NNGP *and* NTK. fcn is the one-position case (``depth`` dense layers and
  activations, then a dense readout; depth 0 is linear).
* ReLU: with ``theta = arccos(k12 / sqrt(k11 k22))``, ``Kphi = sqrt(k11 k22) / (2 pi)
  (sin theta + (pi - theta) cos theta)``, ``Kd = (pi - theta) / (2 pi)``
  (Cho & Saul 2009). Erf: ``Kphi = (2/pi) arcsin(2 k12 / sqrt((1 + 2 k11)(1 + 2 k22)))``,
  ``Kd = (4/pi) / sqrt((1 + 2 k11)(1 + 2 k22) - 4 k12^2)`` (Williams 1997).

Computation
-----------
Everything is float64 on the inputs' device. The self variances ``K(x, x)[p, p]`` of every
hidden layer are computed once per input (a same-position recursion), and from them the
per-input factors the moments need (``kernel_ops``: ``1/sqrt(v)`` and ``sqrt(v)`` for ReLU,
``1/sqrt(1 + 2 v)`` for erf), so a pair's cosine is two multiplications and no square
root. The Gram matrix is computed by blocks of input pairs (``kernel_plan`` prepares them,
``kernel_ops`` computes them); a block's covariances are pair arrays (the first input's
positions outermost, the second's, as circular offsets or zero-padded positions, innermost;
lcn, cnn_vec and fcn carry same-position pairs only). The first layer is one matrix product
of the inputs' patches (``sigma_b`` enters as one more patch entry); each hidden layer then
costs a fixed number of fused in-place passes over the pair arrays (the moments, then the
filter as ``k`` shifted adds per spatial axis), and the last one is summed straight into
the readout. With ``x2``
None only the blocks on or above the diagonal are computed and the rest is mirrored, so the
result is exactly symmetric.

Blocks: each pair array of a block holds at most ``max_block_bytes`` (five are live per
block); left at None, ``_CPU_BLOCK_BYTES_PER_THREAD`` times torch's threads on the CPU and a
share of the free memory on CUDA (``torch.cuda.mem_get_info``). Blocks run one after
another, each operation on torch's threads. Any block size gives the same numbers up to
rounding. ``progress(done, total)``, if given, is called after each block;
``estimate_seconds`` predicts the time of a request from a timed probe.

Numerics: a zero variance (zero input patches with zeros padding or ``sigma_b = 0``) gives
``Kphi = 0`` and a finite ``Kd`` without NaN. The ReLU angle is ill-conditioned at
``|cos theta| = 1`` (rounding alone moves ``theta`` by ~1e-8 there), so cosines within 1e-12
of +-1 are set to +-1: a pair of inputs and its self-pair (``kernel_diag``) then give the
same numbers. Just short of that, the angle amplifies rounding by ``1/sqrt(1 - |cos|)``:
where the activations at two positions are parallel to within ~1e-6 (near-duplicate or
nearly constant inputs), a ReLU entry is determined by float64 only to ~1e-12.

Not supported (``kernel_problem`` says why): activations other than relu and erf (tanh and
gelu have no closed form here), architectures other than the four built-in families, and
inputs the finite architecture rejects (``check_input``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch

from dmisearch.progress import WORK_PROGRESS
from dmisearch_builtins import kernel_ops as ops
from dmisearch_builtins.kernel_plan import Plan, Side

#: The networks these kernels are the limits of: the built-in families of
#: ``architectures.FAMILIES``, each of whose classes names itself in ``kernel_family`` (a
#: subclass that renames itself keeps its parent's family, so has no kernel here).
KERNEL_FAMILIES = ("fcn", "lcn", "cnn_vec", "cnn_gap")
SUPPORTED_ACTIVATIONS: frozenset[str] = frozenset({"relu", "erf"})
KINDS = ("nngp", "ntk")

#: Bytes of one pair array of a block on the CPU, per thread of torch's (each operation is
#: split among them): larger blocks pay less per-operation overhead (the threads start and
#: join for each), smaller ones stay nearer the cores' caches
#: (``python benchmarks/bench_kernels.py --block-sweep``).
_CPU_BLOCK_BYTES_PER_THREAD = 2**19
#: On CUDA a block's pair arrays (``_BUFFERS``, plus as much again for the blocks' other
#: data) take at most this share of the free memory, and none more than ``_CUDA_MAX_BYTES``.
_CUDA_FREE_SHARE = 0.5
_CUDA_MAX_BYTES = 2**31
_BUFFERS = 5
_DTYPE = torch.float64

Progress = Callable[[int, int], None]


def kernel_problem(arch) -> str | None:
    """Why ``arch`` has no analytic infinite-width kernel here (None: it has one)."""
    name = getattr(arch, "name", None)
    if name not in KERNEL_FAMILIES or getattr(arch, "kernel_family", None) != name:
        return (f"architecture {name!r} has no analytic infinite-width kernel "
                f"(supported: {', '.join(KERNEL_FAMILIES)})")
    if arch.activation not in SUPPORTED_ACTIVATIONS:
        return (f"activation {arch.activation!r} has no closed-form infinite-width kernel "
                f"(supported: {', '.join(sorted(SUPPORTED_ACTIVATIONS))})")
    return None


def _prepare(arch, kind: str, shapes: Sequence[tuple[int, ...]]) -> tuple[Plan, bool]:
    problem = kernel_problem(arch)
    if problem is not None:
        raise ValueError(problem)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    shape = tuple(shapes[0])
    for other in shapes[1:]:
        if tuple(other) != shape:
            raise ValueError(f"input shapes differ: {shape} and {tuple(other)}")
    problem = arch.check_input(shape)
    if problem is not None:
        raise ValueError(problem)
    return Plan(arch, shape), kind == "ntk"


def block_bytes(device: torch.device, max_block_bytes: int | None = None) -> int:
    """Bytes of one pair array of a block: ``max_block_bytes`` if given, else the device's
    default (module docstring)."""
    if max_block_bytes is not None:
        return max(1, int(max_block_bytes))
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(2**20, min(_CUDA_MAX_BYTES, int(free * _CUDA_FREE_SHARE) // (2 * _BUFFERS)))
    return _CPU_BLOCK_BYTES_PER_THREAD * max(1, torch.get_num_threads())


def _block_sizes(plan: Plan, n1: int, n2: int, nbytes: int) -> tuple[int, int]:
    """Rows and columns of a block: the most pairs within ``nbytes`` per array, with between
    half and all of the square root of that many rows (and two where that fits)."""
    pairs = max(1, nbytes // (8 * plan.pair_elems))
    root = math.isqrt(pairs)
    b1 = max(range(max(1, min(2, root), root // 2), root + 1),
             key=lambda b: (b * (pairs // b), b))
    b1 = max(1, min(n1, b1))
    return b1, max(1, min(n2, pairs // b1))


def _columns(n1: int, n2: int, b1: int, b2: int,
             sym: bool) -> list[tuple[tuple[int, int], list[tuple[int, int]]]]:
    """Column blocks ``(j0, j1)``, each with its row blocks ``(i0, i1)``; with ``sym`` only
    the blocks with an entry on or above the diagonal."""
    out = []
    for j0 in range(0, n2, b2):
        j1 = min(n2, j0 + b2)
        rows = range(0, min(n1, j1) if sym else n1, b1)
        out.append(((j0, j1), [(i0, min(n1, i0 + b1)) for i0 in rows]))
    return out


def kernel(arch, x1: torch.Tensor, x2: torch.Tensor | None, kind: str, *,
           max_block_bytes: int | None = None,
           progress: Progress | None = None) -> torch.Tensor:
    """Infinite-width ``kind`` ("nngp" or "ntk") kernel of ``arch`` between ``x1``
    ``(n1, *input_shape)`` and ``x2`` ``(n2, *input_shape)`` (None: ``x1``, and the result is
    exactly symmetric). Returns ``(n1, n2)`` float64 on ``x1``'s device.

    ``max_block_bytes`` bounds each pair array of a block (None: the device's default);
    ``progress(done_blocks, total_blocks)``, if given (else the callback of
    ``dmisearch.progress.WORK_PROGRESS``, if set), is called after every block.
    """
    device = x1.device
    x1 = x1.detach().to(dtype=_DTYPE)
    sym = x2 is None
    x2 = x1 if sym else x2.detach().to(device=device, dtype=_DTYPE)
    plan, ntk = _prepare(arch, kind, (x1.shape[1:], x2.shape[1:]))
    n1, n2 = x1.shape[0], x2.shape[0]
    out = torch.zeros(n1, n2, dtype=_DTYPE, device=device)
    if n1 == 0 or n2 == 0:
        return out
    if progress is None:  # a caller's channel (dmisearch run and predict set one)
        progress = WORK_PROGRESS.get()
    b1, b2 = _block_sizes(plan, n1, n2, block_bytes(device, max_block_bytes))
    columns = _columns(n1, n2, b1, b2, sym)
    total, done = sum(len(rows) for _, rows in columns), 0
    with torch.no_grad():
        s1 = Side(plan, x1)
        s2 = s1 if sym else Side(plan, x2)
        ws = ops.Workspace(_BUFFERS, b1 * b2 * plan.pair_elems + 2 * plan.slack, device,
                           plan.sb2)
        outers = {i0: plan.outer_block(s1, i0, min(n1, i0 + b1)) for i0 in range(0, n1, b1)}
        for (j0, j1), rows in columns:
            inner = plan.inner_block(s2, j0, j1)  # once per column of blocks
            for i0, i1 in rows:
                out[i0:i1, j0:j1] = plan.pair_block(ws, outers[i0], inner, ntk)
                done += 1
                if progress is not None:
                    progress(done, total)
    if sym:
        out = torch.triu(out) + torch.triu(out, 1).T
    return out


def kernel_diag(arch, x: torch.Tensor, kind: str, *,
                max_block_bytes: int | None = None) -> torch.Tensor:
    """``kernel(arch, x_i, x_i, kind)`` for every input: ``(n,)`` float64 on ``x``'s device."""
    x = x.detach().to(dtype=_DTYPE)
    plan, ntk = _prepare(arch, kind, (x.shape[1:],))
    with torch.no_grad():
        side = Side(plan, x)
        if not plan.gap:
            return side.self_kernel(ntk)
        rows = max(1, block_bytes(x.device, max_block_bytes) // (8 * plan.pair_elems))
        ws = ops.Workspace(_BUFFERS, min(rows, len(x)) * plan.pair_elems + 2 * plan.slack,
                           x.device, plan.sb2)
        parts = [plan.diag_block(ws, side, i, min(len(x), i + rows), ntk)
                 for i in range(0, len(x), rows)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=_DTYPE, device=x.device)


def estimate_seconds(arch, input_shape: Sequence[int], n1: int, n2: int | None = None,
                     kind: str = "ntk", device: str | torch.device = "cpu", *,
                     probe_seconds: float = 0.3) -> float:
    """Predicted seconds of ``kernel(arch, x1, x2, kind)`` with ``n1`` inputs ``x1`` and
    ``n2`` inputs ``x2`` (None: the Gram matrix of ``x1``), on ``device`` as it is now.

    What it measures: the Gram matrices of 2 and of ``m`` random inputs of ``input_shape``
    on ``device``, the faster of two or three runs each; ``m`` is doubled from 16 until a
    run takes ``probe_seconds`` and spans 16 blocks (or reaches ``n1``, or takes ten times
    ``probe_seconds``). The 2-input time is a call's fixed cost; the rest of the ``m``-input
    time, per pair-array element computed (blocks sized as ``kernel`` sizes them), is the
    cost of an element. The estimate is the fixed cost plus the request's elements at that
    cost: linear in them, so the self variances (linear in the inputs) are left out. It
    reflects the machine's load during the probe, which takes a few times
    ``probe_seconds``; on a machine shared with other work it can be off by several times.
    """
    device = torch.device(device)
    plan, _ = _prepare(arch, kind, (tuple(input_shape),))
    n_max = max(n1, n2 or 0)
    key = (arch.kernel_key(), tuple(input_shape), kind, str(device), n_max, probe_seconds)
    if key not in _PROBED:  # one probe per process serves every request of its size
        _PROBED[key] = _probe(arch, tuple(input_shape), kind, device, n_max, probe_seconds)
    fixed, per_elem = _PROBED[key]
    total = _computed_elems(plan, n1, n1 if n2 is None else n2, n2 is None, device)
    return fixed + per_elem * total


#: Probes already run: (kernel key, shape, kind, device, largest n, probe seconds) -> result.
_PROBED: dict[tuple, tuple[float, float]] = {}


def _probe(arch, input_shape: tuple[int, ...], kind: str, device: torch.device, n_max: int,
           probe_seconds: float) -> tuple[float, float]:
    """Seconds of a call's fixed cost and per computed pair-array element
    (``estimate_seconds``)."""
    plan, _ = _prepare(arch, kind, (input_shape,))
    g = torch.Generator().manual_seed(0)

    def timed(m: int, runs: int = 2) -> float:
        x = torch.randn(m, *input_shape, generator=g, dtype=_DTYPE).to(device)
        best = math.inf
        for _ in range(runs):
            _sync(device)
            t = time.perf_counter()
            kernel(arch, x, None, kind)
            _sync(device)
            best = min(best, time.perf_counter() - t)
        return best

    def enough(m: int, seconds: float) -> bool:  # long enough, and well past the fixed cost
        blocks = _computed_elems(plan, m, m, True, device) / block
        return m >= n_max or seconds >= 10 * probe_seconds or (
            seconds >= probe_seconds and blocks >= 16)

    block = math.prod(_block_sizes(plan, n_max, n_max, block_bytes(device))) * plan.pair_elems
    fixed, m = timed(2, 3), max(2, min(16, n_max))
    while not enough(m, seconds := timed(m)):
        m = min(n_max, 2 * m)
    elems = _computed_elems(plan, m, m, True, device) - _computed_elems(plan, 2, 2, True, device)
    return fixed, max(0.0, seconds - fixed) / max(1, elems)


def _computed_elems(plan: Plan, n1: int, n2: int, sym: bool, device: torch.device) -> int:
    b1, b2 = _block_sizes(plan, n1, n2, block_bytes(device))
    return sum((i1 - i0) * (j1 - j0) for (j0, j1), rows in _columns(n1, n2, b1, b2, sym)
               for i0, i1 in rows) * plan.pair_elems


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
