"""Learning curves with a known truth, for measuring what dmisearch's intervals promise.

A noise model draws the per-seed test errors of one trial, ``err[size, seed]``, around a
power-law mean curve ``mu(n) = a n^-b + c`` whose expectation is known, so the true score
(``aulc`` of the expected curve, relative to a fixed trivial error) is known too. Seeds are
independent; within a seed the errors at different sizes are correlated (one data draw and
one initialisation serve the whole curve), as in a real study.

Noise models (``MODELS``): ``lognormal`` (multiplicative, the shape stored studies show),
``t3`` (heavy tails: Student's t with 3 degrees of freedom, floored at 5% of the mean) and
``bad_seeds`` (now and then a seed trains badly: its whole curve is 4 times worse, capped
at the trivial error; rare, large, one-sided).

``coverage`` and ``false_positive_rate`` run :mod:`dmisearch.stats` on many simulated
trials; ``benchmarks/bench_intervals.py`` tabulates them and the tests check them.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats as st

from dmisearch import stats
from dmisearch.metrics import aulc

SIZES = np.array([16.0, 32.0, 64.0, 128.0, 256.0])
BASELINE = 1.0


@dataclasses.dataclass(frozen=True)
class NoiseModel:
    """How one seed's errors scatter around the mean curve."""

    name: str
    sigma: float = 0.3  # scale of the multiplicative noise
    rho: float = 0.5  # share of the noise common to every size of one seed
    p_bad: float = 0.1  # bad_seeds: how often a seed trains badly
    a: float = 2.0
    b: float = 0.5
    c: float = 0.02

    def mean_curve(self, sizes: np.ndarray = SIZES) -> np.ndarray:
        """The noise-free curve ``mu(n)``."""
        return self.a * sizes ** -self.b + self.c

    def _factor(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """Multiplicative noise, shape (..., sizes, seeds), seed effect shared by sizes."""
        common = (*shape[:-2], 1, shape[-1])
        if self.name == "t3":
            def draw(s: tuple[int, ...]) -> np.ndarray:
                return st.t.rvs(3, size=s, random_state=rng) / math.sqrt(3)
            z = self.rho * draw(common) + math.sqrt(1 - self.rho ** 2) * draw(shape)
            return np.maximum(1 + self.sigma * z, 0.05)
        z = self.rho * rng.standard_normal(common) + math.sqrt(
            1 - self.rho ** 2) * rng.standard_normal(shape)
        return np.exp(self.sigma * z)

    def draw(self, seeds: int, reps: int, rng: np.random.Generator,
             sizes: np.ndarray = SIZES) -> np.ndarray:
        """Errors of ``reps`` independent trials: shape (reps, sizes, seeds)."""
        shape = (reps, len(sizes), seeds)
        err = self.mean_curve(sizes)[:, None] * self._factor(rng, shape)
        if self.name == "bad_seeds":
            bad = rng.random((reps, 1, seeds)) < self.p_bad
            err = np.where(bad, np.minimum(4 * err, BASELINE), err)
        return err

    def expected_curve(self, sizes: np.ndarray = SIZES) -> np.ndarray:
        """E[err(n)]: closed form for ``lognormal``, else a fixed 2-million-draw average."""
        if self.name == "lognormal":
            return self.mean_curve(sizes) * math.exp(self.sigma ** 2 / 2)
        big = self.draw(2_000, 1_000, np.random.default_rng(12345), sizes)
        return big.mean(axis=(0, 2))

    def true_score(self, sizes: np.ndarray = SIZES) -> float:
        return aulc(sizes, self.expected_curve(sizes), BASELINE, 1e-300)


MODELS = {m.name: m for m in (NoiseModel("lognormal"), NoiseModel("t3"),
                              NoiseModel("bad_seeds", sigma=0.2))}


def score(err: np.ndarray, sizes: np.ndarray = SIZES) -> float:
    """The aulc of the seed-mean curve of ``err[size, seed]``."""
    return aulc(sizes, err.mean(axis=1), BASELINE, 1e-300)


def coverage(model: NoiseModel, seeds: int, reps: int, rng: np.random.Generator,
             confidence: float = 0.95) -> float:
    """Share of ``reps`` simulated trials whose interval holds the true score."""
    truth = model.true_score()
    hits = 0
    for err in model.draw(seeds, reps, rng):
        iv = stats.interval(err, score, confidence=confidence)
        hits += iv.low <= truth <= iv.high
    return hits / reps


def false_positive_rate(model: NoiseModel, seeds: int, reps: int, rng: np.random.Generator,
                        *, paired: bool, shared: float = 0.7,
                        confidence: float = 0.95) -> float:
    """Share of ``reps`` comparisons of two *equal* triplets called different. Paired: on
    the same seeds, which make their errors correlated (``shared`` of the log-noise in
    common, symmetrically, so both keep one distribution); unpaired: independent seeds."""
    calls = 0
    a_all = model.draw(seeds, reps, rng)
    b_all = model.draw(seeds, reps, rng)
    if paired:  # mix the two draws symmetrically: equal marginals, correlated per seed
        mu = model.mean_curve()[:, None]
        la, lb = np.log(a_all / mu), np.log(b_all / mu)
        k = math.sqrt(1 - shared ** 2)
        a_all, b_all = mu * np.exp(shared * la + k * lb), mu * np.exp(shared * lb + k * la)
    for a, b in zip(a_all, b_all, strict=True):
        d = stats.difference(a, score, b, score, paired=paired, confidence=confidence)
        calls += d.p_value < 1 - confidence
    return calls / reps
