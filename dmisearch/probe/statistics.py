"""The probe's verdicts and the numbers behind them: one cell's outcome (:class:`Cell`), the
decision rule (:func:`decide`), the statistical test (:func:`energy_test`) and the relative
gap of an exact comparison (:func:`relative_gap`)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from dmisearch.probe.settings import TOLERANCES

EQUIVARIANT = "equivariant"
NOT_EQUIVARIANT = "not equivariant"
INCONCLUSIVE = "inconclusive"
NOT_APPLICABLE = "n/a"
VERDICTS = (EQUIVARIANT, NOT_EQUIVARIANT, INCONCLUSIVE, NOT_APPLICABLE)

#: The dtypes the probe runs in: those it has a tolerance for.
DTYPES = {name: getattr(torch, name) for name in TOLERANCES}


@dataclasses.dataclass
class Cell:
    """The outcome of probing one (model, algorithm) pair under one transform."""

    model: str
    algorithm: str
    group: str
    data: str
    verdict: str  # one of VERDICTS
    reason: str  # one sentence: why this verdict
    method: str | None = None  # deterministic | coupled | invariant | statistical
    declared: bool | None = None  # the components' declarations say it is equivariant
    coupling: str | None = None  # the architecture's coupling: identity | map | None
    gap: float | None = None  # exact comparisons: largest per-seed relative gap
    gaps: list[float] | None = None  # per seed
    tolerance: float | None = None
    p_value: float | None = None  # statistical test (also run when a coupling broke)
    energy: float | None = None  # its statistic: energy distance of the two samples
    mean_gap: float | None = None  # |mean pred on g.D - mean pred on D| / |mean pred on D|
    alpha: float | None = None
    level: float | None = None  # the level the test on D ran at (alpha, or alpha/2)
    witness: dict[str, Any] | None = None  # the witness search and its test, if one ran
    seeds_needed: int | None = None  # inconclusive: seeds per side for 80% power (rough)
    error: list[float] | None = None  # test error on D: mean and sd over seeds
    error_g: list[float] | None = None  # test error on g.D (same targets): mean and sd
    diverged: bool = False  # a run's loss or predictions became NaN or infinite
    seeds: int = 0
    seconds: float = 0.0

    @property
    def coupling_broke(self) -> bool:
        """A coupling existed and the coupled runs drifted apart beyond the tolerance."""
        return (self.method != "deterministic" and self.gap is not None
                and self.tolerance is not None and not self.gap <= self.tolerance)

    def to_json(self) -> dict[str, Any]:
        return {k: _finite(v) for k, v in dataclasses.asdict(self).items()}


def _finite(v: Any) -> Any:
    """JSON has no NaN: None instead."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, list):
        return [_finite(x) for x in v]
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    return v


def decide(*, deterministic: bool, gap: float | None, tolerance: float,
           p_value: float | None, alpha: float, diverged: bool = False) -> tuple[str, str]:
    """The verdict and its reason from the numbers behind it.

    ``gap`` is the largest per-seed relative gap of an exact comparison (a deterministic
    algorithm, or coupled runs), None when there is none; ``p_value`` that of the
    statistical test, None when it was not run.
    """
    if diverged:
        return INCONCLUSIVE, "a run diverged (NaN or infinite predictions)"
    if gap is not None and not math.isnan(gap) and gap <= tolerance:
        what = ("the deterministic predictions" if deterministic else "the coupled runs")
        return EQUIVARIANT, f"{what} agree: max relative gap {gap:.1e} <= {tolerance:.0e}"
    if deterministic:
        if gap is None or math.isnan(gap):
            return INCONCLUSIVE, "no comparison was possible"
        return NOT_EQUIVARIANT, (f"the deterministic predictions differ: relative gap "
                                 f"{gap:.1e} > {tolerance:.0e}")
    broke = "" if gap is None else f"the coupling broke (gap {gap:.1e} > {tolerance:.0e}); "
    if p_value is None or math.isnan(p_value):
        return INCONCLUSIVE, broke + "no statistical test was run"
    if p_value < alpha:
        return NOT_EQUIVARIANT, (f"{broke}the predictions' distributions over seeds differ: "
                                 f"p = {p_value:.1e} < {alpha:g}")
    return INCONCLUSIVE, (f"{broke}the test does not reject equal distributions "
                          f"(p = {p_value:.2g} >= {alpha:g}), which proves nothing")


def energy_test(a: np.ndarray, b: np.ndarray, *, resamples: int = 9999, seed: int = 0
                ) -> tuple[float, float]:
    """Two-sample permutation test of equal distributions: ``(energy distance, p-value)``.

    ``a`` and ``b`` hold one sample per row (any trailing shape, flattened). The statistic
    is the energy distance ``2 E|A-B| - E|A-A'| - E|B-B'|`` (Szekely & Rizzo), which is
    zero exactly when the distributions are equal; the p-value is that of ``resamples``
    random relabellings (exact when there are fewer distinct ones), one-sided.
    """
    from scipy.spatial.distance import cdist
    from scipy.stats import permutation_test

    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        raise ValueError(f"the test needs at least 2 samples per side, got {na} and {nb}")
    z = np.concatenate([np.asarray(a, np.float64).reshape(na, -1),
                        np.asarray(b, np.float64).reshape(nb, -1)])
    dist = cdist(z, z)

    def statistic(i: np.ndarray, j: np.ndarray, axis: int = -1) -> np.ndarray:
        i, j = i.astype(np.intp), j.astype(np.intp)

        def mean(u: np.ndarray, v: np.ndarray) -> np.ndarray:
            return dist[u[..., :, None], v[..., None, :]].mean(axis=(-2, -1))

        return 2 * mean(i, j) - mean(i, i) - mean(j, j)

    res = permutation_test((np.arange(na), np.arange(na, na + nb)), statistic,
                           permutation_type="independent", vectorized=True,
                           n_resamples=resamples, alternative="greater",
                           random_state=np.random.default_rng(seed))
    return float(res.statistic), float(res.pvalue)


def relative_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    """``|a - b| / max(|a|, |b|)`` (Frobenius), 0 when both vanish; NaN if either is not
    finite."""
    a, b = a.detach().double(), b.detach().double()
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return math.nan
    scale = max(float(a.norm()), float(b.norm()))
    return float((a - b).norm()) / scale if scale > 0 else 0.0
