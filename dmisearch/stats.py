"""Uncertainty over seeds: intervals for one score, tests for two, Holm for many.

A trial's learning curve is measured on a few seeds (each seed draws its own data, initial
network and batch order), and a score (``aulc``, ``final_error``, ``beta``) is a smooth
function of the curve averaged over those seeds. The seeds are independent, so the
uncertainty of a score is that of a smooth function of a mean of i.i.d. vectors:

* **Intervals** come from the jackknife over seeds (leave one seed out, recompute the score)
  and Student's t with ``seeds - 1`` degrees of freedom, centred on the score itself. This is
  the delta method without derivatives; the t quantile carries the small-sample correction
  that resampling cannot (``benchmarks/bench_intervals.py`` measures coverage at 3 to 16
  seeds: 94-96% at a 95% level, where scipy's BCa and percentile bootstraps give 70-90%).
* Below ``MIN_SEEDS`` seeds no interval is given (``Interval.note`` says why): with two
  seeds one degree of freedom cannot estimate a spread that users can rely on.
* **Two scores** are compared through their difference: *paired* when both were measured
  on the same seeds (the jackknife leaves the same seed out of both, so shared data draws
  cancel), else Welch's unpaired form. The two-sided p-value tests a difference of 0;
  ``equivalence_p`` tests a difference inside a margin (two one-sided tests).
* **Many comparisons** at once are corrected with Holm's step-down method (``holm``).

``final_error`` is handled on the log scale (its interval is exp of the log interval),
where the mean of a skewed positive error is closer to normal. ``n_to_target`` is a
first-crossing, not smooth in the curve: no interval is given for it (measured coverage
below 93% at every seed count).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

#: Fewest seeds for which an interval is given (its coverage is measured from 3 seeds on).
MIN_SEEDS = 3

Statistic = Callable[[np.ndarray], float]  # errors (sizes, seeds) -> score


@dataclasses.dataclass(frozen=True)
class Interval:
    """A score, its standard error and a confidence interval (NaN with ``note`` if none)."""

    estimate: float
    low: float = math.nan
    high: float = math.nan
    se: float = math.nan
    df: float = math.nan
    seeds: int = 0
    note: str = ""  # why there is no interval, e.g. "n/a: 2 seeds"

    @property
    def available(self) -> bool:
        return not math.isnan(self.low)

    def text(self, digits: int = 3) -> str:
        if not self.available:
            return self.note or "n/a"
        return f"[{self.low:.{digits}g}, {self.high:.{digits}g}]"


@dataclasses.dataclass(frozen=True)
class Difference:
    """``a - b`` of two scores with an interval and the two-sided p-value of ``a == b``."""

    estimate: float
    low: float
    high: float
    se: float
    df: float
    p_value: float
    paired: bool
    note: str = ""

    @property
    def available(self) -> bool:
        return not math.isnan(self.p_value)

    def equivalence_p(self, margin: float) -> float:
        """p-value of "the difference lies within +-margin" (two one-sided tests): small
        when the data show the two scores to be the same up to ``margin``."""
        if not self.available:
            return math.nan
        if self.se == 0:
            return 0.0 if abs(self.estimate) < margin else 1.0
        t = stats.t(self.df)
        return float(max(t.sf((self.estimate + margin) / self.se),
                         t.cdf((self.estimate - margin) / self.se)))

    def beyond_p(self, margin: float) -> float:
        """p-value of "the difference lies beyond +-margin" on the side it falls on."""
        if not self.available:
            return math.nan
        if self.se == 0:
            return 0.0 if abs(self.estimate) > margin else 1.0
        t = stats.t(self.df)
        return float(min(t.sf((self.estimate - margin) / self.se),
                         t.cdf((self.estimate + margin) / self.se)))


def no_interval(estimate: float, seeds: int, note: str = "") -> Interval:
    return Interval(float(estimate), seeds=seeds,
                    note=note or f"n/a: {seeds} seed{'s' if seeds != 1 else ''}")


def pseudo_values(err: np.ndarray, statistic: Statistic) -> tuple[float, np.ndarray]:
    """The statistic on all seeds (columns of ``err``) and its jackknife pseudo-values."""
    n = err.shape[1]
    full = float(statistic(err))
    keep = ~np.eye(n, dtype=bool)
    loo = np.array([statistic(err[:, keep[i]]) for i in range(n)], dtype=float)
    with np.errstate(invalid="ignore"):  # inf - inf: callers check finiteness
        return full, n * full - (n - 1) * loo


def interval(err: np.ndarray, statistic: Statistic, *, confidence: float = 0.95,
             log: bool = False) -> Interval:
    """Jackknife-t interval of ``statistic`` over the seeds (columns) of ``err``; with
    ``log``, computed for log(statistic) and mapped back (for positive scores)."""
    n = err.shape[1]
    fn = (lambda e: math.log(max(statistic(e), 1e-300))) if log else statistic
    if n < MIN_SEEDS:
        return no_interval(statistic(err), n)
    full, pseudo = pseudo_values(err, fn)
    if not np.all(np.isfinite(pseudo)):
        return no_interval(statistic(err), n, "n/a: score not finite on every subset")
    se = float(pseudo.std(ddof=1) / math.sqrt(n))
    q = float(stats.t.ppf(0.5 + confidence / 2, n - 1))
    low, high = full - q * se, full + q * se
    if log:
        return Interval(math.exp(full), math.exp(low), math.exp(high), se, n - 1, n)
    return Interval(full, low, high, se, n - 1, n)


def difference(err_a: np.ndarray, stat_a: Statistic, err_b: np.ndarray, stat_b: Statistic,
               *, paired: bool, confidence: float = 0.95) -> Difference:
    """``stat_a(err_a) - stat_b(err_b)``: paired (same seeds, same column order) or Welch."""
    na, nb = err_a.shape[1], err_b.shape[1]
    est = float(stat_a(err_a) - stat_b(err_b))
    nan = math.nan
    if paired:
        if na != nb:
            raise ValueError(f"a paired difference needs the same seeds, got {na} and {nb}")
        if na < MIN_SEEDS:
            return Difference(est, nan, nan, nan, nan, nan, True, f"n/a: {na} seeds")
        both = np.concatenate([err_a, err_b], axis=0)
        k = err_a.shape[0]
        _, pseudo = pseudo_values(both, lambda e: stat_a(e[:k]) - stat_b(e[k:]))
        se = float(pseudo.std(ddof=1) / math.sqrt(na))
        df = float(na - 1)
    else:
        if min(na, nb) < MIN_SEEDS:
            return Difference(est, nan, nan, nan, nan, nan, False,
                              f"n/a: {min(na, nb)} seeds")
        _, pa = pseudo_values(err_a, stat_a)
        _, pb = pseudo_values(err_b, stat_b)
        va, vb = pa.var(ddof=1) / na, pb.var(ddof=1) / nb
        se = float(math.sqrt(va + vb))
        df = float((va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))) if se else (
            float(min(na, nb) - 1))
    if not math.isfinite(se):
        return Difference(est, nan, nan, nan, nan, nan, paired,
                          "n/a: score not finite on every subset")
    if se == 0:  # identical curves up to a constant: no spread to test against
        p = 1.0 if est == 0 else 0.0
        return Difference(est, est, est, 0.0, df, p, paired)
    q = float(stats.t.ppf(0.5 + confidence / 2, df))
    p = float(2 * stats.t.sf(abs(est) / se, df))
    return Difference(est, est - q * se, est + q * se, se, df, p, paired)


def holm(p_values: Sequence[float], family: int | None = None) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count).

    ``family``: the number of hypotheses of the whole family when ``p_values`` are only
    some of them; the others are taken to have larger p-values, which can only make the
    adjustment more conservative than Holm's on the whole family."""
    idx = [i for i, p in enumerate(p_values) if not math.isnan(p)]
    order = sorted(idx, key=lambda i: p_values[i])
    m = max(len(order), family or 0)
    out = [math.nan] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out
