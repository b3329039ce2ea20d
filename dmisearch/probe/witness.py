"""Witness data for the symmetry probe's statistical test, and the test's power.

On the probe's default data, a pair can break a symmetry while the distributions of its
predictions over seeds stay too close for a permutation test over a few seeds to tell apart
(Adam on rotated Gaussian inputs: the coupled runs drift apart by ~0.9 per seed, yet the
energy test has little power). A *witness* is data on which the difference shows: the
default data with a fixed per-coordinate profile applied to its inputs before ``g`` acts.
A coordinate-wise optimiser normalises each input coordinate's gradients on its own, so
inputs whose coordinates differ by orders of magnitude in scale (``anisotropic``) or in how
often they are non-zero (``sparse``) are treated very differently before and after a
rotation that mixes them.

The search keeps the test valid: a *pilot* on a few seeds per candidate picks the witness
(the largest predicted power), and the test that decides runs on *fresh* seeds, independent
of the choice, so the choice cannot inflate its false-positive rate. The prober
(:mod:`dmisearch.probe.prober`) runs it at half of ``alpha``, after the test on the default
data at the other half (Bonferroni: at most ``alpha`` in all). The user guide is
docs/probes.md.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from dmisearch.probe.settings import min_p_value

#: Kinds of witness: a per-coordinate scale, or a per-coordinate probability of being kept.
KINDS = ("anisotropic", "sparse")
#: Power the probe aims at when it says how many seeds would settle a test.
TARGET_POWER = 0.8
#: Seeds per side beyond which the probe stops counting ("more than ...").
MAX_SEEDS = 100_000
#: Random relabellings that estimate the spread of the energy distance under the null.
NULL_RELABELLINGS = 500


@dataclasses.dataclass(frozen=True)
class Witness:
    """The probe's data with a fixed profile over the flattened input coordinates
    ``i = 0..d-1``: ``p_i = 10 ** (-decades * i / (d - 1))``, from 1 down to
    ``10 ** -decades``.

    * ``anisotropic``: coordinate ``i`` scaled by ``p_i``;
    * ``sparse``: coordinate ``i`` kept with probability ``p_i`` (else zero), the mask
      drawn per sample from the generator passed in.

    Both are then rescaled by a constant so that inputs with unit variance per coordinate
    keep a mean square of 1 (learning rates that suit the default data suit the witness).
    Targets are not touched: the witness is another data set, not a transform the pair is
    tested under.
    """

    kind: str
    decades: float

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"witness kind must be one of {list(KINDS)}, got {self.kind!r}")
        if not (math.isfinite(self.decades) and self.decades > 0):
            raise ValueError(f"witness decades must be a positive number, got {self.decades!r}")

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.decades:g}"

    def describe(self) -> str:
        what = ("coordinate i scaled by" if self.kind == "anisotropic"
                else "coordinate i kept (else zeroed) with probability")
        return (f"the inputs with {what} 10^(-{self.decades:g} i/(d-1)), then rescaled to "
                f"keep their mean square")

    def profile(self, d: int) -> torch.Tensor:
        """``p_i`` for ``d`` coordinates (float64)."""
        if d < 2:
            return torch.ones(d, dtype=torch.float64)
        return 10.0 ** (-self.decades * torch.arange(d, dtype=torch.float64) / (d - 1))

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The witness's inputs from the data's ``x`` of shape ``(n, *input_shape)``."""
        flat = x.reshape(len(x), -1)
        p = self.profile(flat.shape[1])
        if self.kind == "anisotropic":
            out = flat * (p / p.square().mean().sqrt()).to(flat)
        else:
            keep = torch.rand(flat.shape, generator=generator, dtype=torch.float64) < p
            out = flat * keep.to(flat) / float(p.mean().sqrt())
        return out.reshape(x.shape)


#: The candidates a search tries, in order: scales over 2 and 3 decades, and sparsity over
#: 2. For Adam under rotate on data seeds 0 to 4 the first two gave p <= 4e-4 over 8 seeds
#: per side, where the default data gave p = 0.05 to 0.7 (and the search detects it on 96
#: of 100 data seeds: docs/probes.md).
CANDIDATES: tuple[Witness, ...] = (Witness("anisotropic", 2.0), Witness("anisotropic", 3.0),
                                   Witness("sparse", 2.0))


# --------------------------------------------------------------------------------------------
# effect size and power of the energy test
# --------------------------------------------------------------------------------------------


def _normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2))


@dataclasses.dataclass(frozen=True)
class Effect:
    """How far apart two samples of prediction vectors are, and what that predicts for the
    energy test at other sample sizes (normal and scaled-chi-square approximations: rough).

    ``energy`` is the unbiased (U-statistic) energy distance ``2E|A-B| - E|A-A'| -
    E|B-B'|``, 0 in expectation when the distributions are equal; ``coefficient`` is it
    over ``2E|A-B|`` (scale-free, at most 1); ``sd`` its standard deviation at ``seeds``
    per side if the distributions differ as observed (first-order Hoeffding projection);
    ``sd_null`` its spread over random relabellings of the pooled samples (the null, a
    little wider when they do differ, which errs towards less power) and ``mean_null`` the
    mean of the biased (V-) statistic under the null, ``2 E|Z-Z'| / seeds`` over the pool.
    """

    energy: float
    coefficient: float
    sd: float
    sd_null: float
    mean_null: float
    seeds: int

    def margin(self, seeds: int, level: float) -> float:
        """Standardised distance of the expected statistic above the test's critical value
        at ``seeds`` per side: the predicted power is ``Phi(margin)``. The critical value
        shrinks as ``1/S`` (under the null the statistic is a degenerate U-statistic), the
        spread of the estimate under the observed difference as ``1/sqrt(S)``."""
        if min_p_value(seeds) >= level:
            return -math.inf  # no relabelling test of this size can reject at ``level``
        ratio = self.seeds / seeds
        critical = self.critical(level) * ratio
        # first-order spread, plus the second-order (null-like) part that dominates near
        # the null
        sd = math.sqrt(self.sd**2 * ratio + (self.sd_null * ratio) ** 2)
        if sd <= 0:
            return math.inf if self.energy > critical else -math.inf
        return (self.energy - critical) / sd

    def critical(self, level: float) -> float:
        """The statistic's ``1 - level`` quantile under the null at ``self.seeds`` per
        side: ``n`` times the biased (V-) statistic tends to a weighted sum of chi-squares,
        here matched to a scaled chi-square ``c * chi2_k`` by its mean and variance; the
        unbiased statistic is the V-statistic less that mean."""
        from scipy.stats import chi2

        if self.sd_null <= 0 or self.mean_null <= 0:
            return 0.0
        k = 2 * self.mean_null**2 / self.sd_null**2
        c = self.sd_null**2 / (2 * self.mean_null)
        return float(c * chi2.ppf(1 - level, k)) - self.mean_null

    def power(self, seeds: int, level: float) -> float:
        """Predicted probability that the energy test over ``seeds`` per side rejects at
        ``level``, were the true distributions as far apart as the observed ones."""
        return _normal_cdf(self.margin(seeds, level))

    def seeds_for(self, level: float, power: float = TARGET_POWER) -> int | None:
        """The fewest seeds per side with predicted ``power`` at ``level`` (None: no
        difference was observed, or more than :data:`MAX_SEEDS` would be needed)."""
        if not self.energy > 0 or self.power(MAX_SEEDS, level) < power:
            return None
        low, high = 2, 2
        while self.power(high, level) < power:
            low, high = high, high * 2
        while low < high:  # power grows with the seeds: bisect for the first that suffices
            mid = (low + high) // 2
            low, high = (mid + 1, high) if self.power(mid, level) < power else (low, mid)
        return high

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def seeds_hint(e: Effect, level: float) -> tuple[int | None, str]:
    """How many seeds per side would settle a test that did not reject, from the effect
    its samples show: the number (None if no number would) and a sentence saying so."""
    n = e.seeds_for(level)
    if n is not None:
        return n, (f"about {n} seeds per side would reject with {TARGET_POWER:.0%} power if "
                   f"the difference is as observed (rough)")
    if not e.energy > 0:
        return None, ("the samples show no difference (energy distance <= 0): no number of "
                      "seeds is predicted to settle it")
    return None, (f"more than {MAX_SEEDS} seeds per side would be needed: a very weak "
                  f"effect, if any")


def effect(a: np.ndarray, b: np.ndarray, *, seed: int = 0) -> Effect:
    """The :class:`Effect` of samples ``a`` and ``b`` (one per row, equal sizes >= 2)."""
    from scipy.spatial.distance import cdist

    n = len(a)
    if n < 2 or len(b) != n:
        raise ValueError(f"effect() needs two samples of equal size >= 2, got {len(a)} and "
                         f"{len(b)}")
    z = np.concatenate([np.asarray(a, np.float64).reshape(n, -1),
                        np.asarray(b, np.float64).reshape(n, -1)])
    dist = cdist(z, z)
    labels = np.arange(2 * n)
    energy = float(_u_energy(dist, labels[None, :n], labels[None, n:])[0])
    between = float(dist[:n, n:].mean())
    coefficient = energy / (2 * between) if between > 0 else 0.0
    # First-order projection: each sample's own share of the statistic.
    within_a = dist[:n, :n].sum(1) / (n - 1)
    within_b = dist[n:, n:].sum(1) / (n - 1)
    h_a = 2 * dist[:n, n:].mean(1) - 2 * within_a
    h_b = 2 * dist[n:, :n].mean(1) - 2 * within_b
    sd = math.sqrt((h_a.var(ddof=1) + h_b.var(ddof=1)) / n)
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(2 * n) for _ in range(NULL_RELABELLINGS)])
    sd_null = float(_u_energy(dist, perms[:, :n], perms[:, n:]).std())
    # Under the null the V-statistic exceeds the U-statistic by (E|A-A'| + E|B-B'|) / n
    # on average: 2 E|Z-Z'| / n over the pooled sample.
    mean_null = 2 * float(dist.sum() / (2 * n * (2 * n - 1))) / n
    return Effect(energy, coefficient, sd, sd_null, mean_null, n)


def _u_energy(dist: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """Unbiased energy distance for each row of index sets ``ia``, ``ib`` (R, n) into the
    pooled distance matrix: within-sample means leave out the zero diagonal."""
    n = ia.shape[1]

    def block(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return dist[u[:, :, None], v[:, None, :]].sum(axis=(1, 2))

    return (2 * block(ia, ib) / n**2 - block(ia, ia) / (n * (n - 1))
            - block(ib, ib) / (n * (n - 1)))


# --------------------------------------------------------------------------------------------
# the search
# --------------------------------------------------------------------------------------------

#: Predictions on the witness data and on ``g`` of it, one row per seed; None if a run
#: diverged.
Samples = tuple[np.ndarray, np.ndarray] | None
#: ``sample([(witness, seeds on w.D, seeds on g.w.D), ...])``: one entry per request, so
#: that the caller can train every request's runs together.
Sampler = Callable[[Sequence[tuple[Witness, Sequence[int], Sequence[int]]]], list[Samples]]
#: The test that decides: ``(statistic, p-value)`` of two samples.
Test = Callable[[np.ndarray, np.ndarray], tuple[float, float]]


@dataclasses.dataclass
class Search:
    """A witness search and the test on fresh seeds that followed it."""

    witness: str | None  # the chosen candidate's name; None if every pilot diverged
    description: str  # what the witness data is
    why: str  # why it was chosen
    level: float  # the level of its test
    pilot_seeds: int  # seeds per side per candidate in the pilot
    pilot: dict[str, Any]  # per candidate: its pilot Effect (as JSON), or "diverged"
    seeds: int = 0  # seeds per side of the test
    p_value: float | None = None
    energy: float | None = None  # the test's statistic
    diverged: bool = False  # a run of the test diverged
    power: float | None = None  # predicted by the pilot, for this test
    min_p: float | None = None  # the smallest p-value this test could give
    seeds_needed: int | None = None  # from the test's own samples, for TARGET_POWER
    hint: str = ""  # what seeds_needed means, in a sentence

    @property
    def rejects(self) -> bool:
        return self.p_value is not None and self.p_value < self.level

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def search(sample: Sampler, test: Test, *, seeds: int, pilot_seeds: int, level: float,
           first_seed: int, candidates: Sequence[Witness] = CANDIDATES, seed: int = 0
           ) -> Search:
    """Pick a witness on a pilot, then test it on fresh seeds at ``level``.

    Seeds are handed out from ``first_seed`` on, each used once: the pilot's (``pilot_seeds``
    per side and candidate) and then the test's (``seeds`` per side), so the test's samples
    are independent of the choice and its p-value keeps its meaning.
    """
    requests, next_seed = [], first_seed
    for w in candidates:
        requests.append((w, range(next_seed, next_seed + pilot_seeds),
                         range(next_seed + pilot_seeds, next_seed + 2 * pilot_seeds)))
        next_seed += 2 * pilot_seeds
    pilots = dict(zip(candidates, sample(requests), strict=True))
    effects = {w: effect(*s, seed=seed) for w, s in pilots.items() if s is not None}
    out = Search(None, "", "every pilot run diverged", level, pilot_seeds,
                 {w.name: {**effects[w].to_json(), "power": effects[w].power(seeds, level)}
                  if w in effects else "diverged" for w in candidates})
    if not effects:
        return out
    best = max(effects, key=lambda w: effects[w].margin(seeds, level))
    out.witness, out.description = best.name, best.describe()
    out.power = effects[best].power(seeds, level)
    out.why = (f"the largest predicted power of {len(candidates)} candidates; pilot energy "
               f"coefficient {effects[best].coefficient:.2g}")
    out.seeds, out.min_p = seeds, min_p_value(seeds)
    (fresh,) = sample([(best, range(next_seed, next_seed + seeds),
                        range(next_seed + seeds, next_seed + 2 * seeds))])
    if fresh is None:
        out.diverged = True
        return out
    out.energy, out.p_value = test(*fresh)
    out.seeds_needed, out.hint = seeds_hint(effect(*fresh, seed=seed), level)
    return out
