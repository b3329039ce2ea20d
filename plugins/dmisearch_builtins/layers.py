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

import math

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
        return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))


def same_pad(x: torch.Tensor, k: int, nd: int, padding: str) -> torch.Tensor:
    """Pad the last ``nd`` axes of ``x`` so a stride-1 filter of size ``k`` keeps them."""
    left = (k - 1) // 2
    pads = [left, k - 1 - left] * nd
    if padding == "circular":
        return F.pad(x, pads, mode="circular")
    return F.pad(x, pads)


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
        """K layers as one grouped convolution: weights (K, c_out, c_in, *k), biases
        (K, c_out), x (n, K * c_in, *s) -> (n, K * c_out, *s)."""
        k = w.shape[0]
        w, b = self.scale(w, b)
        conv = F.conv1d if self.nd == 1 else F.conv2d
        return conv(same_pad(x, self.k, self.nd, self.padding), w.flatten(0, 1), b.flatten(),
                    groups=k)


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
        w, b = self.scaled()
        cols = patches(same_pad(x, self.k, self.nd, self.padding), self.k, self.nd)
        y = torch.einsum("njp,poj->nop", cols, w) + b.T  # (n, c_out, P)
        return y.reshape(x.shape[0], -1, *self.spatial)

    def batched(self, w: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """K layers at once: weights (K, P, c_out, j), biases (K, P, c_out),
        x (n, K * c_in, *s) -> (n, K * c_out, *s)."""
        k, n = w.shape[0], x.shape[0]
        cols = patches(same_pad(x, self.k, self.nd, self.padding), self.k, self.nd)
        cols = cols.reshape(n, k, -1, cols.shape[-1])  # (n, K, j, P)
        w, b = self.scale(w, b)
        y = torch.einsum("nkjp,kpoj->nkop", cols, w) + b.transpose(1, 2)  # (n, K, c_out, P)
        return y.reshape(n, -1, *self.spatial)


class GlobalAvgPool(nn.Module):
    """``(n, c, *s) -> (n, c)``: mean over every spatial position."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).mean(-1)
