"""Search spaces: Optuna distributions per hyperparameter, namespaced per component.

A component declares its default space as Optuna distributions (re-exported here as
``Float``, ``Int`` and ``Categorical``)::

    space = {"lr": Float(1e-3, 1.0, log=True), "depth": Int(1, 4)}

A study file may replace any entry, search a parameter the default leaves fixed, or fix one
(:func:`parse_override`). On a trial every parameter is suggested under its namespaced name
``<kind>.<component>.<parameter>`` (e.g. ``model.fcn.width``), so names never clash between
components and every error can name the parameter.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.distributions import CategoricalDistribution as Categorical
from optuna.distributions import FloatDistribution as Float
from optuna.distributions import IntDistribution as Int

from dmisearch.components import Component

__all__ = ["Categorical", "Fixed", "Float", "Int", "namespace", "parse_override", "suggest"]

#: Namespace prefix of each kind of searchable component on an Optuna trial.
PREFIX = {"architecture": "model", "algorithm": "algorithm"}


@dataclasses.dataclass(frozen=True)
class Fixed:
    """A hyperparameter held at one value (recorded on the trial, not searched)."""

    value: Any


Dim = BaseDistribution | Fixed


def namespace(cls: type[Component]) -> str:
    """``model.fcn`` / ``algorithm.sgd``: the prefix of this component's trial parameters."""
    return f"{PREFIX[cls.kind]}.{cls.name}"


def _type_name(v: Any) -> str:
    return type(v).__name__


def coerce(param: str, default: Any, value: Any) -> Any:
    """Coerce ``value`` to the type of ``default``; ValueError if it cannot be."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{param} must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{param} must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{param} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise ValueError(f"{param} must be a string, got {value!r}")
    if isinstance(default, (tuple, list)):
        if not isinstance(value, (tuple, list)):
            raise ValueError(f"{param} must be a list, got {value!r}")
        return type(default)(value)
    return value


def parse_override(cls: type[Component], param: str, value: Any) -> Dim:
    """Turn a study file's value for ``cls``'s ``param`` into a distribution or a fixed value.

    ===================================== ==========================================
    study file value                      meaning
    ===================================== ==========================================
    ``3`` / ``0.1`` / ``"relu"`` / bool   fixed at that value
    ``[64, 128, 256]``                    categorical choice
    ``{choices = [...]}``                 categorical choice
    ``{low = 1e-3, high = 1, log = true}`` range; ``step`` optional; integer if the
                                          parameter is an integer
    ===================================== ==========================================

    Raises ``ValueError`` naming the parameter, the value and what is expected.
    """
    defaults = cls.param_defaults()
    if param not in defaults:
        from dmisearch.errors import did_you_mean

        raise ValueError(
            f"'{cls.name}' has no hyperparameter '{param}'{did_you_mean(param, defaults)}; "
            f"its hyperparameters are: {', '.join(defaults) or '(none)'}"
        )
    default = defaults[param]
    declared = cls.space.get(param)
    is_int = isinstance(declared, Int) or (
        declared is None and isinstance(default, int) and not isinstance(default, bool)
    )
    if isinstance(value, list):
        value = {"choices": value}
    if not isinstance(value, dict):
        return Fixed(coerce(param, default, value))
    if "choices" in value:
        return _parse_choices(param, default, value)
    log = _range_log(param, value)
    if is_int:
        return _parse_int_range(param, value, log)
    return _parse_float_range(param, default, value, log)


def _parse_choices(param: str, default: Any, value: dict) -> Categorical:
    """``{choices = [...]}``: a categorical choice among values of ``default``'s type."""
    keys = set(value)
    if keys != {"choices"}:
        raise ValueError(f"{param}: a choice takes only 'choices', got keys {sorted(keys)}")
    choices = value["choices"]
    if not isinstance(choices, list) or not choices:
        raise ValueError(f"{param}: choices must be a non-empty list, got {choices!r}")
    if len(set(map(repr, choices))) != len(choices):
        raise ValueError(f"{param}: choices {choices!r} repeat a value")
    checked = tuple(coerce(param, default, c) for c in choices)
    for c in checked:
        if not (c is None or isinstance(c, (bool, int, float, str))):
            raise ValueError(f"{param}: choice {c!r} must be a number, string or bool")
    return Categorical(checked)


def _range_log(param: str, value: dict) -> bool:
    """Check a range's keys; its ``log`` flag (default false)."""
    keys = set(value)
    allowed = {"low", "high", "log", "step"}
    if not keys >= {"low", "high"} or keys - allowed:
        raise ValueError(
            f"{param}: a range is {{low = ..., high = ..., log = false, step = ...}}; "
            f"got keys {sorted(keys)}"
        )
    log = value.get("log", False)
    if not isinstance(log, bool):
        raise ValueError(f"{param}: log must be true or false, got {log!r}")
    return log


def _parse_int_range(param: str, value: dict, log: bool) -> Int:
    """``{low, high, step?, log?}`` of an integer parameter."""
    low, high = value["low"], value["high"]
    for k in ("low", "high"):
        coerce(f"{param}.{k}", 0, value[k])
    step = value.get("step", 1)
    coerce(f"{param}.step", 0, step)
    if low > high:
        raise ValueError(f"{param}: low={low} is above high={high}; swap them")
    if log and (low < 1 or step != 1):
        raise ValueError(f"{param}: a log range of integers needs low >= 1 and step 1")
    return Int(low, high, log=log, step=step)


def _parse_float_range(param: str, default: Any, value: dict, log: bool) -> Float:
    """``{low, high, step?, log?}`` of a float parameter (or one whose default is None)."""
    if default is not None and not isinstance(default, float):
        raise ValueError(
            f"{param} takes {_type_name(default)} values (default {default!r}); "
            "a numeric range does not apply: list the choices instead"
        )
    for k in ("low", "high"):
        coerce(f"{param}.{k}", 0.0, value[k])
    step = value.get("step")
    if step is not None:
        coerce(f"{param}.step", 0.0, step)
    low, high = float(value["low"]), float(value["high"])
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{param}: low and high must be finite, got {low}, {high}")
    if low > high:
        raise ValueError(f"{param}: low={low:g} is above high={high:g}; swap them")
    if log and low <= 0:
        raise ValueError(f"{param}: a log range needs low > 0, got low={low:g}")
    if log and step is not None:
        raise ValueError(f"{param}: a range cannot be both log and stepped")
    return Float(low, high, log=log, step=step)


def distribution_values(dim: Dim) -> list[Any]:
    """The extreme values a dimension can take (what validation must check)."""
    if isinstance(dim, Fixed):
        return [dim.value]
    if isinstance(dim, Categorical):
        return list(dim.choices)
    if isinstance(dim, (Float, Int)):
        return [dim.low, dim.high]
    raise TypeError(f"unsupported distribution {dim!r}")


def corners(space: Mapping[str, Dim]) -> Iterator[dict[str, Any]]:
    """Parameter settings that put each dimension at each of its extremes in turn.

    Other searched dimensions sit at their first extreme. Used to validate a space before a
    study runs: cheap, and catches every bad bound or choice on its own.
    """
    base = {k: distribution_values(d)[0] for k, d in space.items()}
    yield dict(base)
    for k, d in space.items():
        for v in distribution_values(d)[1:]:
            yield {**base, k: v}


def suggest(trial: optuna.Trial, prefix: str, space: Mapping[str, Dim]) -> dict[str, Any]:
    """Suggest every searched dimension under ``prefix.param``; return all values by param."""
    out: dict[str, Any] = {}
    for param, dim in space.items():
        name = f"{prefix}.{param}"
        if isinstance(dim, Fixed):
            out[param] = dim.value
        elif isinstance(dim, Float):
            out[param] = trial.suggest_float(name, dim.low, dim.high, log=dim.log, step=dim.step)
        elif isinstance(dim, Int):
            out[param] = trial.suggest_int(name, dim.low, dim.high, log=dim.log, step=dim.step)
        elif isinstance(dim, Categorical):
            out[param] = trial.suggest_categorical(name, dim.choices)
        else:
            raise TypeError(f"{name}: unsupported distribution {dim!r}")
    return out


def describe(dim: Dim) -> str:
    """Short human text for a dimension: ``[1e-3, 1] log``, ``{64, 128}``, ``= 3``."""
    if isinstance(dim, Fixed):
        return f"= {dim.value!r}"
    if isinstance(dim, Categorical):
        return "{" + ", ".join(repr(c) for c in dim.choices) + "}"
    if isinstance(dim, (Float, Int)):
        text = f"[{dim.low:g}, {dim.high:g}]"
        if dim.log:
            text += " log"
        if dim.step not in (None, 1):
            text += f" step {dim.step:g}"
        return text
    return repr(dim)
