"""A validated study (:class:`StudySpec`) and its parts: what a study file becomes once
:mod:`dmisearch.study_file` has read and checked it."""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from collections.abc import Mapping
from typing import Any

import optuna

from dmisearch.components import Component, DataInfo
from dmisearch.data import Composed
from dmisearch.metrics import Objective
from dmisearch.prior import Prior, PriorSampler
from dmisearch.registry import Entry
from dmisearch.samplers import (
    EXHAUSTIVE,
    PRUNER_CLASSES,
    Exhaustive,
    contains,
    session_seed,
    space_size,
)
from dmisearch.space import Dim, Fixed
from dmisearch.space import describe as describe_dim


@dataclasses.dataclass(frozen=True)
class Grid:
    """Where a learning curve is measured."""

    sizes: tuple[int, ...]  # training sizes, strictly increasing
    seeds: tuple[int, ...]  # curve seeds: data draw, initialisation and batch order
    test_size: int


@dataclasses.dataclass(frozen=True)
class Confirm:
    """The confirmation stage: after the search, the best configuration of each of the
    ``top`` best triplets is retrained on ``seeds``, which the search never used."""

    top: int
    seeds: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A searched component: its registry entry and its effective search space."""

    entry: Entry
    space: Mapping[str, Dim]

    @property
    def cls(self) -> type[Component]:
        return self.entry.cls


@dataclasses.dataclass(frozen=True)
class Pluggable:
    """A name plus options that becomes an Optuna object (sampler, pruner)."""

    cls_name: str
    options: Mapping[str, Any]

    def build(self, module: Any, seed: int | None = None) -> Any:
        """The Optuna object; ``seed`` fills a ``seed`` option the file left out."""
        cls = getattr(module, self.cls_name)
        options = dict(self.options)
        if seed is not None and "seed" in inspect.signature(cls).parameters:
            options.setdefault("seed", seed)
        with warnings.catch_warnings():  # e.g. TPE's group=True is "experimental"
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return cls(**options)


@dataclasses.dataclass(frozen=True)
class StudySpec:
    """A validated study: everything a run needs, as objects."""

    source: str
    name: str
    storage: str  # Optuna storage string (see dmisearch.storage), already resolved
    device: str
    dtype: str
    engine: str  # fused | loop
    tf32: bool  # allow TF32 matmuls and convolutions on CUDA (changes float32 results)
    cuda_graphs: bool  # fused engine on CUDA: capture a step and replay it (same results)
    data: Composed
    data_entries: tuple[Entry, ...]  # the generator's, then each transform's registry entry
    info: DataInfo
    grid: Grid
    objective: Objective
    metric: str
    models: Mapping[str, Candidate]
    algorithms: Mapping[str, Candidate]
    pairs: tuple[tuple[str, str], ...]
    excluded: tuple[tuple[str, str, str], ...]  # (model, algorithm, why)
    n_trials: int | None
    timeout: float | None
    trials_per_batch: int | None  # None: chosen by device (runner.AUTO_BATCH_CUDA on CUDA)
    trial_timeout: float | None  # seconds a trial (or a batch trained together) may train
    heartbeat_interval: float  # seconds between a worker's stamps on its running trials
    grace_period: float  # seconds without a stamp before a running trial counts as lost
    seed: int | None
    sampler: Pluggable
    pruner: Pluggable
    #: Sizes after which the pruner is asked; the sizes up to each train as one stage.
    #: Empty: no pruner. Default: every size but the last.
    prune_after: tuple[int, ...] = ()
    confirm: Confirm | None = None  # the confirmation stage ([confirm]), if any
    prior: Prior | None = None  # [search] prior = "theory", if set
    #: Which run or worker of the study this is (numbered in the study's storage): mixed
    #: into the sampler's seed so that no two ever draw the same proposals.
    session: int = 0

    @staticmethod
    def pair_label(model: str, algorithm: str) -> str:
        return f"{model}/{algorithm}"

    def make_sampler(self) -> optuna.samplers.BaseSampler:
        """This session's sampler (exhaustive designs wrapped for ask-and-tell)."""
        sampler = self.sampler.build(optuna.samplers, session_seed(self.seed, self.session))
        if self.sampler.cls_name in EXHAUSTIVE:
            return Exhaustive(sampler)
        if self.prior is not None:
            labels = [self.pair_label(m, a) for m, a in self.pairs]
            return PriorSampler(sampler, self.prior, labels, self.seed, self.session)
        return sampler

    @property
    def exhaustive(self) -> bool:
        return self.sampler.cls_name in EXHAUSTIVE

    def spaces(self) -> dict[str, Mapping[str, Dim]]:
        """Every searched component's space by namespace (``model.fcn``, ...)."""
        return {**{f"model.{n}": c.space for n, c in self.models.items()},
                **{f"algorithm.{n}": c.space for n, c in self.algorithms.items()}}

    def space_size(self) -> int | None:
        """Distinct configurations the search can reach (None: unbounded)."""
        grid = self.sampler.options.get("search_space") if (
            self.sampler.cls_name == "GridSampler") else None
        return space_size(self.pairs, self.spaces(), grid)

    def reaches(self, params: Mapping[str, Any]) -> bool:
        """Whether a trial's parameters are a configuration of the current search space
        (the space may have changed since the trial ran)."""
        pair = str(params.get("pair", ""))
        if "/" not in pair or tuple(pair.split("/", 1)) not in self.pairs:
            return False
        model, algo = pair.split("/", 1)
        expected = {}
        for prefix, space in ((f"model.{model}", self.models[model].space),
                              (f"algorithm.{algo}", self.algorithms[algo].space)):
            for name, dim in space.items():
                if not isinstance(dim, Fixed):
                    expected[f"{prefix}.{name}"] = dim
        if set(params) - {"pair"} != set(expected):
            return False
        return all(contains(dim, params[name]) for name, dim in expected.items())

    def make_pruner(self) -> optuna.pruners.BasePruner:
        return self.pruner.build(PRUNER_CLASSES)

    def identity(self) -> dict[str, Any]:
        """What every trial of a study must share to be comparable (checked on resume)."""
        return {
            "data": self.data.record(),
            "curve": {"sizes": list(self.grid.sizes), "seeds": list(self.grid.seeds),
                      "test_size": self.grid.test_size},
            "objective": {"name": self.objective.name, "target": self.objective.target,
                          "metric": self.metric},
            "dtype": self.dtype,
            "tf32": self.tf32,
        }

    def search_record(self) -> dict[str, Any]:
        """The searched pairs and spaces (may change between runs of one study)."""

        def spaces(cands: Mapping[str, Candidate]) -> dict[str, Any]:
            return {n: {p: describe_dim(d) for p, d in c.space.items()}
                    for n, c in cands.items()}

        return {"pairs": [self.pair_label(*p) for p in self.pairs],
                "models": spaces(self.models), "algorithms": spaces(self.algorithms)}
