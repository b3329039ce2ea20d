"""Test errors, learning curves and the sample-efficiency scores computed from them.

A learning curve is the test error at training sizes ``n_1 < n_2 < ...`` over several seeds.
Scores (all lower-is-better, all computed on the mean error over seeds):

``aulc``
    Normalised area under log10(error / baseline) against log10(n), trapezoidal, divided by
    the log10(n) range: the average number of decades the learner sits below (negative) or
    above (positive) the trivial predictor. ``baseline`` is the trivial predictor's error on
    the same test sets (predict the mean target, or the majority class).
``n_to_target``
    Samples needed to reach ``target`` error: the first crossing of the mean curve,
    interpolated linearly in log-log between the two sizes around it. Never reached: ``inf``
    (kept as such, never capped); reached already at the first size: the first size, flagged.
``final_error``
    Mean error at the largest size.

Also recorded, never optimised here: ``beta``, the least-squares slope of
-log(error) against log(n) (a power-law exponent).

Errors are clipped below at ``floor`` before taking logs: a classifier that makes no mistakes
on ``n_test`` samples scores as if it made half of one.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from dmisearch.components import Task

Metric = Literal["mse", "error_rate", "cross_entropy"]
METRICS: dict[Task, tuple[str, ...]] = {
    "regression": ("mse",),
    "classification": ("error_rate", "cross_entropy"),
}
OBJECTIVES = ("aulc", "n_to_target", "final_error")


def default_metric(task: Task) -> Metric:
    return "mse" if task == "regression" else "error_rate"


def error(metric: Metric, pred: torch.Tensor, y: torch.Tensor) -> float:
    """Error of predictions ``pred`` (n, out_dim) against targets ``y``; NaN if ``pred`` is."""
    if metric == "mse":
        return float(((pred - y) ** 2).sum(-1).mean())
    if metric == "error_rate":
        if not torch.isfinite(pred).all():
            return math.nan
        return float((pred.argmax(-1) != y).double().mean())
    if metric == "cross_entropy":
        return float(F.cross_entropy(pred.double(), y))
    raise ValueError(f"unknown metric {metric!r}; known: mse, error_rate, cross_entropy")


def baseline_error(metric: Metric, y_test: torch.Tensor, y_train: torch.Tensor) -> float:
    """Error of the trivial predictor fit on ``y_train`` (mean target / class frequencies)."""
    if metric == "mse":
        mean = y_train.double().mean(0, keepdim=True)
        return float(((y_test.double() - mean) ** 2).sum(-1).mean())
    counts = torch.bincount(y_train, minlength=int(max(y_train.max(), y_test.max())) + 1)
    if metric == "error_rate":
        return float((y_test != counts.argmax()).double().mean())
    probs = (counts.double() + 0.5) / (counts.sum() + 0.5 * len(counts))  # smoothed
    return float(-probs.log()[y_test].mean())


def floor_for(metric: Metric, n_test: int, baseline: float) -> float:
    """Smallest error taken at face value before logs (see module docstring)."""
    if metric == "error_rate":
        return 0.5 / n_test
    return max(baseline, 1e-300) * 1e-12


@dataclasses.dataclass(frozen=True)
class Objective:
    """What a study minimises, computed from a (possibly partial) learning curve."""

    name: str = "aulc"
    target: float | None = None  # n_to_target only: the error to reach

    def __post_init__(self) -> None:
        if self.name not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.name!r}; known: {', '.join(OBJECTIVES)}")
        if self.name == "n_to_target":
            if self.target is None or not self.target > 0:
                raise ValueError(f"n_to_target needs a target error > 0, got {self.target!r}")
        elif self.target is not None:
            raise ValueError(f"target applies to n_to_target only, not to {self.name}")

    def score(self, sizes: np.ndarray, mean_err: np.ndarray, baseline: float, floor: float
              ) -> float:
        """The value a trial reports for its whole curve."""
        if self.name == "aulc":
            return aulc(sizes, mean_err, baseline, floor)
        if self.name == "final_error":
            return float(mean_err[-1])
        return n_to_target(sizes, mean_err, self.target, floor)[0]  # type: ignore[arg-type]

    def intermediate(
        self, sizes: np.ndarray, mean_err: np.ndarray, baseline: float, floor: float
    ) -> float:
        """Running value after the sizes seen so far, comparable across trials for pruning.

        aulc: the aulc of the partial curve; final_error: the error at the latest size;
        n_to_target: log10(error / target) at the latest size (below 0 once reached).
        """
        if self.name == "n_to_target":
            return math.log10(max(float(mean_err[-1]), floor) / self.target)  # type: ignore
        return self.score(sizes, mean_err, baseline, floor)


def aulc(sizes: np.ndarray, mean_err: np.ndarray, baseline: float, floor: float) -> float:
    x = np.log10(np.asarray(sizes, dtype=float))
    y = np.log10(np.maximum(np.asarray(mean_err, dtype=float), floor) / baseline)
    if len(x) == 1:
        return float(y[0])
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))


def n_to_target(
    sizes: np.ndarray, mean_err: np.ndarray, target: float, floor: float
) -> tuple[float, str]:
    """(samples to reach ``target``, status) with status ``reached`` / ``at_first_size`` /
    ``not_reached`` (then the value is ``inf``)."""
    err = np.maximum(np.asarray(mean_err, dtype=float), floor)
    hit = np.nonzero(err <= target)[0]
    if len(hit) == 0:
        return math.inf, "not_reached"
    i = int(hit[0])
    if i == 0:
        return float(sizes[0]), "at_first_size"
    x0, x1 = math.log(sizes[i - 1]), math.log(sizes[i])
    y0, y1 = math.log(err[i - 1]), math.log(err[i])
    t = (math.log(target) - y0) / (y1 - y0)
    return float(math.exp(x0 + t * (x1 - x0))), "reached"


def beta(sizes: np.ndarray, mean_err: np.ndarray, floor: float) -> float:
    """Power-law exponent: least-squares slope of -log(error) against log(n)."""
    if len(sizes) < 2:
        return math.nan
    x = np.log(np.asarray(sizes, dtype=float))
    y = np.log(np.maximum(np.asarray(mean_err, dtype=float), floor))
    return float(-np.polyfit(x, y, 1)[0])
