"""Samplers and pruners from study files, and the size of a search space.

Names in a study file map to Optuna classes (``SAMPLERS``, ``PRUNERS``); options are the
class's keyword arguments. Pruners are looked up in ``PRUNER_CLASSES``: Optuna's, and
dmisearch's own curve pruner (:mod:`dmisearch.curve_pruner`). Two samplers are
*exhaustive designs*: ``brute_force`` (``BruteForceSampler``: every configuration of a
discrete space once, conditional spaces included) and ``grid`` (``GridSampler``: the cross
product of a grid, by default every value of every searched dimension). Optuna stops an
exhaustive study from inside its ``optimize`` loop (``Study.stop``), which dmisearch's
ask-and-tell loop does not use, so :class:`Exhaustive` ignores that stop; the runner ends
the study when every configuration has finished (:func:`space_size`), whichever process
finished the last one.

Sampler seeds: a study's seed is mixed with the *session* (one per ``run`` or ``worker``
process that ever worked on the study, numbered in the study's storage), so that a resumed,
extended or parallel run never restarts the sampler's random stream where an earlier one
began (:func:`session_seed`).
"""

from __future__ import annotations

import itertools
import types
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from dmisearch.curve_pruner import CurvePruner
from dmisearch.seeding import derive_seed
from dmisearch.space import Dim, Fixed

SAMPLERS = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "gp": "GPSampler",
    "cmaes": "CmaEsSampler",
    "qmc": "QMCSampler",
    "grid": "GridSampler",
    "brute_force": "BruteForceSampler",
}
PRUNERS = {
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "hyperband": "HyperbandPruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "threshold": "ThresholdPruner",
    "curve": "CurvePruner",
    "none": "NopPruner",
}
#: The pruner classes ``PRUNERS`` names: optuna.pruners' and dmisearch's own.
PRUNER_CLASSES = types.SimpleNamespace(
    **{name: getattr(optuna.pruners, name) for name in optuna.pruners.__all__},
    CurvePruner=CurvePruner)
#: Samplers that walk a finite design and end the study when it is done.
EXHAUSTIVE = ("GridSampler", "BruteForceSampler")
#: Defaults applied when the study file names the sampler without these options.
SAMPLER_DEFAULTS = {
    "TPESampler": {"multivariate": True, "group": True},
}
PRUNER_DEFAULTS = {"MedianPruner": {"n_startup_trials": 5}}


def session_seed(seed: int | None, session: int) -> int | None:
    """The sampler seed of one session of a seeded study (None stays None)."""
    return None if seed is None else derive_seed("sampler", seed, session) % 2**32


def values(dim: Dim | BaseDistribution) -> list[Any] | None:
    """Every value a dimension can take, or None if there are infinitely many."""
    if isinstance(dim, Fixed):
        return [dim.value]
    if isinstance(dim, CategoricalDistribution):
        return list(dim.choices)
    if isinstance(dim, IntDistribution):
        return list(range(dim.low, dim.high + 1, dim.step))
    if isinstance(dim, FloatDistribution) and dim.step is not None:
        count = int(round((dim.high - dim.low) / dim.step)) + 1
        return [dim.low + i * dim.step for i in range(count)]
    return None


def count(dim: Dim | BaseDistribution) -> int | None:
    """How many values a dimension can take (None: infinitely many), without listing them."""
    if isinstance(dim, IntDistribution):
        return (dim.high - dim.low) // dim.step + 1
    vals = values(dim)
    return None if vals is None else len(vals)


def contains(dim: Dim | BaseDistribution, value: Any) -> bool:
    """Whether ``value`` is one of the dimension's values (any value of a continuous one in
    its range), in constant time for integer ranges."""
    if isinstance(dim, IntDistribution):
        return (isinstance(value, int) and dim.low <= value <= dim.high
                and (value - dim.low) % dim.step == 0)
    if isinstance(dim, FloatDistribution):
        if not isinstance(value, (int, float)) or not dim.low <= value <= dim.high:
            return False
        k = (value - dim.low) / dim.step if dim.step else 0.0  # stepped: on the grid,
        return abs(k - round(k)) < 1e-6  # up to the rounding Optuna's own grid carries
    return value in values(dim)  # type: ignore[operator]


def space_size(pairs: Sequence[tuple[str, str]], spaces: Mapping[str, Mapping[str, Dim]],
               grid: Mapping[str, Sequence[Any]] | None = None) -> int | None:
    """How many distinct configurations the search can reach: each pair's product of its
    components' dimensions (``spaces`` maps ``model.<name>`` and ``algorithm.<name>`` to
    their spaces); with a ``grid``, its points projected onto the parameters each pair
    uses. None if some dimension is continuous."""
    if grid is not None:
        names = list(grid)
        seen = set()
        for point in itertools.product(*(grid[n] for n in names)):
            chosen = dict(zip(names, point, strict=True))
            model, algo = str(chosen["pair"]).split("/")
            used = {k: v for k, v in chosen.items()
                    if k.startswith((f"model.{model}.", f"algorithm.{algo}."))}
            seen.add((chosen["pair"], tuple(sorted(used.items()))))
        return len(seen)
    total = 0
    for model, algo in pairs:
        configs = 1
        for space in (spaces[f"model.{model}"], spaces[f"algorithm.{algo}"]):
            for dim in space.values():
                n = count(dim)
                if n is None:
                    return None
                configs *= n
        total += configs
    return total


def default_grid(labels: Sequence[str], spaces: Mapping[str, Mapping[str, Dim]]
                 ) -> dict[str, list[Any]]:
    """A ``GridSampler`` search space covering every searched dimension: the ``pair``
    parameter and each component's dimensions under their namespaced names. Raises
    ValueError naming a continuous dimension."""
    grid: dict[str, list[Any]] = {"pair": list(labels)}
    for prefix, space in spaces.items():
        for param, dim in space.items():
            if isinstance(dim, Fixed):
                continue
            vals = values(dim)
            if vals is None:
                raise ValueError(f"{prefix}.{param} is a continuous range; an exhaustive "
                                 "design needs a list of values or a step")
            grid[f"{prefix}.{param}"] = vals
    return grid


def continuous(spaces: Mapping[str, Mapping[str, Dim]]) -> list[str]:
    """Namespaced names of the continuous dimensions of ``spaces``."""
    return [f"{prefix}.{p}" for prefix, space in spaces.items() for p, d in space.items()
            if values(d) is None]


class Exhaustive(BaseSampler):
    """An exhaustive Optuna sampler (grid, brute force) under ask-and-tell.

    Delegates everything, except that the wrapped sampler's ``Study.stop`` (which raises
    outside ``Study.optimize``) does nothing: the runner knows when the design is done.
    """

    def __init__(self, inner: BaseSampler):
        self.inner = inner

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial
                                    ) -> dict[str, BaseDistribution]:
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.inner.after_trial(_NoStop(study), trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


class _NoStop:
    """A study as the wrapped sampler sees it in ``after_trial``: ``stop()`` does nothing."""

    def __init__(self, study: optuna.Study):
        self._study = study

    def stop(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

