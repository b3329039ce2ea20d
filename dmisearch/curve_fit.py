"""Parametric learning curves fitted to a partial curve, and extrapolated to the full one.

Families (LCDB's names; ``e`` is the mean test error over seeds, ``n`` the training size):

``pow3``
    ``e(n) = a n^-b + c``: a power law that levels off at a floor ``c >= 0``.
``exp3``
    ``e(n) = a exp(-b n) + c``: an exponential approach to a floor.

Both are fitted by least squares in log space (``log e``, so that a decade of error weighs
the same at every size) by *variable projection*: for a fixed floor ``c`` the model is a
straight line in ``log(e - c)`` against ``log n`` (pow3) or ``n`` (exp3), solved in closed
form, and ``c`` is searched on a grid between 0 and just under the smallest error. The
search runs on every bootstrap replicate at once (numpy, no iterative solver), so a fit of
200 replicates takes about a millisecond. With fewer sizes than the family has parameters
(two sizes), every floor fits exactly and the floor is set to 0 (``pow3`` becomes a pure
power law through both points). Slopes are kept in ``[0, MAX_SLOPE]``: a rising curve is
extrapolated flat.

:func:`extrapolate` resamples the seeds (a bootstrap over seeds), fits each replicate's mean
curve, and returns the replicates' full curves at the study's sizes: the measured mean
where the size was trained, the fit beyond. The pruner (:mod:`dmisearch.curve_pruner`)
scores them with the study's objective.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

FAMILIES = ("pow3", "exp3")
#: Largest decay rate a fit may take (per decade of n for pow3): steeper is extrapolated
#: at this rate. Error falling as n^-4 or faster is not a learning curve we have seen.
MAX_SLOPE = 4.0
#: Floors searched between 0 and the smallest error (fractions of it).
FLOOR_GRID = np.concatenate([[0.0], 1.0 - np.geomspace(1.0, 1e-3, 47)[1:]])


@dataclasses.dataclass(frozen=True)
class Extrapolation:
    """Full curves at the study's sizes, from the partial one: ``point`` from the mean over
    every seed, ``replicates`` (B, sizes) from the bootstrap over seeds."""

    sizes: np.ndarray
    point: np.ndarray
    replicates: np.ndarray


class FitError(ValueError):
    """The partial curve cannot be fitted (the message says why)."""


def _x(family: str, n: np.ndarray) -> np.ndarray:
    return np.log(n) if family == "pow3" else n.astype(float)


def fit(family: str, sizes: np.ndarray, curves: np.ndarray, floor: float
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit each row of ``curves`` (B, k) at ``sizes`` (k,): arrays ``(log_a, b, c)`` of
    length B for ``e = exp(log_a) g(n; b) + c``."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    y = np.maximum(np.atleast_2d(curves).astype(float), floor)  # (B, k)
    x = _x(family, np.asarray(sizes, float))  # (k,)
    k = len(x)
    grid = FLOOR_GRID[:1] if k < 3 else FLOOR_GRID
    c = y.min(axis=1, keepdims=True) * grid[None, :]  # (B, G)
    z = np.log(np.maximum(y[:, None, :] - c[:, :, None], floor * 1e-6))  # (B, G, k)
    xc = x - x.mean()
    slope = (z * xc).sum(-1) / (xc**2).sum()  # (B, G)
    b = np.clip(-slope, 0.0, MAX_SLOPE)
    log_a = z.mean(-1) + b * x.mean()
    pred = np.log(np.exp(log_a[..., None] - b[..., None] * x) + c[..., None])
    sse = ((pred - np.log(y)[:, None, :]) ** 2).sum(-1)
    j = np.argmin(sse, axis=1)
    rows = np.arange(len(y))
    return log_a[rows, j], b[rows, j], c[rows, j]


def evaluate(family: str, params: tuple[np.ndarray, np.ndarray, np.ndarray],
             sizes: np.ndarray) -> np.ndarray:
    """The fitted curves (B, len(sizes))."""
    log_a, b, c = params
    x = _x(family, np.asarray(sizes, float))
    return np.exp(log_a[:, None] - b[:, None] * x[None, :]) + c[:, None]


def extrapolate(family: str, sizes: np.ndarray, errors: np.ndarray, all_sizes: np.ndarray,
                floor: float, bootstrap: int, seed: int) -> Extrapolation:
    """The full curve at ``all_sizes`` from per-seed ``errors`` (sizes, seeds) measured at
    the first ``len(sizes)`` of them. Raises :class:`FitError` for a curve that cannot be
    fitted: fewer than two sizes or two seeds, or a non-finite error."""
    sizes = np.asarray(sizes, float)
    all_sizes = np.asarray(all_sizes, float)
    errors = np.asarray(errors, float)
    if len(sizes) < 2:
        raise FitError(f"too few sizes ({len(sizes)}; a fit needs 2)")
    if errors.ndim != 2 or errors.shape[1] < 2:
        raise FitError("too few seeds for a bootstrap (needs 2)")
    bad = ~np.isfinite(errors)
    if bad.any():
        i, s = np.argwhere(bad)[0]
        raise FitError(f"non-finite error at n={int(sizes[i])} (seed #{int(s)})")
    k, seeds = errors.shape
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, seeds, size=(bootstrap, seeds))
    reps = errors[:, picks].mean(axis=-1).T  # (B, k)
    means = np.vstack([errors.mean(axis=1), reps])
    params = fit(family, sizes, means, floor)
    full = np.maximum(evaluate(family, params, all_sizes), floor)
    full[:, :k] = means  # measured where trained
    if not np.all(np.isfinite(full)):
        raise FitError("the fit gave a non-finite curve")
    return Extrapolation(all_sizes, full[0], full[1:])


def quantiles(values: np.ndarray, low: float = 0.05, high: float = 0.95
              ) -> tuple[float, float]:
    """The ``low`` and ``high`` quantiles of ``values`` (inf kept)."""
    if len(values) == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(np.asarray(values, float), [low, high], method="nearest")
    return float(lo), float(hi)
