"""Built-in input transforms: a fixed random rotation, a fixed permutation, fixed random sign
flips, a random shift and a random reflection.

``rotate``, ``permute`` and ``sign_flip`` are fixed orthogonal maps of the flattened input
chosen by their ``seed`` (the same for every sample, train and test alike), and expose their
matrix (``matrix(d)``); ``shift`` draws a cyclic translation per sample from the generator
it is given, ``flip`` a spatial reflection.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import torch

from dmisearch.components import Transform
from dmisearch.hookspecs import hookimpl
from dmisearch.seeding import derive_seed
from dmisearch_builtins.checks import check_seed


@functools.lru_cache(maxsize=4)
def _haar_orthogonal(seed: int, d: int) -> torch.Tensor:
    """A Haar-random d x d orthogonal matrix (float64): QR of a Gaussian, signs fixed."""
    g = torch.Generator().manual_seed(derive_seed(seed, "rotate", d))
    a = torch.randn((d, d), generator=g, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    # Without the sign fix Q is not Haar-distributed (Mezzadri 2007).
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1.0
    return q * signs  # scales column j by signs[j]


@functools.lru_cache(maxsize=16)
def _permutation(seed: int, d: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(derive_seed(seed, "permute", d))
    return torch.randperm(d, generator=g)


@dataclasses.dataclass(kw_only=True)
class Rotate(Transform):
    """A fixed Haar-random orthogonal rotation of the flattened input.

    ``x_flat -> x_flat @ Q.T`` with Q drawn once from ``seed`` and the input size d; it
    preserves norms and inner products, and destroys locality. An FCN trained by SGD is
    equivariant to it (see docs/science.md).
    """

    name = "rotate"
    seed: int = 0  # chooses Q (together with the flattened input size)

    def check(self) -> None:
        check_seed(self.seed)

    def matrix(self, d: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The rotation Q (d x d, float64 unless ``dtype``) applied to flattened inputs of
        size ``d``."""
        return _haar_orthogonal(int(self.seed), int(d)).to(dtype or torch.float64)

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, d = x.shape[0], math.prod(x.shape[1:])
        q = self.matrix(d, x.dtype).to(x.device)
        return (x.reshape(n, d) @ q.T).reshape(x.shape)

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A fresh Haar-random rotation per sample (O(d) as augmentation: O(n d^3) work)."""
        n, d = x.shape[0], math.prod(x.shape[1:])
        a = torch.randn((n, d, d), generator=generator, dtype=torch.float64)
        q, r = torch.linalg.qr(a)
        signs = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
        signs[signs == 0] = 1.0
        q = (q * signs[:, None, :]).to(device=x.device, dtype=x.dtype)
        return torch.bmm(q, x.reshape(n, d, 1)).reshape(x.shape)


@dataclasses.dataclass(kw_only=True)
class Permute(Transform):
    """A fixed random permutation of the flattened input's coordinates (pixels).

    Drawn once from ``seed`` and the input size; destroys locality but keeps each sample's
    values. Coordinate-wise learners (e.g. an FCN trained by Adam) are equivariant to it.
    """

    name = "permute"
    seed: int = 0  # chooses the permutation (together with the flattened input size)

    def check(self) -> None:
        check_seed(self.seed)

    def permutation(self, d: int) -> torch.Tensor:
        """Indices ``p`` with ``out_flat[:, i] = x_flat[:, p[i]]`` for inputs of size ``d``."""
        return _permutation(int(self.seed), int(d))

    def matrix(self, d: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The permutation matrix P (d x d): ``P[i, p[i]] = 1``, so ``out_flat = x_flat @ P.T``."""
        eye = torch.eye(int(d), dtype=dtype or torch.float64)
        return eye[self.permutation(d)]

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, d = x.shape[0], math.prod(x.shape[1:])
        p = self.permutation(d).to(x.device)
        return x.reshape(n, d)[:, p].reshape(x.shape)

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A fresh uniformly random permutation of the coordinates per sample."""
        n, d = x.shape[0], math.prod(x.shape[1:])
        perm = torch.rand((n, d), generator=generator).argsort(dim=1).to(x.device)
        return torch.gather(x.reshape(n, d), 1, perm).reshape(x.shape)


@functools.lru_cache(maxsize=16)
def _signs(seed: int, d: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(derive_seed(seed, "sign_flip", d))
    return torch.randint(0, 2, (d,), generator=g, dtype=torch.float64) * 2.0 - 1.0


@dataclasses.dataclass(kw_only=True)
class SignFlip(Transform):
    """A fixed random sign flip of each coordinate of the flattened input: x_i -> s_i x_i.

    The signs ``s_i = +-1`` are drawn once from ``seed`` and the input size (the same for
    every sample, train and test alike). A reflection of coordinate axes, orthogonal and a
    signed permutation: FCNs trained by SGD or by Adam, and LCNs, are equivariant to it;
    weight-sharing convolutions are not. (``flip`` is a spatial reflection.)
    """

    name = "sign_flip"
    seed: int = 0  # chooses the signs (together with the flattened input size)

    def check(self) -> None:
        check_seed(self.seed)

    def signs(self, d: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The ``d`` signs (+1 or -1) multiplying the flattened input's coordinates."""
        return _signs(int(self.seed), int(d)).to(dtype or torch.float64)

    def matrix(self, d: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The diagonal matrix of the signs."""
        return torch.diag(self.signs(d, dtype))

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        d = math.prod(x.shape[1:])
        return x * self.signs(d, x.dtype).to(x.device).reshape(x.shape[1:])

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Fresh random signs per sample and coordinate."""
        s = torch.randint(0, 2, x.shape, generator=generator).to(device=x.device,
                                                                   dtype=x.dtype)
        return x * (2 * s - 1)


@dataclasses.dataclass(kw_only=True)
class Shift(Transform):
    """A random cyclic translation of each sample over every spatial axis.

    Inputs are ``(n, C, *spatial)``; channels are never shifted. Offsets are drawn per
    sample and per axis from the generator passed to ``apply``: uniform over all ``L``
    positions of an axis of length L, or uniform in ``[-max_shift, max_shift]``.
    """

    name = "shift"
    max_shift: int | None = None  # None: any offset 0..L-1; k: offsets in [-k, k] per axis

    def check(self) -> None:
        k = self.max_shift
        if k is not None and (
            isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0
        ):
            raise ValueError(f"max_shift must be None or an integer >= 0, got {k!r}")

    def check_input(self, input_shape: tuple[int, ...]) -> str | None:
        if len(input_shape) < 2:
            return (
                f"shift needs inputs shaped (channels, *spatial) with at least one spatial "
                f"axis, got {tuple(input_shape)}"
            )
        return None

    def _offsets(self, length: int) -> range:
        if self.max_shift is None:
            return range(length)
        k = int(self.max_shift)
        return range(-k, k + 1)

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        problem = self.check_input(tuple(x.shape[1:]))
        if problem:
            raise ValueError(problem)
        n = x.shape[0]
        for dim in range(2, x.ndim):  # spatial axes of the batch
            offsets = self._offsets(x.shape[dim])
            off = torch.randint(offsets.start, offsets.stop, (n,), generator=generator)
            x = _roll_each(x, dim, off)
        return x

    def orbit(self, x: torch.Tensor) -> torch.Tensor:
        """All shifts (every offset combination over the spatial axes), identity first."""
        out = [x]
        for dim in range(2, x.ndim):
            offsets = [o for o in self._offsets(x.shape[dim]) if o != 0]
            out = out + [torch.roll(y, o, dims=dim) for y in out for o in offsets]
        return torch.stack(out)


def _roll_each(x: torch.Tensor, dim: int, off: torch.Tensor) -> torch.Tensor:
    """``torch.roll`` of each sample of ``x`` along ``dim`` by its own offset ``off[i]``."""
    n, length = x.shape[0], x.shape[dim]
    # roll by s: out[..., i, ...] = x[..., (i - s) mod L, ...]
    idx = (torch.arange(length)[None, :] - off[:, None]) % length  # (n, L)
    view = [n] + [1] * (x.ndim - 1)
    view[dim] = length
    return torch.gather(x, dim, idx.reshape(view).to(x.device).expand(x.shape))


@dataclasses.dataclass(kw_only=True)
class Flip(Transform):
    """A random reflection of each sample along each spatial axis (each with probability 1/2).

    Inputs are ``(n, C, *spatial)``; 1-D inputs are reversed, 2-D images flipped
    horizontally and/or vertically. The group has 2 (1-D) or 4 (2-D) elements.
    """

    name = "flip"

    def check_input(self, input_shape: tuple[int, ...]) -> str | None:
        if len(input_shape) < 2:
            return (f"flip needs inputs shaped (channels, *spatial) with at least one spatial "
                    f"axis, got {tuple(input_shape)}")
        return None

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        problem = self.check_input(tuple(x.shape[1:]))
        if problem:
            raise ValueError(problem)
        for dim in range(2, x.ndim):
            mask = torch.rand(x.shape[0], generator=generator) < 0.5
            view = (-1,) + (1,) * (x.ndim - 1)
            x = torch.where(mask.reshape(view).to(x.device), x.flip(dim), x)
        return x

    def orbit(self, x: torch.Tensor) -> torch.Tensor:
        out = [x]
        for dim in range(2, x.ndim):
            out = out + [y.flip(dim) for y in out]
        return torch.stack(out)


@hookimpl
def register_transforms(register):
    register(Rotate)
    register(Permute)
    register(Shift)
    register(Flip)
    register(SignFlip)
