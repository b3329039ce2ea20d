"""Layers in the standard or NTK parameterisation, shared by the built-in architectures.

Conventions follow neural-tangents' ``stax`` layers:

* ``standard``: ``W ~ N(0, sigma_w^2 / fan_in)``, ``b ~ N(0, sigma_b^2)``, ``y = W x + b``.
* ``ntk``: ``W ~ N(0, 1)``, ``b ~ N(0, 1)``, ``y = sigma_w / sqrt(fan_in) W x + sigma_b b``.

Both draw the same standard normals in the same order, so for one seed the two
parameterisations compute the same function at initialisation; they differ in how gradient
steps scale. ``fan_in`` of a convolution is ``channels_in * filter_size ** spatial_dims``.
Convolutions pad to keep the spatial size ("same"), circularly or with zeros; for an even
filter the extra tap goes to the right/bottom.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {
    "relu": F.relu,
    "erf": torch.erf,
    "tanh": torch.tanh,
    "gelu": F.gelu,
}
PARAMETERIZATIONS = ("standard", "ntk")
PADDINGS = ("circular", "zeros")


class Activation(nn.Module):
    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.fn = ACTIVATIONS[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


class _Affine(nn.Module):
    """Weight and bias with the parameterisation's scales (see module docstring)."""

    def __init__(
        self,
        weight_shape: tuple[int, ...],
        bias_shape: tuple[int, ...],
        fan_in: int,
        parameterization: str,
        sigma_w: float,
        sigma_b: float,
    ):
        super().__init__()
        w = torch.randn(weight_shape)
        b = torch.randn(bias_shape)
        w_std, b_std = sigma_w / math.sqrt(fan_in), sigma_b
        if parameterization == "standard":
            self.w_scale, self.b_scale = 1.0, 1.0
            w, b = w * w_std, b * b_std
        elif parameterization == "ntk":
            self.w_scale, self.b_scale = w_std, b_std
        else:
            raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}")
        self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(b)

    def scaled(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.scale(self.weight, self.bias)

    def scale(self, w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Effective weight and bias (also for stacked ones); a scale of 1 costs nothing."""
        if self.w_scale != 1.0:
            w = w * self.w_scale
        if self.b_scale != 1.0:
            b = b * self.b_scale
        return w, b


class Dense(_Affine):
    """``(n, fan_in) -> (n, fan_out)``."""

    def __init__(self, fan_in: int, fan_out: int, parameterization: str, sigma_w: float,
                 sigma_b: float):
        super().__init__((fan_out, fan_in), (fan_out,), fan_in, parameterization, sigma_w,
                         sigma_b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.scaled()
        return F.linear(x, w, b)

    def batched(self, w: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """K layers at once: weights (K, out, in), biases (K, out), x (K, n, in)."""
        w, b = self.scale(w, b)
        return oriented_baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))


#: :func:`oriented_baddbmm`: on the CPU, a batched product with fewer result columns than
#: this (and more rows than columns) is computed transposed, when the layer's product has
#: at least ``ORIENT_MIN_MACS`` multiply-adds: below that, the saving is less than the cost
#: of the autograd function that turns the backward products. Measured with ``python
#: benchmarks/bench_engine.py --archs fcn,lcn --ks 1,16`` (benchmarks/RESULTS.md,
#: "Thresholds in the code").
NARROW = 16
ORIENT_MIN_MACS = 2**20


def oriented_baddbmm(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.baddbmm(bias, a, b)`` for a bias of shape (B, 1, N), with each of the three
    products of the forward and backward passes computed on the CPU as ``(y^T x^T)^T`` (a
    transposed view of the same values) when its result has fewer than ``NARROW`` columns
    and more rows than columns, and the product has at least ``ORIENT_MIN_MACS``
    multiply-adds; else plain ``torch.baddbmm``. Same values, to rounding.

    MKL's batched products with a narrow result, such as a readout to 10 classes, can be
    several times slower than the same products transposed (measured:
    ``benchmarks/RESULTS.md``, "Thresholds in the code"). Each product is oriented on its own:
    transposing the forward product alone would make autograd return the input's gradient
    transposed, and the layers before it would pay for that.
    """
    rows, inner, cols = a.shape[-2], a.shape[-1], b.shape[-1]
    if (a.device.type != "cpu" or a.shape[0] * rows * inner * cols < ORIENT_MIN_MACS
            or not (_narrow(rows, cols) or _narrow(rows, inner) or _narrow(inner, cols))):
        return torch.baddbmm(bias, a, b)  # nothing to turn, or too little to pay
    return _OrientedBaddbmm.apply(bias, a, b)


def _narrow(rows: int, cols: int) -> bool:
    return cols < NARROW and rows > cols


def _bmm(x: torch.Tensor, y: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    if _narrow(x.shape[-2], y.shape[-1]):
        return (torch.bmm(y.mT, x.mT) if bias is None
                else torch.baddbmm(bias.mT, y.mT, x.mT)).mT
    return torch.bmm(x, y) if bias is None else torch.baddbmm(bias, x, y)


class _OrientedBaddbmm(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return _bmm(a, b, bias)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        _, a, b = inputs
        ctx.save_for_backward(a, b)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        a, b = ctx.saved_tensors
        need_bias, need_a, need_b = ctx.needs_input_grad
        return (g.sum(-2, keepdim=True) if need_bias else None,
                _bmm(g, b.mT) if need_a else None,
                _bmm(a.mT, g) if need_b else None)


class _CircularPad(torch.autograd.Function):
    """``F.pad(x, pads, mode="circular")`` with a folding backward pass.

    Autograd's own backward of circular padding differentiates the slices and copies it is
    made of: a zero-filled input-sized tensor per slice, then their sum. On small feature
    maps that took a quarter of a convolutional network's training step on the CPU
    (``benchmarks/RESULTS.md``). Here the gradient is the centre of the padded gradient with
    each padded border added back onto the edge it was copied from: one copy and a few
    small additions per axis.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, pads: tuple[int, ...]) -> torch.Tensor:
        return F.pad(x, list(pads), mode="circular")

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.pads = inputs[1]

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        pads = ctx.pads
        for i in range(len(pads) // 2):  # pads run from the last axis backwards
            dim, left, right = g.ndim - 1 - i, pads[2 * i], pads[2 * i + 1]
            n = g.shape[dim] - left - right
            core = g.narrow(dim, left, n).clone()
            if left:  # the left border holds copies of the last `left` entries
                core.narrow(dim, n - left, left).add_(g.narrow(dim, 0, left))
            if right:  # the right border holds copies of the first `right` entries
                core.narrow(dim, 0, right).add_(g.narrow(dim, left + n, right))
            g = core
        return g, None


def same_pad(x: torch.Tensor, k: int, nd: int, padding: str) -> torch.Tensor:
    """Pad the last ``nd`` axes of ``x`` so a stride-1 filter of size ``k`` keeps them."""
    left = (k - 1) // 2
    pads = (left, k - 1 - left) * nd
    if padding == "circular":
        return _CircularPad.apply(x, pads) if x.requires_grad else F.pad(
            x, list(pads), mode="circular")
    return F.pad(x, list(pads))


class Conv(_Affine):
    """Convolution with weights shared across positions: ``(n, c_in, *s) -> (n, c_out, *s)``."""

    def __init__(self, c_in: int, c_out: int, k: int, nd: int, padding: str,
                 parameterization: str, sigma_w: float, sigma_b: float):
        super().__init__((c_out, c_in, *([k] * nd)), (c_out,), c_in * k**nd,
                         parameterization, sigma_w, sigma_b)
        self.k, self.nd, self.padding = k, nd, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.scaled()
        conv = F.conv1d if self.nd == 1 else F.conv2d
        return conv(same_pad(x, self.k, self.nd, self.padding), w, b)

    def batched(self, w: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """K layers at once: weights (K, c_out, c_in, *k), biases (K, c_out),
        x (n, K * c_in, *s) -> (n, K * c_out, *s).

        One grouped convolution; or, for a circular convolution on the CPU whose Fourier
        form needs fewer multiply-adds (``FOURIER_MIN_SAVING``: small feature maps, many
        channels, wide filters), :func:`circular_conv_fourier`; or, where grouped
        convolutions are slow (:func:`bmm_pays`: wide 1-D ones on CUDA, 1-D ones with one
        input channel on the CPU), :func:`conv_bmm`.
        """
        k = w.shape[0]
        w, b = self.scale(w, b)
        if (self.padding == "circular" and x.device.type == "cpu"
                and fourier_saving(w.shape[2], w.shape[1], self.k, tuple(x.shape[2:]))
                >= FOURIER_MIN_SAVING):
            return circular_conv_fourier(x, w, b, self.k)
        if bmm_pays(x.device, self.nd, k, w.shape[2]):
            return conv_bmm(same_pad(x, self.k, self.nd, self.padding), w, b, self.k)
        conv = F.conv1d if self.nd == 1 else F.conv2d
        return conv(same_pad(x, self.k, self.nd, self.padding), w.flatten(0, 1), b.flatten(),
                    groups=k)


#: A circular convolution's Fourier form is used (CPU, fused engine) when the direct form
#: needs at least this many times its multiply-adds (:func:`fourier_saving`): from there on
#: it was the faster form. Measured with ``python benchmarks/bench_conv.py``
#: (benchmarks/RESULTS.md, "Thresholds in the code").
FOURIER_MIN_SAVING = 1.0


@functools.lru_cache(maxsize=256)  # asked at every training step
def fourier_saving(c_in: int, c_out: int, k: int, spatial: tuple[int, ...]) -> float:
    """Multiply-adds per sample of a direct convolution over those of the Fourier form."""
    size = math.prod(spatial)
    freqs = math.prod(spatial[:-1]) * (spatial[-1] // 2 + 1)
    direct = c_in * c_out * k ** len(spatial) * size
    fourier = 2 * freqs * size * (c_in + c_out) + 4 * freqs * c_in * c_out
    return direct / fourier


@functools.lru_cache(maxsize=32)
def _dft_matrices(spatial: tuple[int, ...], k: int, dtype: torch.dtype,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Real matrices of the half-spectrum DFT over ``spatial`` (F frequencies, the last axis
    halved as ``torch.fft.rfftn`` does), computed in float64:

    * ``fwd`` (S, 2F): ``x @ fwd`` = [Re X | Im X] of a signal x over the S positions;
    * ``inv`` (2F, S): ``[Re Y | Im Y] @ inv`` = the real signal with half-spectrum Y;
    * ``taps`` (k**nd, 2F): ``w @ taps`` = [Re U | Im U], U the conjugate spectrum of a
      filter w placed at offsets ``-left .. k-1-left`` (``same_pad``), so that circular
      cross-correlation with w is the product by U at every frequency.
    """
    f64 = torch.float64

    def grid(sizes: Sequence[int], offset: int = 0) -> torch.Tensor:
        axes = torch.meshgrid(*[torch.arange(n, dtype=f64) - offset for n in sizes],
                              indexing="ij")
        return torch.stack([a.reshape(-1) for a in axes], 1)  # (prod(sizes), nd)

    size = torch.tensor(spatial, dtype=f64)
    freq = grid([*spatial[:-1], spatial[-1] // 2 + 1])  # (F, nd)

    def phase(points: torch.Tensor) -> torch.Tensor:  # (points, F)
        return 2 * math.pi * (points[:, None, :] * freq[None] / size).sum(-1)

    theta = phase(grid(spatial))  # (S, F)
    fwd = torch.cat([theta.cos(), -theta.sin()], 1)
    last, n_last = freq[:, -1], spatial[-1]
    # irfft: every frequency of the halved axis but 0 and Nyquist stands for two
    nyquist = (last == 0) | ((n_last % 2 == 0) & (last == n_last // 2))
    weight = (torch.where(nyquist, 1.0, 2.0).to(f64) / size.prod())[:, None]
    inv = torch.cat([weight * theta.T.cos(), -weight * theta.T.sin()], 0)
    tap = phase(grid([k] * len(spatial), offset=(k - 1) // 2))  # (k**nd, F)
    taps = torch.cat([tap.cos(), tap.sin()], 1)
    return tuple(t.to(dtype=dtype, device=device) for t in (fwd, inv, taps))  # type: ignore


def circular_conv_fourier(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
                          k: int) -> torch.Tensor:
    """K circular "same" convolutions through the Fourier domain, in matrix products.

    Weights (K, c_out, c_in, *[k] * nd), biases (K, c_out), x (n, K * c_in, *s) ->
    (n, K * c_out, *s): what ``conv(same_pad(x, k, nd, "circular"), w, b, groups=K)``
    computes, to rounding. Spectra come from batched products with precomputed DFT matrices
    (``torch.fft`` is slow on thousands of tiny maps); at every frequency the channels mix
    by a complex matrix product, as four real ones. Every product reads its operands in
    place (transposed views, a broadcast DFT matrix), so the only copies are the two
    regroupings of the activations by job.
    """
    jobs, c_out, c_in = w.shape[:3]
    n, spatial = x.shape[0], tuple(x.shape[2:])
    fwd, inv, taps = _dft_matrices(spatial, k, x.dtype, x.device)
    size, freqs, n_taps = fwd.shape[0], fwd.shape[1] // 2, taps.shape[0]

    def each_job(m: torch.Tensor) -> torch.Tensor:  # the same matrix for every job
        return m.expand(jobs, *m.shape)

    # spectra of the inputs: (K * F, n, c_in), real and imaginary parts
    xk = x.reshape(n, jobs, c_in * size).transpose(0, 1).reshape(jobs, n * c_in, size)
    xk = xk.transpose(1, 2)  # (K, S, n * c_in)
    x_re = torch.bmm(each_job(fwd[:, :freqs].T), xk).reshape(-1, n, c_in)
    x_im = torch.bmm(each_job(fwd[:, freqs:].T), xk).reshape(-1, n, c_in)
    # conjugate spectra of the filters: (K * F, c_in, c_out)
    wk = w.reshape(jobs, c_out * c_in, n_taps).transpose(1, 2)  # (K, taps, c_out * c_in)
    u_re = torch.bmm(each_job(taps[:, :freqs].T), wk).reshape(-1, c_out, c_in).transpose(1, 2)
    u_im = torch.bmm(each_job(taps[:, freqs:].T), wk).reshape(
        -1, c_out, c_in).transpose(1, 2)
    # (x_re + i x_im) (u_re + i u_im), summed over input channels: (K * F, n, c_out)
    y_re = torch.baddbmm(torch.bmm(x_re, u_re), x_im, u_im, alpha=-1)
    y_im = torch.baddbmm(torch.bmm(x_re, u_im), x_im, u_re)
    # back to positions: (K, S, n * c_out). The spectra are read as they lie (F, n * c_out
    # per job), so their gradients come back contiguous: read transposed, a single job's
    # gradient was a view whose batch stride is 1, and its products ran matrix by matrix
    y_re = y_re.reshape(jobs, freqs, n * c_out)
    y_im = y_im.reshape(jobs, freqs, n * c_out)
    y = torch.baddbmm(torch.bmm(each_job(inv[:freqs].T), y_re), each_job(inv[freqs:].T), y_im)
    y = y.reshape(jobs, size, n, c_out).permute(2, 0, 3, 1).reshape(n, jobs * c_out, *spatial)
    return y + b.reshape(1, -1, *([1] * len(spatial)))


def bmm_pays(device: torch.device, nd: int, jobs: int, c_in: int) -> bool:
    """Whether :func:`conv_bmm` beats one grouped convolution of ``jobs`` jobs: on CUDA for
    1-D maps in strict float32 (cuDNN's TF32 off) with at least ``BMM_MIN_INPUTS`` input
    channels over all jobs; on the CPU for 1-D maps with one input channel per job (a
    network's first layer on a signal). Measured with ``python benchmarks/bench_conv.py``
    (on a GPU: ``--device cuda --cases gpu``, and ``--tf32``); the measurements are in
    benchmarks/RESULTS.md, "Thresholds in the code".
    """
    if device.type == "cpu":
        return nd == 1 and c_in == 1
    return (nd == 1 and device.type == "cuda" and not torch.backends.cudnn.allow_tf32
            and jobs * c_in >= BMM_MIN_INPUTS)


#: :func:`bmm_pays`: jobs x input channels from which the batched product wins on CUDA.
BMM_MIN_INPUTS = 1024


def conv_bmm(xp: torch.Tensor, w: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """K "valid" convolutions as one batched matrix product.

    Padded input ``xp`` (n, K * c_in, *(s + k - 1)), weights (K, c_out, c_in, *[k] * nd),
    biases (K, c_out) -> (n, K * c_out, *s): what ``conv(xp, w, b, groups=K)`` computes,
    to rounding. Every job's receptive fields are gathered into one matrix
    ``(n * positions, c_in * k**nd)`` and multiplied by its filters.
    """
    jobs, c_out, c_in = w.shape[:3]
    nd = w.ndim - 3
    n = xp.shape[0]
    cols = xp
    for d in range(nd):
        cols = cols.unfold(2 + d, k, 1)  # (n, K * c_in, *s, *[k] * nd)
    spatial = tuple(cols.shape[2:2 + nd])
    cols = cols.reshape(n, jobs, c_in, *spatial, *[k] * nd)
    # (K, n, *s, c_in, *k): the filter's flattening order within each row
    order = (1, 0, *range(3, 3 + nd), 2, *range(3 + nd, 3 + 2 * nd))
    cols = cols.permute(order).reshape(jobs, n * math.prod(spatial), -1)
    out = torch.baddbmm(b.unsqueeze(1), cols, w.reshape(jobs, c_out, -1).transpose(1, 2))
    out = out.reshape(jobs, n, *spatial, c_out)  # back to (n, K * c_out, *s)
    return out.permute(1, 0, 2 + nd, *range(2, 2 + nd)).reshape(n, jobs * c_out, *spatial)


def patches(x: torch.Tensor, k: int, nd: int) -> torch.Tensor:
    """``(n, c, *s_padded) -> (n, c * k**nd, P)``, ordered like a conv weight's flattening."""
    # Tensor.unfold views rather than F.unfold: same values, and F.unfold's CPU kernel
    # slows down by orders of magnitude when its threads compete for cores.
    n, c = x.shape[:2]
    if nd == 1:
        p = x.unfold(2, k, 1)  # (n, c, L, k)
        return p.permute(0, 1, 3, 2).reshape(n, c * k, -1)
    p = x.unfold(2, k, 1).unfold(3, k, 1)  # (n, c, H, W, k, k)
    return p.permute(0, 1, 4, 5, 2, 3).reshape(n, c * k * k, -1)


class LocalConv(_Affine):
    """Locally connected layer: a convolution's receptive fields, weights unshared.

    Every output position ``p`` has its own filter ``W[p]`` (shape ``(c_out, c_in * k**nd)``)
    and its own bias ``b[p]``; with all ``W[p]`` and ``b[p]`` equal it computes ``Conv``.
    """

    def __init__(self, c_in: int, c_out: int, k: int, spatial: tuple[int, ...], padding: str,
                 parameterization: str, sigma_w: float, sigma_b: float):
        positions = math.prod(spatial)
        nd = len(spatial)
        super().__init__((positions, c_out, c_in * k**nd), (positions, c_out), c_in * k**nd,
                         parameterization, sigma_w, sigma_b)
        self.k, self.nd, self.spatial, self.padding = k, nd, tuple(spatial), padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.batched(self.weight[None], self.bias[None], x)

    def batched(self, w: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """K layers at once: weights (K, P, c_out, j), biases (K, P, c_out),
        x (n, K * c_in, *s) -> (n, K * c_out, *s).

        One batched matrix product over (job, position): each position's receptive fields
        ``(n, j)`` times its filter ``(j, c_out)``. The fields are gathered straight into
        that layout (one copy, samples innermost so that it moves runs of n values),
        rather than as image patches that a product would have to transpose again.
        """
        k, n, nd = w.shape[0], x.shape[0], self.nd
        xp = same_pad(x, self.k, nd, self.padding)
        # (n, K * c_in, *s_padded) -> (K, c_in, *s_padded, n), contiguous: the gather
        # below then reads runs of n values -> (K, c_in, *s, n, *taps)
        xp = xp.reshape(n, k, -1, *xp.shape[2:]).permute(1, 2, *range(3, 3 + nd), 0)
        xp = xp.contiguous()
        for d in range(nd):
            xp = xp.unfold(2 + d, self.k, 1)
        spatial = tuple(range(2, 2 + nd))
        taps = tuple(range(3 + nd, 3 + 2 * nd))
        rows = k * w.shape[1]  # K * P
        cols = xp.permute(0, *spatial, 1, *taps, 2 + nd).reshape(rows, -1, n)  # (K * P, j, n)
        cols = cols.transpose(1, 2)  # (K * P, n, j)
        w, b = self.scale(w, b)
        y = oriented_baddbmm(b.reshape(rows, 1, -1), cols,
                             w.reshape(rows, *w.shape[2:]).transpose(1, 2))  # (K * P, n, c_out)
        y = y.reshape(k, -1, n, y.shape[-1]).permute(2, 0, 3, 1)  # (n, K, c_out, P)
        return y.reshape(n, -1, *self.spatial)


class GlobalAvgPool(nn.Module):
    """``(n, c, *s) -> (n, c)``: mean over every spatial position."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).mean(-1)
