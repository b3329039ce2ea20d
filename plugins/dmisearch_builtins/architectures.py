"""The seed paper's four prototype architectures: FCN, LCN, CNN-VEC and CNN-GAP.

All four share the hyperparameters that mean the same thing: ``depth`` (hidden layers),
``width`` (hidden units, or channels for the convolutional ones), ``activation``,
``parameterization`` (standard | ntk, see ``layers``), ``sigma_w`` and ``sigma_b`` (weight
and bias scales, the same for every layer including the readout). The convolutional three
add ``filter_size`` and ``padding`` (circular | zeros; stride 1, "same" size).

=========== ===================================================== ===================
name        body                                                  readout
=========== ===================================================== ===================
fcn         ``depth`` dense layers on the flattened input          dense
lcn         ``depth`` locally connected layers (unshared filters)  flatten + dense
cnn_vec     ``depth`` convolutions                                 flatten + dense
cnn_gap     ``depth`` convolutions                                 global average + dense
=========== ===================================================== ===================

Inputs are ``(channels, length)`` or ``(channels, height, width)``; fcn takes any shape.

Symmetries (``symmetries`` and ``couple``, checked by ``dmisearch probe --verify``): fcn
couples under every orthogonal map of the flattened input (rotate, permute, sign_flip: the
first layer's weights ``W -> W M^T``); lcn under sign flips of the coordinates (each
position's filter taps flip with the input they see); cnn_gap with circular padding is
invariant under cyclic shifts (identity coupling). The i.i.d. Gaussian initialisation keeps
its distribution under each of these maps.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from dmisearch.components import Architecture, BatchedForward, Transform
from dmisearch.hookspecs import hookimpl
from dmisearch.space import Categorical, Int
from dmisearch_builtins import kernels
from dmisearch_builtins.layers import (
    ACTIVATIONS,
    PADDINGS,
    PARAMETERIZATIONS,
    Activation,
    Conv,
    Dense,
    GlobalAvgPool,
    LocalConv,
    patches,
    same_pad,
)
from dmisearch_builtins.transforms import Shift


@dataclasses.dataclass(kw_only=True)
class _Network(Architecture):
    """Hyperparameters shared by the four architectures."""

    depth: int = 2  # hidden layers
    width: int = 64  # hidden units (fcn) or channels (lcn, cnn_vec, cnn_gap)
    activation: str = "relu"  # relu | erf | tanh | gelu
    parameterization: str = "standard"  # standard | ntk
    sigma_w: float = math.sqrt(2.0)  # weight scale: W ~ N(0, sigma_w^2 / fan_in)
    sigma_b: float = 0.0  # bias scale: b ~ N(0, sigma_b^2)

    min_depth: ClassVar[int] = 0
    provides = frozenset({"module", "nngp", "ntk"})
    #: The family whose analytic kernels (``kernels.KERNEL_FAMILIES``) are this class's:
    #: each family's own name, so a subclass that renames itself has none.
    kernel_family: ClassVar[str | None] = None

    def check(self) -> None:
        if self.depth < self.min_depth:
            raise ValueError(f"depth must be >= {self.min_depth}, got {self.depth}")
        if self.width < 1:
            raise ValueError(f"width must be >= 1, got {self.width}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}"
            )
        if self.parameterization not in PARAMETERIZATIONS:
            raise ValueError(
                f"parameterization must be one of {PARAMETERIZATIONS}, "
                f"got {self.parameterization!r}"
            )
        if not self.sigma_w > 0:
            raise ValueError(f"sigma_w must be > 0, got {self.sigma_w}")
        if self.sigma_b < 0:
            raise ValueError(f"sigma_b must be >= 0, got {self.sigma_b}")

    def capability_problem(self, capability: str) -> str | None:
        if capability in ("nngp", "ntk"):
            return kernels.kernel_problem(self)
        return None

    def kernel(self, x1: torch.Tensor, x2: torch.Tensor | None, kind: str) -> torch.Tensor:
        """Analytic infinite-width kernel (``dmisearch_builtins.kernels``)."""
        return kernels.kernel(self, x1, x2, kind)

    def kernel_seconds(self, input_shape: tuple[int, ...], n: int, kind: str,
                       device: str | torch.device = "cpu", n2: int | None = None) -> float:
        """Estimated seconds of the ``kind`` kernel of ``n`` inputs against ``n2`` others
        (None: the Gram matrix of the ``n``) on ``device`` (``kernels.estimate_seconds``: a
        short probe, once per process and size, then linear in the elements)."""
        return kernels.estimate_seconds(self, input_shape, n, n2, kind, device,
                                        probe_seconds=0.1)

    def kernel_key(self) -> Any:
        """Width and parameterisation do not enter the infinite-width kernels."""
        params = {k: v for k, v in self.get_params().items()
                  if k not in ("width", "parameterization")}
        return (type(self), repr(sorted(params.items())))

    def _dense(self, fan_in: int, fan_out: int) -> Dense:
        return Dense(fan_in, fan_out, self.parameterization, self.sigma_w, self.sigma_b)

    def forward_batched(self, module: nn.Module) -> BatchedForward:
        """K networks at once: batched matrix products for dense layers, grouped
        convolutions for convolutions, batched einsums for locally connected layers.

        Between filter layers activations stay in the grouped layout ``(n, K * c, *s)``;
        they return to ``(K, n, ...)`` at the first flatten, pooling or dense layer.
        """
        layers = list(module.named_children())

        def forward(params: Mapping[str, torch.Tensor], buffers: Mapping[str, torch.Tensor],
                    x: torch.Tensor) -> torch.Tensor:
            k, n = x.shape[:2]
            h, grouped = x, False
            for name, layer in layers:
                if isinstance(layer, (Conv, LocalConv)):
                    if not grouped:
                        h, grouped = h.transpose(0, 1).flatten(1, 2), True
                    h = layer.batched(params[f"{name}.weight"], params[f"{name}.bias"], h)
                elif isinstance(layer, Dense):
                    h = layer.batched(params[f"{name}.weight"], params[f"{name}.bias"], h)
                elif isinstance(layer, Activation):
                    h = layer(h)
                elif isinstance(layer, (nn.Flatten, GlobalAvgPool)):
                    if grouped:
                        h, grouped = h.reshape(n, k, -1, *h.shape[2:]).transpose(0, 1), False
                    h = h.flatten(3).mean(-1) if isinstance(layer, GlobalAvgPool) else (
                        h.flatten(2))
                else:  # pragma: no cover - build() only uses the layers above
                    raise TypeError(f"no batched form for {type(layer).__name__}")
            return h

        return forward


@dataclasses.dataclass(kw_only=True)
class FCN(_Network):
    """Fully-connected network on the flattened input (O(d)-equivariant under SGD)."""

    name = "fcn"
    kernel_family = "fcn"
    width: int = 256  # hidden units
    space = {"depth": Int(1, 4), "width": Int(64, 1024, log=True)}
    symmetries = frozenset({"rotate", "permute", "sign_flip"})

    def couple(self, module: nn.Module, transform: Transform,
               input_shape: tuple[int, ...]) -> nn.Module | None:
        """Any orthogonal ``transform.matrix`` M: first layer ``W -> W M^T``."""
        m = transform.matrix(math.prod(input_shape))
        if m is None or not _is_orthogonal(m):
            return None
        out = copy.deepcopy(module)
        first = next(c for c in out.children() if isinstance(c, Dense))
        with torch.no_grad():
            first.weight.copy_(first.weight @ m.to(first.weight.dtype).T)
        return out

    def build(self, input_shape: tuple[int, ...], out_dim: int) -> nn.Module:
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = math.prod(input_shape)
        for _ in range(self.depth):
            layers += [self._dense(fan_in, self.width), Activation(self.activation)]
            fan_in = self.width
        layers.append(self._dense(fan_in, out_dim))
        return nn.Sequential(*layers)


@dataclasses.dataclass(kw_only=True)
class _ConvNetwork(_Network):
    """Shared by lcn, cnn_vec and cnn_gap: a stack of same-size filters, then a readout."""

    width: int = 32  # channels
    filter_size: int = 3  # filter extent along every spatial axis
    padding: str = "circular"  # circular | zeros ("same" size, stride 1)

    spatial_dims = frozenset({1, 2})
    min_depth = 1
    space = {
        "depth": Int(1, 4),
        "width": Int(8, 128, log=True),
        "filter_size": Categorical((3, 5)),
    }

    def check(self) -> None:
        super().check()
        if self.filter_size < 1:
            raise ValueError(f"filter_size must be >= 1, got {self.filter_size}")
        if self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {self.padding!r}")

    def check_input(self, input_shape: tuple[int, ...]) -> str | None:
        problem = super().check_input(input_shape)
        if problem is None and self.filter_size > min(input_shape[1:]):
            problem = (
                f"filter_size={self.filter_size} exceeds the input's spatial size "
                f"{tuple(input_shape[1:])}"
            )
        return problem

    def _filter(self, c_in: int, spatial: tuple[int, ...]) -> nn.Module:
        return Conv(c_in, self.width, self.filter_size, len(spatial), self.padding,
                    self.parameterization, self.sigma_w, self.sigma_b)

    def _body(self, input_shape: tuple[int, ...]) -> list[nn.Module]:
        c_in, spatial = input_shape[0], tuple(input_shape[1:])
        layers: list[nn.Module] = []
        for _ in range(self.depth):
            layers += [self._filter(c_in, spatial), Activation(self.activation)]
            c_in = self.width
        return layers

    def _vec_readout(self, input_shape: tuple[int, ...], out_dim: int) -> list[nn.Module]:
        return [nn.Flatten(), self._dense(self.width * math.prod(input_shape[1:]), out_dim)]


@dataclasses.dataclass(kw_only=True)
class LCN(_ConvNetwork):
    """Locally connected network: convolution-like receptive fields, unshared weights."""

    name = "lcn"
    kernel_family = "lcn"
    symmetries = frozenset({"sign_flip"})

    def couple(self, module: nn.Module, transform: Transform,
               input_shape: tuple[int, ...]) -> nn.Module | None:
        """A ``transform.matrix`` that is diagonal with entries +-1: each first-layer tap
        is multiplied by the sign of the input coordinate it sees."""
        m = transform.matrix(math.prod(input_shape))
        if m is None:
            return None
        signs = m.diagonal()
        if not (torch.equal(m, torch.diag(signs)) and bool((signs.abs() == 1).all())):
            return None
        out = copy.deepcopy(module)
        first = next(c for c in out.children() if isinstance(c, LocalConv))
        img = signs.to(first.weight.dtype).reshape(1, *input_shape)
        taps = patches(same_pad(img, first.k, first.nd, first.padding), first.k, first.nd)[0]
        taps = torch.where(taps == 0, torch.ones_like(taps), taps)  # zero padding: no input
        with torch.no_grad():
            first.weight.mul_(taps.T[:, None, :])  # weight (P, c_out, j), taps (j, P)
        return out

    def _filter(self, c_in: int, spatial: tuple[int, ...]) -> nn.Module:
        return LocalConv(c_in, self.width, self.filter_size, spatial, self.padding,
                         self.parameterization, self.sigma_w, self.sigma_b)

    def build(self, input_shape: tuple[int, ...], out_dim: int) -> nn.Module:
        return nn.Sequential(*self._body(input_shape), *self._vec_readout(input_shape, out_dim))


@dataclasses.dataclass(kw_only=True)
class CNNVec(_ConvNetwork):
    """Convolutional network without pooling: flattened last feature map, dense readout."""

    name = "cnn_vec"
    kernel_family = "cnn_vec"

    def build(self, input_shape: tuple[int, ...], out_dim: int) -> nn.Module:
        return nn.Sequential(*self._body(input_shape), *self._vec_readout(input_shape, out_dim))


@dataclasses.dataclass(kw_only=True)
class CNNGAP(_ConvNetwork):
    """Convolutional network with global average pooling (cyclic-shift invariant if circular)."""

    name = "cnn_gap"
    kernel_family = "cnn_gap"
    symmetries = frozenset({"shift"})

    def couple(self, module: nn.Module, transform: Transform,
               input_shape: tuple[int, ...]) -> nn.Module | None:
        """Invariant under cyclic shifts when the padding is circular: the identity."""
        if isinstance(transform, Shift) and self.padding == "circular":
            return module
        return None

    def build(self, input_shape: tuple[int, ...], out_dim: int) -> nn.Module:
        return nn.Sequential(
            *self._body(input_shape), GlobalAvgPool(), self._dense(self.width, out_dim)
        )


def _is_orthogonal(m: torch.Tensor) -> bool:
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        return False
    m = m.to(torch.float64)
    eye = torch.eye(m.shape[0], dtype=torch.float64)
    return bool(torch.allclose(m @ m.T, eye, rtol=0, atol=1e-10))


FAMILIES: dict[str, type[_Network]] = {
    cls.name: cls for cls in (FCN, LCN, CNNVec, CNNGAP)
}


@hookimpl
def register_architectures(register):
    for cls in FAMILIES.values():
        register(cls)
