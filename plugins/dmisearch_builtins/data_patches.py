"""Patch targets: regression on Gaussian inputs with local, translation-invariant or global targets.

The three targets differ only in their symmetries, so learning curves on them separate what
locality and weight sharing buy (docs/science.md):

* ``local_invariant``: ``f(x) = c * sum_p g(x_p)``, one random function ``g`` of a patch,
  shared by all patch positions ``p``: local, and exactly invariant to cyclic shifts;
* ``local``: ``f(x) = c * sum_p g_p(x_p)``, an independent random ``g_p`` per position:
  local, not invariant;
* ``global``: ``f(x) = c * g(<w, x> / |w|)``, one random function of one random direction
  of the whole flattened input: not local;
* ``single``: ``f(x) = c * g(x_0)``, one random function of the first patch only (the
  first ``q`` positions): local, sparse in the input coordinates, not invariant. With
  ``q = 1`` on a single channel it depends on one coordinate: aligned with the axes, which
  coordinate-wise optimisers (Adam) can exploit and a fixed rotation hides.

Patches are taken at every position with circular wrap-around (stride 1): in 1-D the patch at
position ``i`` is ``x[:, i], x[:, i+1], ..., x[:, i+q-1]`` (indices mod ``L``, all channels);
in 2-D it is the ``q x q`` block starting at ``(i, j)`` (mod ``H``, ``W``). So there are
``P = L`` (1-D) or ``P = H * W`` (2-D) patches of ``dim = C * q`` or ``C * q * q`` numbers,
flattened channel first, then offset (row-major).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch

from dmisearch.components import DataGenerator, DataInfo, Split
from dmisearch.seeding import derive_seed
from dmisearch_builtins.checks import check_count, check_noise, check_seed, check_shape, is_int

TARGETS = ("local_invariant", "local", "global", "single")
NONLINEARITIES = ("polynomial", "relu", "tanh")
#: Highest polynomial degree: the Wick product below keeps 2**degree partial products.
MAX_DEGREE = 8
#: Inputs drawn (with a seed derived from ``seed``) to estimate the target's scale.
SCALE_SAMPLES = 4096
#: Elements (float64) of the intermediate tensors evaluated at once, to bound memory.
EVAL_BUDGET = 1 << 22




# --------------------------------------------------------------------------------------------
# the random functions
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Model:
    """The fixed random parts of one parameter set (float64, CPU), shared between instances.

    ``a`` has shape ``(F, k, dim)`` (polynomial: ``k = degree`` projections) or
    ``(F, features, dim)`` (relu, tanh), with ``F = 1`` for one shared function and
    ``F = P`` for one function per patch; ``v`` is ``(F, features)`` (relu, tanh only);
    ``w`` is the global direction ``(d,)`` (global only). ``cov`` (polynomial: the
    ``(F, k, k)`` covariance of the projections) and ``mean`` (relu: ``(F, features)``, the
    mean of each unit) are derived from ``a``.
    """

    shape: tuple[int, ...]
    target: str
    q: int
    nonlinearity: str
    a: torch.Tensor
    v: torch.Tensor | None
    w: torch.Tensor | None
    cov: torch.Tensor | None = None
    mean: torch.Tensor | None = None
    scale: float = 1.0


def _patches(x: torch.Tensor, q: int) -> torch.Tensor:
    """All ``q``-patches with wrap-around: ``(n, C, *spatial)`` -> ``(n, P, C * q**nd)``."""
    n, c = x.shape[:2]
    nd = x.ndim - 2
    for axis in range(2, x.ndim):  # append the first q - 1 positions: circular padding
        x = torch.cat([x, x.narrow(axis, 0, q - 1)], dim=axis)
    for axis in range(2, 2 + nd):  # (n, C, *spatial, q, ..., q): offsets last, row-major
        x = x.unfold(axis, q, 1)
    # (n, *spatial, C, *offsets) -> (n, P, dim), each patch flattened channel first.
    perm = (0, *range(2, 2 + nd), 1, *range(2 + nd, 2 + 2 * nd))
    return x.permute(perm).reshape(n, -1, c * q**nd)


def _wick(u: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """Wick product ``:u_1 u_2 ... u_k:`` of jointly Gaussian ``u``: ``(n, P, k)`` -> ``(n, P)``.

    ``cov`` ``(F, k, k)`` is the covariance of ``u`` under ``x ~ N(0, I)`` (``F`` is 1 or
    ``P``). Uses ``:u_S u_m: = u_m :u_S: - sum_{j in S} cov[j, m] :u_{S - j}:``, so that the
    result is the product minus all its lower-order parts: a polynomial of degree exactly k
    orthogonal (under N(0, I)) to every polynomial of lower degree, of mean 0.
    """
    memo: dict[int, torch.Tensor | None] = {0: None}  # None: the constant 1

    def w(mask: int) -> torch.Tensor | None:
        if mask in memo:
            return memo[mask]
        m = mask.bit_length() - 1
        rest = mask & ~(1 << m)
        prev = w(rest)
        out = u[..., m] if prev is None else u[..., m] * prev
        for j in range(m):
            if rest >> j & 1:
                sub = w(rest & ~(1 << j))
                c = cov[:, j, m]  # (F,), broadcast over rows
                out = out - (c if sub is None else c * sub)
        memo[mask] = out
        return out

    k = u.shape[-1]
    out = w((1 << k) - 1)
    assert out is not None
    return out


def _g(model: _Model, z: torch.Tensor) -> torch.Tensor:
    """The patch functions at patches ``z`` ``(n, P, dim)``: ``(n, P)``."""
    n, p, dim = z.shape
    shared = model.a.shape[0] == 1
    if shared:  # one function for all positions: a plain matrix product
        u = z @ (model.a[0].T / math.sqrt(dim))
    else:
        u = torch.einsum("npd,pkd->npk", z, model.a / math.sqrt(dim))
    if model.nonlinearity == "polynomial":
        assert model.cov is not None
        return _wick(u, model.cov)
    assert model.v is not None
    if model.nonlinearity == "relu":
        assert model.mean is not None
        h = torch.relu(u) - model.mean
    else:  # tanh is odd: its mean under a centred Gaussian is 0
        h = torch.tanh(u)
    if shared:
        return h @ model.v[0]
    return torch.einsum("npf,pf->np", h, model.v)


def _raw(model: _Model, x: torch.Tensor) -> torch.Tensor:
    """The target before scaling, in float64: ``(n, *shape)`` -> ``(n,)``."""
    if model.target == "global":
        assert model.w is not None
        t = x.reshape(len(x), -1) @ model.w / model.w.norm()  # (n,), exactly N(0, 1)
        return _g(model, t[:, None, None])[:, 0]
    z = _patches(x, model.q)
    if model.target == "single":
        z = z[:, :1]  # the first patch only
    return _g(model, z).sum(dim=1) / math.sqrt(z.shape[1])


def _evaluate(model: _Model, x: torch.Tensor) -> torch.Tensor:
    """``model.scale * raw target`` at ``x``, in chunks, as float32 ``(n, 1)`` on the CPU."""
    x = x.detach().to(device="cpu", dtype=torch.float64)
    if len(x) == 0:
        return torch.zeros((0, 1), dtype=torch.float32)
    if model.target == "global":
        per_row = math.prod(model.shape)
    else:
        p = math.prod(model.shape[1:])
        width = (2 ** model.a.shape[1] + model.a.shape[1] if model.nonlinearity == "polynomial"
                 else 2 * model.a.shape[1])
        per_row = p * (3 * model.a.shape[2] + width)  # rolled copies, patches, products
    rows = max(1, EVAL_BUDGET // per_row)
    with torch.no_grad():
        out = torch.cat([_raw(model, c) for c in torch.split(x, rows)])
    return (out * model.scale).float()[:, None]


@functools.lru_cache(maxsize=16)
def _model(shape: tuple[int, ...], target: str, q: int, degree: int, nonlinearity: str,
           features: int, seed: int) -> _Model:
    """Draw the random functions of one parameter set and their output scale, once."""
    g = torch.Generator().manual_seed(derive_seed(seed, "patches", target, nonlinearity))
    f64 = torch.float64
    w = None
    if target == "global":
        w = torch.randn(math.prod(shape), generator=g, dtype=f64)
        n_funcs, dim = 1, 1
    else:
        n_funcs = 1 if target in ("local_invariant", "single") else math.prod(shape[1:])
        dim = shape[0] * q ** (len(shape) - 1)
    units = degree if nonlinearity == "polynomial" else features
    a = torch.randn((n_funcs, units, dim), generator=g, dtype=f64)
    v = None
    if nonlinearity != "polynomial":
        v = torch.randn((n_funcs, features), generator=g, dtype=f64) / math.sqrt(features)
    cov = mean = None
    if nonlinearity == "polynomial":
        cov = torch.einsum("fkd,fjd->fkj", a, a) / dim  # covariance of u = <a, z> / sqrt(dim)
    elif nonlinearity == "relu":
        # E relu(u) for u ~ N(0, s^2) is s / sqrt(2 pi), with s = |a| / sqrt(dim).
        mean = a.norm(dim=-1) / math.sqrt(2 * math.pi * dim)  # (F, features)
    model = _Model(tuple(shape), target, q, nonlinearity, a, v, w, cov, mean)
    xg = torch.Generator().manual_seed(derive_seed(seed, "patches", "scale"))
    x = torch.randn((SCALE_SAMPLES, *shape), generator=xg, dtype=torch.float32)
    std = float(_evaluate(model, x).double().std())
    if not math.isfinite(std) or std < 1e-12:
        raise ValueError(
            f"patches target '{target}' (seed={seed}) is constant or non-finite (std {std:g} "
            f"over {SCALE_SAMPLES} inputs); try another seed or nonlinearity"
        )
    return dataclasses.replace(model, scale=1.0 / std)


# --------------------------------------------------------------------------------------------
# the generator
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(kw_only=True)
class Patches(DataGenerator):
    """Regression on Gaussian inputs with a local-invariant, local, global or single-patch target.

    Inputs ``x`` are N(0, I) of ``shape`` ``(C, L)`` or ``(C, H, W)``. With ``P`` patches
    ``x_p`` of ``q`` (1-D) or ``q x q`` (2-D) positions, all channels, taken at every position
    with wrap-around (``P = L`` or ``H * W``; see the module docstring), the targets are

    * ``local_invariant``: ``f(x) = c / sqrt(P) * sum_p g(x_p)``, one ``g`` for all patches;
    * ``local``: ``f(x) = c / sqrt(P) * sum_p g_p(x_p)``, an independent ``g_p`` per patch;
    * ``global``: ``f(x) = c * g(<w, x> / |w|)`` with a Gaussian direction ``w`` over all
      ``d = prod(shape)`` inputs (``<w, x> / |w|`` is exactly N(0, 1)); ``g`` takes one number;
    * ``single``: ``f(x) = c * g(x_0)``, the first patch only (sparse; with ``q = 1`` and
      one channel, a function of the single coordinate ``x[0, 0]``).

    A random function ``g`` of ``z`` in R^dim (``dim = C*q`` or ``C*q*q``; 1 for global) is

    * ``polynomial``: the Wick product ``g(z) = :u_1 u_2 ... u_degree:`` of
      ``u_i = <a_i, z> / sqrt(dim)`` with independent a_i ~ N(0, I): the product
      ``u_1 ... u_degree`` minus its lower-order parts, so that ``g`` has degree exactly
      ``degree`` and is orthogonal under N(0, I) to every lower-degree polynomial (mean 0, no
      linear or constant shortcut). ``degree = 1``: ``u_1``; ``degree = 2``:
      ``u_1 u_2 - <a_1, a_2> / dim``; for global, ``g`` is ``+-He_degree`` (Hermite);
    * ``relu`` / ``tanh``: ``g(z) = sum_j v_j (s(u_j) - E s(u_j))`` over ``features`` units,
      ``u_j = <a_j, z> / sqrt(dim)``, a_j ~ N(0, I), v_j ~ N(0, 1/features); the mean
      ``E s(u_j)`` under z ~ N(0, I) (``|a_j| / sqrt(2 pi dim)`` for relu, 0 for tanh) is
      subtracted so that every target has mean exactly 0. ``degree`` is not used.

    The constant ``c`` makes the noiseless target's variance 1 (estimated once from 4096
    inputs drawn with a seed derived from ``seed``). Gaussian label noise of standard
    deviation ``noise`` is added to training AND test targets (test MSE floor ``noise**2``).
    The random functions depend only on the hyperparameters (``seed`` among them); the seed
    given to ``sample`` chooses the inputs and the noise. ``target_fn(x)`` evaluates the
    noiseless target.
    """

    name = "patches"
    shape: tuple[int, ...] = (1, 32)  # one input: (C, L) or (C, H, W)
    target: str = "local_invariant"  # local_invariant, local, global or single (see above)
    q: int = 3  # patch size: q positions (1-D) or q x q (2-D), 1 <= q <= smallest extent
    degree: int = 2  # degree of the polynomial patch functions (1..8; polynomial only)
    nonlinearity: str = "polynomial"  # patch functions: "polynomial", "relu" or "tanh"
    features: int = 16  # random units per relu / tanh patch function
    noise: float = 0.0  # std of Gaussian noise on train AND test targets (MSE floor noise**2)
    seed: int = 0  # seeds the random functions (not the inputs: see sample())

    def check(self) -> None:
        shape = self.shape
        check_shape(shape)
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {list(TARGETS)}, got {self.target!r}")
        smallest = min(shape[1:])
        if not is_int(self.q) or not 1 <= self.q <= smallest:
            raise ValueError(
                f"q (patch size) must be an integer from 1 to the smallest spatial extent "
                f"{smallest} of shape {tuple(shape)}, got {self.q!r}"
            )
        if self.nonlinearity not in NONLINEARITIES:
            raise ValueError(
                f"nonlinearity must be one of {list(NONLINEARITIES)}, got {self.nonlinearity!r}"
            )
        if not is_int(self.degree) or not 1 <= self.degree <= MAX_DEGREE:
            raise ValueError(
                f"degree must be an integer from 1 to {MAX_DEGREE}, got {self.degree!r}"
            )
        if not is_int(self.features) or self.features < 1:
            raise ValueError(f"features must be a positive integer, got {self.features!r}")
        check_noise(self.noise)
        check_seed(self.seed)

    def _model(self) -> _Model:
        return _model(tuple(int(s) for s in self.shape), self.target, int(self.q),
                      int(self.degree), self.nonlinearity, int(self.features), int(self.seed))

    def describe(self) -> DataInfo:
        return DataInfo(input_shape=tuple(self.shape), task="regression", out_dim=1)

    def target_fn(self, x: torch.Tensor) -> torch.Tensor:
        """The noiseless target at ``x``: (n, *shape) -> (n, 1) float32 on the CPU."""
        return _evaluate(self._model(), x)

    def sample(self, n_train: int, n_test: int, seed: int) -> Split:
        check_count(n_train, "n_train")
        check_count(n_test, "n_test")
        shape = tuple(self.shape)
        out = []
        # Train and test use separate streams: the test set does not depend on n_train.
        for part, n in (("train", n_train), ("test", n_test)):
            g = torch.Generator().manual_seed(derive_seed(seed, "patches", "x", part))
            x = torch.randn((n, *shape), generator=g, dtype=torch.float32)
            y = self.target_fn(x)
            if self.noise > 0:
                g = torch.Generator().manual_seed(derive_seed(seed, "patches", "noise", part))
                y = y + float(self.noise) * torch.randn(y.shape, generator=g)
            out += [x, y]
        return Split(*out)
