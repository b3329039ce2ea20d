"""Learning-curve scores against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dmisearch.metrics import (
    Objective,
    aulc,
    baseline_error,
    beta,
    error,
    floor_for,
    n_to_target,
)

SIZES = np.array([10, 20, 40, 80, 160, 320])


def power_law(a: float, b: float) -> np.ndarray:
    return a * SIZES.astype(float) ** -b


@pytest.mark.parametrize("a,b", [(1.0, 0.5), (3.0, 1.0), (0.2, 0.25)])
def test_aulc_of_a_power_law_is_log_error_at_the_geometric_mean_size(a, b):
    # log10 err is linear in log10 n, so the trapezoid rule is exact: the mean of the line
    # over [log n_1, log n_k] is its value at the midpoint.
    baseline = 2.0
    mid = (math.log10(SIZES[0]) + math.log10(SIZES[-1])) / 2
    expected = math.log10(a) - b * mid - math.log10(baseline)
    assert aulc(SIZES, power_law(a, b), baseline, 1e-300) == pytest.approx(expected, abs=1e-12)


def test_aulc_orders_curves_by_their_area():
    fast, slow = power_law(1.0, 1.0), power_law(1.0, 0.5)
    assert aulc(SIZES, fast, 1.0, 1e-300) < aulc(SIZES, slow, 1.0, 1e-300)


def test_aulc_clips_zero_error_at_the_floor():
    err = np.array([0.5, 0.0])
    assert aulc(np.array([10, 100]), err, 1.0, 1e-3) == pytest.approx(
        (math.log10(0.5) + math.log10(1e-3)) / 2)


@pytest.mark.parametrize("target", [0.3, 0.1, 0.06])
def test_n_to_target_inverts_a_power_law_exactly(target):
    a, b = 1.0, 0.5
    n, status = n_to_target(SIZES, power_law(a, b), target, 1e-300)
    assert status == "reached"
    assert n == pytest.approx((a / target) ** (1 / b), rel=1e-10)


def test_n_to_target_never_reached_is_inf_not_a_cap():
    n, status = n_to_target(SIZES, power_law(1.0, 0.5), 1e-4, 1e-300)
    assert n == math.inf and status == "not_reached"


def test_n_to_target_reached_at_the_first_size_is_flagged():
    n, status = n_to_target(SIZES, power_law(0.01, 0.5), 0.5, 1e-300)
    assert (n, status) == (SIZES[0], "at_first_size")


def test_n_to_target_uses_the_first_crossing():
    err = np.array([0.5, 0.2, 0.4, 0.05])  # dips below 0.3 at 20, rises, falls again
    sizes = np.array([10, 20, 40, 80])
    n, _ = n_to_target(sizes, err, 0.3, 1e-300)
    t = (math.log(0.3) - math.log(0.5)) / (math.log(0.2) - math.log(0.5))
    assert n == pytest.approx(math.exp(math.log(10) + t * math.log(2)))


@pytest.mark.parametrize("b", [0.25, 0.5, 1.5])
def test_beta_is_the_power_law_exponent(b):
    assert beta(SIZES, power_law(2.0, b), 1e-300) == pytest.approx(b, abs=1e-10)


def test_errors_and_baselines():
    y = torch.tensor([0, 1, 1, 2])
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [5.0, 0, 0], [0, 0, 5.0]])
    assert error("error_rate", logits, y) == 0.25
    p = torch.softmax(logits.double(), -1)
    assert error("cross_entropy", logits, y) == pytest.approx(float(-p[range(4), y].log().mean()))
    yr = torch.tensor([[1.0], [3.0]])
    assert error("mse", torch.tensor([[0.0], [0.0]]), yr) == pytest.approx(5.0)
    # trivial predictors: train mean / majority class
    assert baseline_error("mse", yr, torch.tensor([[2.0], [2.0]])) == pytest.approx(1.0)
    assert baseline_error("error_rate", y, torch.tensor([1, 1, 0])) == pytest.approx(0.5)
    assert error("error_rate", torch.full((4, 3), math.nan), y) != error(
        "error_rate", torch.full((4, 3), math.nan), y)  # NaN predictions give a NaN error


def test_floor_for_error_rate_is_half_a_test_sample():
    assert floor_for("error_rate", 500, 0.9) == pytest.approx(0.001)


def test_objective_validation_and_intermediate_values():
    with pytest.raises(ValueError, match="target"):
        Objective("n_to_target")
    with pytest.raises(ValueError, match="target applies"):
        Objective("aulc", target=0.1)
    with pytest.raises(ValueError, match="unknown objective"):
        Objective("auc")
    sizes, err = SIZES[:3], power_law(1.0, 0.5)[:3]
    assert Objective("final_error").score(sizes, err, 1.0, 1e-9) == err[-1]
    obj = Objective("n_to_target", target=0.2)
    assert obj.intermediate(sizes, err, 1.0, 1e-9) == pytest.approx(math.log10(err[-1] / 0.2))
    assert Objective("aulc").intermediate(sizes, err, 1.0, 1e-9) == aulc(sizes, err, 1.0, 1e-9)
