"""Learning curves of kernel regression predicted from a kernel's spectrum, before training.

Kernel ridge regression on ``p`` samples, ``min_f sum_i (f(x_i) - y_i)^2 + lam ||f||_K^2``,
has an expected test error that depends on the data only through the kernel's eigenvalues
``eta_k`` on the data distribution and the target's coefficients ``a_k`` along the
eigenfunctions (Bordelon, Canatar & Pehlevan, ICML 2020; Canatar, Bordelon & Pehlevan, Nature
Communications 12, 2914, 2021). With ``kappa`` the solution of

    kappa = lam + kappa * sum_k eta_k / (p eta_k + kappa),
    gamma = sum_k p eta_k^2 / (p eta_k + kappa)^2,

the generalisation error (the mean squared distance to the target function) is

    E_g(p) = 1 / (1 - gamma) * sum_k kappa^2 a_k^2 / (p eta_k + kappa)^2.

Both are estimated from a pool of ``N`` inputs: the eigenvalues of ``K(pool, pool) / N`` and
``a_k = u_k . y / sqrt(N)`` for the eigenvectors ``u_k`` (so that ``sum_k a_k^2`` is the
target's mean square). Label noise is not separated from the target: it shows up as power
spread over the smallest modes.

A pool of ``N`` inputs resolves only part of the spectrum's tail, so the plain estimate
drifts low as ``p`` nears ``N`` (about -20% at ``p = N/4``); the drift is close to linear
in ``1/N``, and :class:`PoolSpectra` removes it by Richardson extrapolation from the pool
and its two halves: ``E = 2 E_N - E_{N/2}``. docs/theory.md states the assumptions and
where they fail.

This module is NumPy only; computing the Gram matrix is the caller's (see :mod:`dmisearch.predict`).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

#: Eigenvalues more negative than this, relative to the largest, are reported as a kernel
#: that is not positive semi-definite; smaller ones are rounding (``N * eps`` scale).
NEGATIVE_TOLERANCE_ULPS = 100


class SpectrumError(ValueError):
    """The Gram matrix is not positive semi-definite beyond rounding."""


@dataclasses.dataclass(frozen=True)
class Spectrum:
    """A kernel's eigenvalues on the data (descending) and the target's power along each
    eigenfunction (``power[k] = a_k^2``, summed over outputs)."""

    eigenvalues: np.ndarray
    power: np.ndarray

    @classmethod
    def from_gram(cls, gram: np.ndarray, y: np.ndarray) -> Spectrum:
        """From ``K(pool, pool)`` (N x N) and targets ``y`` (N, or N x outputs), float64.

        Raises :class:`SpectrumError` on eigenvalues negative beyond rounding (never clipped
        silently); those within rounding are set to 0.
        """
        k = np.asarray(gram, dtype=np.float64)
        n = k.shape[0]
        if k.shape != (n, n):
            raise ValueError(f"the Gram matrix must be square, got shape {k.shape}")
        y2 = np.asarray(y, dtype=np.float64).reshape(n, -1)
        w, u = np.linalg.eigh((k + k.T) / (2 * n))
        w, u = w[::-1], u[:, ::-1]
        scale = max(abs(w[0]), abs(w[-1]), np.finfo(np.float64).tiny)
        floor = -NEGATIVE_TOLERANCE_ULPS * n * np.finfo(np.float64).eps * scale
        if w[-1] < floor:
            bad = int((w < floor).sum())
            raise SpectrumError(
                f"the kernel's Gram matrix has {bad} eigenvalue(s) below zero beyond rounding "
                f"(smallest {w[-1]:.3g}, largest {w[0]:.3g}): it is not a valid kernel on "
                "this data")
        w = np.clip(w, 0.0, None)
        coef = u.T @ y2 / math.sqrt(n)  # (N, outputs)
        return cls(eigenvalues=w, power=(coef**2).sum(axis=1))

    def cumulative_power(self) -> np.ndarray:
        """``C(k)``: the fraction of the target's power in the ``k`` largest modes."""
        total = self.power.sum()
        c = np.cumsum(self.power)
        return c / total if total > 0 else np.zeros_like(c)

    def modes_for(self, fraction: float = 0.9) -> int:
        """How many of the kernel's largest modes hold ``fraction`` of the target's power."""
        c = self.cumulative_power()
        return int(np.searchsorted(c, fraction - 1e-12) + 1)


def kappa(eigenvalues: np.ndarray, p: float, ridge: float) -> float:
    """The self-consistent ``kappa`` at ``p`` samples and ridge ``lam`` (>= 0).

    Solves ``1 = lam / kappa + sum_k eta_k / (p eta_k + kappa)`` by bisection on
    ``log kappa`` (the right side decreases in kappa); 0 where ``lam = 0`` and ``p``
    exceeds the number of non-zero modes (interpolation of a finite-rank kernel).
    """
    eta = eigenvalues[eigenvalues > 0]
    if p <= 0:
        raise ValueError(f"p must be positive, got {p}")
    if ridge < 0:
        raise ValueError(f"the ridge must be >= 0, got {ridge}")

    def excess(k: float) -> float:
        return ridge / k + float(np.sum(eta / (p * eta + k))) - 1.0

    if ridge == 0 and len(eta) <= p:
        return 0.0
    lo, hi = 1e-300, max(ridge, float(eta.sum())) * 2 + 1e-300
    while excess(hi) > 0:
        hi *= 2
    lo = hi
    while excess(lo) < 0 and lo > 1e-300:
        lo /= 1e3
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        if excess(mid) > 0:
            lo = mid
        else:
            hi = mid
        if hi / lo - 1 < 1e-13:
            break
    return math.sqrt(lo * hi)


def generalisation_error(spectrum: Spectrum, p: float, ridge: float) -> float:
    """``E_g(p)``: the expected mean squared distance of the kernel regression's prediction
    to the target, at ``p`` training samples and ridge ``lam``."""
    eta, a2 = spectrum.eigenvalues, spectrum.power
    k = kappa(eta, p, ridge)
    if k == 0.0:  # interpolation of a finite-rank kernel: what is outside its span remains
        pos = eta > 0
        gamma = pos.sum() / p
        return float(a2[~pos].sum() / (1 - gamma)) if gamma < 1 else math.inf
    denom = p * eta + k
    gamma = float(np.sum(p * eta**2 / denom**2))
    return float(np.sum(k**2 * a2 / denom**2) / (1 - gamma))


@dataclasses.dataclass(frozen=True)
class PoolSpectra:
    """A pool's spectrum and those of its two halves, for the extrapolated estimate; each
    with its kernel's scale (mean diagonal), to which ridges are relative."""

    full: Spectrum
    halves: tuple[Spectrum, Spectrum]
    scales: tuple[float, float, float]

    @classmethod
    def from_gram(cls, gram: np.ndarray, y: np.ndarray) -> PoolSpectra:
        k = np.asarray(gram, dtype=np.float64)
        y2 = np.asarray(y, dtype=np.float64).reshape(len(k), -1)
        h = len(k) // 2
        parts = [(k, y2), (k[:h, :h], y2[:h]), (k[h:, h:], y2[h:])]
        spectra = [Spectrum.from_gram(g, t) for g, t in parts]
        scales = tuple(float(np.trace(g)) / len(g) for g, _ in parts)
        return cls(spectra[0], (spectra[1], spectra[2]), scales)  # type: ignore[arg-type]

    @property
    def pool(self) -> int:
        return len(self.full.eigenvalues)

    def plain_error(self, p: float, ridge: float) -> float:
        """The pool's own estimate at ``p`` samples, ``ridge`` relative to the kernel's
        mean diagonal (``lam = ridge * mean diag K``, as the ``nngp``/``ntk`` algorithms)."""
        return generalisation_error(self.full, p, ridge * self.scales[0])

    def error(self, p: float, ridge: float) -> float:
        """The extrapolated estimate ``2 E_N - E_{N/2}``; the pool's own where the halves
        are too small for it to stay positive."""
        e_n = self.plain_error(p, ridge)
        e_h = np.mean([generalisation_error(s, p, ridge * c)
                       for s, c in zip(self.halves, self.scales[1:], strict=True)])
        e = 2 * e_n - float(e_h)
        return e if e > 0 and math.isfinite(e) else e_n


def measured_curve(k: np.ndarray, k_test: np.ndarray, y: np.ndarray, y_test: np.ndarray,
                   sizes: list[int], ridge: float, seeds: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """What the theory predicts, measured: kernel ridge regression run as the ``nngp`` and
    ``ntk`` algorithms run it (``lam = ridge * mean diag K``) on ``seeds`` random training
    sets of each size drawn from a large sample (Gram ``k``, cross-kernel ``k_test`` to the
    test set); the mean test MSE (summed over outputs) per size and its standard error."""
    y2, t2 = np.asarray(y).reshape(len(k), -1), np.asarray(y_test).reshape(len(k_test), -1)
    means, errors = [], []
    for p in sizes:
        errs = []
        for _ in range(seeds):
            idx = rng.choice(len(k), p, replace=False)
            kk = k[np.ix_(idx, idx)]
            alpha = np.linalg.solve(kk + ridge * np.mean(np.diag(kk)) * np.eye(p), y2[idx])
            errs.append(np.mean(((k_test[:, idx] @ alpha - t2) ** 2).sum(1)))
        means.append(np.mean(errs))
        errors.append(np.std(errs, ddof=1) / math.sqrt(seeds) if seeds > 1 else math.nan)
    return np.asarray(means), np.asarray(errors)
