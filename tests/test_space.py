"""Search-space overrides and namespaced suggestions."""

from __future__ import annotations

import optuna
import pytest

from dmisearch.space import (
    Categorical,
    Fixed,
    Float,
    Int,
    corners,
    describe,
    namespace,
    parse_override,
    suggest,
)
from dmisearch_builtins.algorithms import SGD
from dmisearch_builtins.architectures import CNNGAP, FCN


@pytest.mark.parametrize("value,expected", [
    (3, Fixed(3)),
    ([64, 128], Categorical((64, 128))),
    ({"choices": [64]}, Categorical((64,))),
    ({"low": 16, "high": 256, "log": True}, Int(16, 256, log=True)),
    ({"low": 16, "high": 64, "step": 16}, Int(16, 64, step=16)),
])
def test_integer_parameter_overrides(value, expected):
    assert parse_override(FCN, "width", value) == expected


def test_float_and_string_parameter_overrides():
    assert parse_override(SGD, "lr", {"low": 1e-3, "high": 1, "log": True}) == Float(
        1e-3, 1.0, log=True)
    assert parse_override(SGD, "lr", 1) == Fixed(1.0)  # ints are fine for floats
    assert parse_override(FCN, "activation", ["relu", "erf"]) == Categorical(("relu", "erf"))


@pytest.mark.parametrize("cls,param,value,expected", [
    (FCN, "widht", 3, "no hyperparameter 'widht' (did you mean 'width'?)"),
    (FCN, "width", 2.5, "width must be an integer"),
    (FCN, "width", {"low": 64, "high": 16}, "low=64 is above high=16"),
    (SGD, "lr", {"low": 0, "high": 1, "log": True}, "log range needs low > 0"),
    (SGD, "lr", {"low": 0.1}, "a range is"),
    (SGD, "lr", {"low": 0.1, "high": 1, "lgo": True}, "a range is"),
    (FCN, "activation", {"low": 1, "high": 2}, "numeric range does not apply"),
    (FCN, "width", [], "non-empty list"),
    (FCN, "width", [64, 64], "repeat a value"),
    (FCN, "width", ["wide"], "width must be an integer"),
    (SGD, "nesterov", "yes", "true or false"),
])
def test_bad_overrides_name_the_parameter_and_the_fix(cls, param, value, expected):
    with pytest.raises(ValueError) as info:
        parse_override(cls, param, value)
    assert expected in str(info.value)


def test_suggest_uses_namespaced_names_and_keeps_fixed_values():
    space = {"width": Int(8, 64, log=True), "depth": Fixed(2), "filter_size": Categorical((3, 5))}
    trial = optuna.trial.FixedTrial({"model.cnn_gap.width": 16, "model.cnn_gap.filter_size": 5})
    assert namespace(CNNGAP) == "model.cnn_gap" and namespace(SGD) == "algorithm.sgd"
    assert suggest(trial, namespace(CNNGAP), space) == {"width": 16, "depth": 2,
                                                         "filter_size": 5}


def test_corners_visit_every_extreme_once():
    space = {"a": Int(1, 4), "b": Categorical(("x", "y", "z")), "c": Fixed(7)}
    got = list(corners(space))
    assert got[0] == {"a": 1, "b": "x", "c": 7}
    assert {"a": 4, "b": "x", "c": 7} in got and {"a": 1, "b": "z", "c": 7} in got
    assert len(got) == 1 + 1 + 2


def test_describe():
    assert describe(Float(1e-3, 1.0, log=True)) == "[0.001, 1] log"
    assert describe(Categorical((3, 5))) == "{3, 5}"
    assert describe(Fixed("relu")) == "= 'relu'"


def test_finite_dimensions_are_counted_and_checked_without_listing_them():
    from optuna.distributions import CategoricalDistribution as C
    from optuna.distributions import FloatDistribution as F
    from optuna.distributions import IntDistribution as I

    from dmisearch.samplers import contains, count, space_size
    from dmisearch.space import Fixed

    assert (count(I(200, 3000)), count(I(1, 9, step=2)), count(F(0, 1, step=0.25))) == (
        2801, 5, 5)
    assert count(F(0, 1)) is None and count(C((1, 2, 3))) == 3 and count(Fixed(7)) == 1
    assert contains(F(0.0, 1.0, step=0.1), 0.1 * 3) and not contains(F(0, 1, step=0.1), 0.35)
    assert contains(I(1, 9, step=2), 5) and not contains(I(1, 9, step=2), 4)
    assert not contains(I(1, 9), 10) and contains(C(("a", "b")), "b")
    spaces = {"model.m": {"w": C((8, 16)), "d": Fixed(1)}, "algorithm.a": {"lr": I(1, 3)}}
    assert space_size([("m", "a")], spaces) == 6
    assert space_size([("m", "a")], {**spaces, "algorithm.a": {"lr": F(0, 1)}}) is None
