"""Study files: TOML in, a validated :class:`StudySpec` out.

This is the one place where strings become objects: plugin names become component classes,
sampler and pruner names become Optuna objects, ranges become distributions. Everything is
checked before the first trial runs and every problem found is reported at once, each
naming its key, the value and the fix. The format is documented in docs/study-files.md.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from dmisearch.components import (
    Algorithm,
    Architecture,
    Component,
    DataInfo,
    pair_problem,
)
from dmisearch.coordination import GRACE_PERIOD, HEARTBEAT_INTERVAL
from dmisearch.data import Composed
from dmisearch.errors import DmisearchError, StudyFileError, did_you_mean
from dmisearch.factory import Problems, build_data, lookup
from dmisearch.metrics import METRICS, OBJECTIVES, Objective, default_metric
from dmisearch.plugins import Entry, Registry
from dmisearch.samplers import (
    EXHAUSTIVE,
    PRUNER_DEFAULTS,
    PRUNERS,
    SAMPLER_DEFAULTS,
    SAMPLERS,
    Exhaustive,
    contains,
    continuous,
    default_grid,
    session_seed,
    space_size,
)
from dmisearch.space import Dim, Fixed, corners, distribution_values, parse_override
from dmisearch.space import describe as describe_dim
from dmisearch.storage import JOURNAL_LOCK_BREAK, journal_path, study_storage

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SECTIONS: dict[str, set[str]] = {
    "study": {"name", "storage", "device", "dtype", "engine", "tf32", "cuda_graphs",
              "heartbeat_interval", "grace_period", "plugins"},
    "data": set(),  # free-form: generator parameters
    "curve": {"sizes", "seeds", "test_size"},
    "objective": {"name", "target", "metric"},
    "search": {"models", "algorithms", "pairs", "n_trials", "timeout", "seed", "sampler",
               "pruner", "prune_after", "space", "trials_per_batch", "trial_timeout"},
    "confirm": {"top", "seeds"},
}
DTYPES = ("float32", "float64")
ENGINES = ("fused", "loop")



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
    #: Which run or worker of the study this is (numbered in the study's storage): mixed
    #: into the sampler's seed so that no two ever draw the same proposals.
    session: int = 0

    @staticmethod
    def pair_label(model: str, algorithm: str) -> str:
        return f"{model}/{algorithm}"

    def make_sampler(self) -> optuna.samplers.BaseSampler:
        """This session's sampler (exhaustive designs wrapped for ask-and-tell)."""
        sampler = self.sampler.build(optuna.samplers, session_seed(self.seed, self.session))
        return Exhaustive(sampler) if self.sampler.cls_name in EXHAUSTIVE else sampler

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
        return self.pruner.build(optuna.pruners)

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


def read_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DmisearchError(f"study file {str(p)!r} does not exist") from None
    except OSError as exc:
        raise DmisearchError(f"cannot read study file {str(p)!r}: {exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StudyFileError(str(p), [f"not valid TOML: {exc}"]) from None


def plugin_files(doc: Mapping[str, Any], source: str | Path) -> list[Path]:
    """The local plugin files a study document names (``[study] plugins``), resolved
    against the study file's folder; a clear error if one is missing or not a .py file."""
    study = doc.get("study", {})
    raw = study.get("plugins", []) if isinstance(study, Mapping) else []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise StudyFileError(str(source), [
            f"study.plugins: must be a list of paths to .py files, got {raw!r}"])
    base = Path(source).parent
    out, problems = [], []
    for item in raw:
        path = Path(item).expanduser()
        path = path if path.is_absolute() else base / path
        if path.suffix != ".py":
            problems.append(f"study.plugins: {item!r} is not a Python file (.py)")
        elif not path.is_file():
            problems.append(f"study.plugins: {item!r} does not exist (looked for {path}; "
                            "relative paths start at the study file's folder)")
        else:
            out.append(path)
    if problems:
        raise StudyFileError(str(source), problems)
    return out


def load_study(
    path: str | Path,
    registry: Registry | None = None,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    device: str | None = None,
    seed: int | None = None,
) -> StudySpec:
    """Read, validate and build the study in ``path``; keyword arguments override the file.

    Without ``registry``, the installed plugins plus the file's ``[study] plugins`` are
    loaded.
    """
    doc = read_toml(path)
    if registry is None:
        from dmisearch.plugins import load_registry

        registry = load_registry(files=plugin_files(doc, path))
    return build_spec(doc, registry, source=str(path), default_name=Path(path).stem,
                      n_trials=n_trials, timeout=timeout, storage=storage, device=device,
                      seed=seed)


def build_spec(
    doc: Mapping[str, Any],
    registry: Registry,
    *,
    source: str = "<study>",
    default_name: str = "study",
    n_trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    device: str | None = None,
    seed: int | None = None,
) -> StudySpec:
    """Validate a parsed study document (see :func:`load_study`)."""
    pb = Problems()
    for key in doc:
        if key not in SECTIONS:
            pb.add(key, f"unknown section{did_you_mean(key, SECTIONS)}; "
                        f"sections are {', '.join(SECTIONS)}")
    sec = {s: _table(doc, s, pb) for s in SECTIONS}
    for s, allowed in SECTIONS.items():
        if allowed:
            for key in sec[s]:
                if key not in allowed:
                    pb.add(f"{s}.{key}", f"unknown key{did_you_mean(key, allowed)}; "
                                         f"keys of [{s}] are {', '.join(sorted(allowed))}")

    st = sec["study"]
    try:
        plugin_files(doc, source)
    except StudyFileError as exc:
        for problem in exc.problems:
            pb.add("", problem)
    name = _typed(st, "name", str, "study", pb, default_name)
    if not name.strip():
        pb.add("study.name", "is empty: name the study (the file name is the default), or "
                             "remove the key")
    if storage is None:  # the file's storage is read from the file's folder
        written = st.get("storage")
        if written is not None and not isinstance(written, str):  # not shown: secrets
            pb.add("study.storage", f"must be a storage URL or path (a string), got a "
                                    f"{type(written).__name__}")
            written = None
        storage = study_storage(written, source if Path(source).is_file() else None)
    if not storage.strip():
        pb.add("storage", "is empty (an unset environment variable, as in --storage "
                          "\"$DB_URL\"?): give a storage URL, or leave it out for the journal "
                          "beside the study file")
    device = _check_device(device if device is not None else
                           _typed(st, "device", str, "study", pb, "auto"), pb)
    dtype = _typed(st, "dtype", str, "study", pb, "float32")
    if dtype not in DTYPES:
        pb.add("study.dtype", f"must be one of {', '.join(DTYPES)}, got {dtype!r}")
    engine = _typed(st, "engine", str, "study", pb, "fused")
    if engine not in ENGINES:
        pb.add("study.engine", f"must be one of {', '.join(ENGINES)}, got {engine!r}")
    tf32 = _typed(st, "tf32", bool, "study", pb, False)
    cuda_graphs = _typed(st, "cuda_graphs", bool, "study", pb, True)
    heartbeat = _typed(st, "heartbeat_interval", (int, float), "study", pb, HEARTBEAT_INTERVAL)
    grace = _typed(st, "grace_period", (int, float), "study", pb, GRACE_PERIOD)
    _check_liveness(heartbeat, grace, storage, pb)

    data, data_entries, info = _build_data(sec["data"], registry, pb)
    grid = _build_grid(sec["curve"], info, pb)
    objective, metric = _build_objective(sec["objective"], info, grid, pb)

    se = sec["search"]
    n_trials = n_trials if n_trials is not None else _typed(se, "n_trials", int, "search", pb)
    timeout = timeout if timeout is not None else _typed(se, "timeout", (int, float), "search",
                                                         pb)
    seed = seed if seed is not None else _typed(se, "seed", int, "search", pb)
    if n_trials is not None and n_trials < 1:
        pb.add("search.n_trials", f"must be >= 1, got {n_trials}")
    if timeout is not None and not timeout > 0:
        pb.add("search.timeout", f"must be > 0 seconds, got {timeout}")
    if seed is not None and seed < 0:
        pb.add("search.seed", f"must be >= 0, got {seed}")
    trial_timeout = _typed(se, "trial_timeout", (int, float), "search", pb)
    if trial_timeout is not None and not trial_timeout > 0:
        pb.add("search.trial_timeout", f"must be > 0 seconds, got {trial_timeout}")
    per_batch = se.get("trials_per_batch", "auto")
    if per_batch == "auto":
        per_batch = None
    elif isinstance(per_batch, bool) or not isinstance(per_batch, int) or per_batch < 1:
        pb.add("search.trials_per_batch", f"must be a positive integer or \"auto\", "
                                          f"got {per_batch!r}")
        per_batch = None

    models, algorithms, pairs, excluded = _build_search(se, registry, info, pb)
    sampler = _build_pluggable(se.get("sampler", "tpe"), "search.sampler", SAMPLERS,
                               optuna.samplers, SAMPLER_DEFAULTS, pb, seed)
    if sampler.cls_name in EXHAUSTIVE and models and algorithms and pairs:
        sampler = _exhaustive(sampler, models, algorithms, pairs, pb)
    elif n_trials is None and timeout is None:
        pb.add("search", "set n_trials or timeout (or pass --n-trials / --timeout), "
                         "otherwise the study would never stop")
    problems = len(pb.items)
    pruner = _build_pluggable(se.get("pruner", "median"), "search.pruner", PRUNERS,
                              optuna.pruners, PRUNER_DEFAULTS, pb, None)
    prune_after = _build_prune_after(se, pruner, grid, pb, len(pb.items) > problems)
    confirm = _build_confirm(sec["confirm"], grid, pb)
    if confirm is not None and n_trials is None and sampler.cls_name not in EXHAUSTIVE:
        pb.add("confirm", "the confirmation stage starts when the search has spent its "
                          "budget: set search.n_trials (or pass --n-trials), or use an "
                          "exhaustive sampler (\"grid\", \"brute_force\")")

    if pb.items:
        raise StudyFileError(source, pb.items)
    assert data is not None and info is not None and grid is not None and objective
    return StudySpec(
        source=source, name=name, storage=storage, device=device, dtype=dtype, engine=engine,
        tf32=tf32, cuda_graphs=cuda_graphs, data=data,
        data_entries=data_entries, info=info, grid=grid, objective=objective, metric=metric,
        models=models, algorithms=algorithms, pairs=pairs, excluded=excluded, n_trials=n_trials,
        timeout=None if timeout is None else float(timeout), trials_per_batch=per_batch,
        trial_timeout=None if trial_timeout is None else float(trial_timeout),
        heartbeat_interval=float(heartbeat), grace_period=float(grace),
        seed=seed, sampler=sampler,
        pruner=pruner, prune_after=prune_after, confirm=confirm,
    )


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _check_liveness(heartbeat: float, grace: float, storage: str, pb: Problems) -> None:
    """Heartbeats and the grace period after which a silent trial counts as lost: finite,
    and long enough that a live worker is never taken for dead, even while it waits for
    a journal file's lock that a killed process left behind (broken after
    ``JOURNAL_LOCK_BREAK`` seconds)."""
    if not (heartbeat > 0 and math.isfinite(heartbeat)):
        pb.add("study.heartbeat_interval", f"must be a finite number of seconds > 0, got "
                                           f"{heartbeat}")
        return
    least = 3 * heartbeat
    why = "3 heartbeat intervals"
    if journal_path(storage) is not None:
        least = max(least, JOURNAL_LOCK_BREAK + 2 * heartbeat)
        why = (f"the journal lock's break time ({JOURNAL_LOCK_BREAK} s, after a process died "
               "holding it) plus 2 heartbeat intervals")
    if not math.isfinite(grace):
        pb.add("study.grace_period", f"must be a finite number of seconds, got {grace}: "
                                     "trials of a worker that died would never be retried")
    elif not grace >= least:
        pb.add("study.grace_period", f"must be at least {why} ({least:g} s), got {grace:g}: "
                                     "a live worker would be taken for dead")


def _build_confirm(table: Mapping[str, Any], grid: Grid | None, pb: Problems
                   ) -> Confirm | None:
    """``[confirm]``: ``top`` (triplets, default 3) and ``seeds`` (a count, default the
    curve's number of seeds and at least 5, or a list of seeds the search does not use)."""
    if not table:
        return None
    top = table.get("top", 3)
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        pb.add("confirm.top", f"must be a positive number of triplets, got {top!r}")
        return None
    if grid is None:
        return None
    raw = table.get("seeds", max(len(grid.seeds), 5))
    first = max(grid.seeds) + 1
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw < 3:
            pb.add("confirm.seeds", f"must be at least 3 (fewer give no interval), got {raw}")
            return None
        return Confirm(top, tuple(range(first, first + raw)))
    if (isinstance(raw, list) and len(raw) >= 3 and len(set(raw)) == len(raw) and all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in raw)):
        used = sorted(set(raw) & set(grid.seeds))
        if used:
            pb.add("confirm.seeds", f"{used} are curve seeds the search uses: confirmation "
                                    f"needs fresh ones (e.g. from {first} on)")
            return None
        return Confirm(top, tuple(raw))
    pb.add("confirm.seeds", f"must be a count >= 3 or a list of at least 3 distinct "
                            f"non-negative integers, got {raw!r}")
    return None


def _exhaustive(sampler: Pluggable, models: Mapping[str, Candidate],
                algorithms: Mapping[str, Candidate], pairs: tuple[tuple[str, str], ...],
                pb: Problems) -> Pluggable:
    """A grid or brute-force design: every searched dimension discrete; a grid without
    ``search_space`` gets every value of every searched dimension."""
    spaces = {**{f"model.{n}": c.space for n, c in models.items()},
              **{f"algorithm.{n}": c.space for n, c in algorithms.items()}}
    ranges = continuous(spaces)
    if ranges:
        pb.add("search.sampler", f"{sampler.cls_name} walks a finite design, but "
                                 f"{', '.join(ranges)} searches a continuous range: give "
                                 "a list of values (e.g. lr = [0.01, 0.1]) or a step")
        return sampler
    if sampler.cls_name != "GridSampler":
        return sampler
    labels = [StudySpec.pair_label(m, a) for m, a in pairs]
    derived = default_grid(labels, spaces)
    given = sampler.options.get("search_space")
    if given is None:
        return dataclasses.replace(sampler, options={**sampler.options,
                                                     "search_space": derived})
    if not isinstance(given, dict) or not all(
            isinstance(v, list) and v for v in given.values()):
        pb.add("search.sampler.search_space", "must be a table of parameter = [values], "
                                              f"got {given!r}")
        return sampler
    missing = sorted(set(derived) - set(given))
    unknown = sorted(set(given) - set(derived))
    if missing or unknown:
        what = "; ".join(x for x in (
            f"missing {', '.join(missing)}" if missing else "",
            f"not searched: {', '.join(unknown)}" if unknown else "") if x)
        pb.add("search.sampler.search_space", f"must list every searched parameter ({what}); "
                                              f"the searched ones are {', '.join(derived)}")
    return sampler


def _build_prune_after(se: Mapping[str, Any], pruner: Pluggable, grid: Grid | None,
                       pb: Problems, bad_pruner: bool) -> tuple[int, ...]:
    """``search.prune_after``: curve sizes, increasing, before the largest; by default every
    size but the largest, and nothing without a pruner."""
    nop = pruner.cls_name == "NopPruner"
    if "prune_after" not in se:
        return () if nop or grid is None else grid.sizes[:-1]
    value = se["prune_after"]
    key = "search.prune_after"
    if nop:  # a pruner that failed to build has been reported already
        if not bad_pruner:
            pb.add(key, "needs a pruner: set search.pruner (e.g. \"median\"), or remove "
                        "prune_after")
        return ()
    if (not isinstance(value, list) or not value
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        pb.add(key, f"must be a non-empty list of training sizes, got {value!r}")
        return ()
    if grid is None:
        return ()
    bad = [v for v in value if v not in grid.sizes[:-1]]
    if bad:
        pb.add(key, f"{bad} not among the curve's sizes before the largest "
                    f"{list(grid.sizes[:-1])} (the pruner is asked after these sizes)")
    elif list(value) != sorted(set(value)):
        pb.add(key, f"must be strictly increasing, got {value}")
    return tuple(value)


def _table(doc: Mapping[str, Any], key: str, pb: Problems) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        pb.add(key, f"must be a table ([{key}]), got {value!r}")
        return {}
    return value


def _typed(table: Mapping[str, Any], key: str, types: Any, where: str, pb: Problems,
           default: Any = None) -> Any:
    if key not in table:
        return default
    value = table[key]
    bad_bool = isinstance(value, bool) and bool not in (types if isinstance(types, tuple)
                                                        else (types,))
    if bad_bool or not isinstance(value, types):
        tname = types.__name__ if isinstance(types, type) else " or ".join(
            t.__name__ for t in types)
        pb.add(f"{where}.{key}", f"must be {tname}, got {value!r}")
        return default
    return value


def _check_device(device: str, pb: Problems) -> str:
    import torch

    if device in ("auto", "cpu"):
        return device
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            pb.add("study.device", f"{device!r} asked for but no CUDA device is visible "
                                   "(torch.cuda.is_available() is False); use 'cpu' or 'auto'")
            return device
        if device.startswith("cuda:"):
            idx = device.split(":", 1)[1]
            if not idx.isdigit() or int(idx) >= torch.cuda.device_count():
                pb.add("study.device", f"{device!r}: visible CUDA devices are 0.."
                                       f"{torch.cuda.device_count() - 1}")
        return device
    pb.add("study.device", f"must be auto, cpu, cuda or cuda:N, got {device!r}")
    return device


def _build_data(table: Mapping[str, Any], registry: Registry, pb: Problems
                ) -> tuple[Composed | None, tuple[Entry, ...], DataInfo | None]:
    if "name" not in table:
        pb.add("data.name", f"missing: which data generator? Known: "
                            f"{', '.join(registry.names('data'))}")
        return None, (), None
    params = {k: v for k, v in table.items() if k not in ("name", "transforms")}
    raw = table.get("transforms", [])
    if not isinstance(raw, list):
        pb.add("data.transforms", f"must be a list, got {raw!r}")
        raw = []
    transforms: list[tuple[Any, dict[str, Any]]] = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or "name" not in item:
            pb.add(f"data.transforms[{i}]",
                   f"must be a transform name or a table with 'name', got {item!r}")
            transforms.append((None, {}))  # keeps the indices of the later ones
            continue
        transforms.append((item["name"], {k: v for k, v in item.items() if k != "name"}))
    built = build_data(registry, table["name"], params, transforms, pb)
    return built.data, built.entries, built.info


def _build_grid(table: Mapping[str, Any], info: DataInfo | None, pb: Problems
                ) -> Grid | None:
    raw = table.get("sizes")
    sizes: list[int] = []
    if raw is None:
        pb.add("curve.sizes", "missing: list the training sizes, e.g. sizes = [32, 64, 128], "
                              "or sizes = {min = 32, max = 512, num = 5} (log-spaced)")
    elif isinstance(raw, dict):
        extra = set(raw) - {"min", "max", "num"}
        lo, hi, num = raw.get("min"), raw.get("max"), raw.get("num")
        if extra or not all(isinstance(v, int) and not isinstance(v, bool)
                            for v in (lo, hi, num)):
            pb.add("curve.sizes", "a log-spaced grid is {min = <int>, max = <int>, num = <int>}"
                                  f", got {raw!r}")
        elif not 1 <= lo < hi or num < 2:
            pb.add("curve.sizes", f"needs 1 <= min < max and num >= 2, got {raw!r}")
        else:
            sizes = sorted({int(round(v)) for v in np.geomspace(lo, hi, num)})
            if len(sizes) < num:
                pb.add("curve.sizes", f"{num} log-spaced integers do not fit between {lo} and "
                                      f"{hi}; lower num or widen the range")
    elif isinstance(raw, list) and raw and all(isinstance(v, int) and not isinstance(v, bool)
                                               for v in raw):
        sizes = list(raw)
        if any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)) or sizes[0] < 1:
            pb.add("curve.sizes", f"must be positive and strictly increasing, got {raw!r}")
    else:
        pb.add("curve.sizes", f"must be a non-empty list of integers or {{min, max, num}}, "
                              f"got {raw!r}")
    raw_seeds = table.get("seeds", 3)
    seeds: list[int] = []
    if isinstance(raw_seeds, int) and not isinstance(raw_seeds, bool):
        if raw_seeds < 1:
            pb.add("curve.seeds", f"must be >= 1 (how many seeds), got {raw_seeds}")
        seeds = list(range(max(raw_seeds, 0)))
    elif isinstance(raw_seeds, list) and raw_seeds and all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in raw_seeds):
        seeds = list(raw_seeds)
        if len(set(seeds)) != len(seeds):
            pb.add("curve.seeds", f"repeats a seed: {raw_seeds!r}")
    else:
        pb.add("curve.seeds", f"must be a count or a list of distinct non-negative integers, "
                              f"got {raw_seeds!r}")
    test_size = table.get("test_size", 1000)
    if not isinstance(test_size, int) or isinstance(test_size, bool) or test_size < 1:
        pb.add("curve.test_size", f"must be a positive integer, got {test_size!r}")
        return None
    if sizes and info is not None and info.n_test_available is not None:
        if test_size > info.n_test_available:
            pb.add("curve.test_size", f"{test_size} test samples asked for but the fixed test "
                                      f"set has only {info.n_test_available}; lower it")
        if info.n_available is not None and sizes[-1] > info.n_available:
            pb.add("curve.sizes", f"the largest size {sizes[-1]} exceeds the {info.n_available} "
                                  "training samples; lower curve.sizes")
    elif sizes and info is not None and info.n_available is not None:
        need = sizes[-1] + test_size
        if need > info.n_available:
            pb.add("curve", f"the largest size {sizes[-1]} plus test_size {test_size} needs "
                            f"{need} samples but the data has only {info.n_available}; lower "
                            "curve.sizes or curve.test_size")
    if not sizes or not seeds:
        return None
    return Grid(tuple(sizes), tuple(seeds), test_size)


def _build_objective(table: Mapping[str, Any], info: DataInfo | None, grid: Grid | None,
                     pb: Problems) -> tuple[Objective | None, str]:
    name = table.get("name", "aulc")
    target = table.get("target")
    if name not in OBJECTIVES:
        pb.add("objective.name", f"unknown objective {name!r}{did_you_mean(str(name), OBJECTIVES)}"
                                 f"; known: {', '.join(OBJECTIVES)}")
        return None, ""
    if target is not None and (isinstance(target, bool) or not isinstance(target, (int, float))):
        pb.add("objective.target", f"must be a number, got {target!r}")
        return None, ""
    try:
        objective = Objective(name, None if target is None else float(target))
    except ValueError as exc:
        pb.add("objective.target" if "target" in str(exc) else "objective.name", str(exc))
        objective = None
    if objective and name in ("aulc", "n_to_target") and grid and len(grid.sizes) < 2:
        pb.add("curve.sizes", f"the {name} objective needs at least two sizes")
    metric = table.get("metric", "auto")
    if info is None:
        return objective, ""
    if metric == "auto":
        metric = default_metric(info.task)
    elif metric not in METRICS[info.task]:
        pb.add("objective.metric", f"{metric!r} does not apply to {info.task}; choose one of "
                                   f"{', '.join(('auto',) + METRICS[info.task])}")
    return objective, metric


def _candidates(
    table: Mapping[str, Any], key: str, kind: str, registry: Registry, pb: Problems
) -> dict[str, Entry]:
    if key not in table:
        return {n: registry.entry(kind, n) for n in registry.names(kind)}
    names = table[key]
    if not isinstance(names, list):
        pb.add(f"search.{key}", f"must be a list of {kind} names, got {names!r}")
        return {}
    if not names:
        pb.add(f"search.{key}", f"empty search: list at least one {kind} (known: "
                                f"{', '.join(registry.names(kind))})")
    out: dict[str, Entry] = {}
    for i, n in enumerate(names):
        entry = lookup(registry, kind, n, f"search.{key}[{i}]", pb)
        if entry is not None:
            if entry.name in out:
                pb.add(f"search.{key}", f"lists '{entry.name}' twice")
            out[entry.name] = entry
    return out


def _build_search(
    se: Mapping[str, Any], registry: Registry, info: DataInfo | None, pb: Problems
) -> tuple[dict[str, Candidate], dict[str, Candidate], tuple[tuple[str, str], ...],
           tuple[tuple[str, str, str], ...]]:
    explicit_pairs = "pairs" in se
    if explicit_pairs and ("models" in se or "algorithms" in se):
        pb.add("search.pairs", "give either pairs or models/algorithms, not both")
    before = len(pb.items)
    models: dict[str, Entry] = {}
    algos: dict[str, Entry] = {}
    wanted: list[tuple[str, str, str]] = []  # (model, algorithm, key)
    if explicit_pairs:
        raw = se["pairs"]
        if not isinstance(raw, list) or not raw:
            pb.add("search.pairs", f"must be a non-empty list of [model, algorithm], got {raw!r}")
            raw = []
        for i, pair in enumerate(raw):
            key = f"search.pairs[{i}]"
            if not (isinstance(pair, list) and len(pair) == 2):
                pb.add(key, f"must be [model, algorithm], got {pair!r}")
                continue
            m = lookup(registry, "architecture", pair[0], key, pb)
            a = lookup(registry, "algorithm", pair[1], key, pb)
            if m and a:
                models[m.name], algos[a.name] = m, a
                wanted.append((m.name, a.name, key))
    else:
        models = _candidates(se, "models", "architecture", registry, pb)
        algos = _candidates(se, "algorithms", "algorithm", registry, pb)
        wanted = [(m, a, "") for m in models for a in algos]

    pairs: list[tuple[str, str]] = []
    excluded: list[tuple[str, str, str]] = []
    if info is not None:
        for m, a, key in wanted:
            why = pair_problem(models[m].cls, algos[a].cls, info)  # type: ignore[arg-type]
            if why is None:
                pairs.append((m, a))
            elif key:  # the user asked for exactly this pair
                pb.add(key, f"impossible pair [{m!r}, {a!r}]: {why}")
            else:
                excluded.append((m, a, why))
        if wanted and not pairs and not any(k for *_, k in wanted):
            reasons = "; ".join(f"{m}/{a}: {w}" for m, a, w in excluded)
            pb.add("search", f"empty search: no (model, algorithm) pair can run on this data "
                             f"({reasons})")
    used_m = {m for m, _ in pairs}
    used_a = {a for _, a in pairs}
    names_ok = len(pb.items) == before  # else "not searched" would repeat a lookup error

    space = se.get("space", {})
    if not isinstance(space, dict):
        pb.add("search.space", f"must be a table, got {space!r}")
        space = {}
    for key in space:
        if key not in ("model", "algorithm"):
            pb.add(f"search.space.{key}", "unknown; use [search.space.model.<name>] or "
                                          "[search.space.algorithm.<name>]")
    m_cands = _spaces(space.get("model", {}), "model", models, used_m, info, pb, names_ok)
    a_cands = _spaces(space.get("algorithm", {}), "algorithm", algos, used_a, info, pb,
                      names_ok)
    if len(pb.items) == before:
        for m, a in pairs:
            _check_pair(m_cands[m], a_cands[a], pb)
    return m_cands, a_cands, tuple(pairs), tuple(excluded)


def _check_pair(model: Candidate, algo: Candidate, pb: Problems) -> None:
    """Every model the space can reach must suit the algorithm (e.g. have a kernel)."""
    algo_obj = algo.cls(**next(corners(algo.space)))
    assert isinstance(algo_obj, Algorithm)
    for params in corners(model.space):
        why = algo_obj.model_problem(model.cls(**params))  # type: ignore[arg-type]
        if why:
            changed = ", ".join(f"{k}={v!r}" for k, v in params.items()
                                if not _is_first(model.space, k, v))
            pb.add(f"search.space.model.{model.entry.name}",
                   f"{why}{f' (at {changed})' if changed else ''}, which algorithm "
                   f"'{algo.entry.name}' needs; restrict the space or drop the pair")
            return


def _spaces(
    overrides: Any, prefix: str, entries: Mapping[str, Entry], used: set[str],
    info: DataInfo | None, pb: Problems, names_ok: bool,
) -> dict[str, Candidate]:
    if not isinstance(overrides, dict):
        pb.add(f"search.space.{prefix}", f"must be a table of {prefix} names, got {overrides!r}")
        overrides = {}
    for name in overrides:
        if name not in entries and names_ok:
            pb.add(f"search.space.{prefix}.{name}",
                   f"'{name}' is not searched{did_you_mean(name, entries)}; searched: "
                   f"{', '.join(entries) or '(none)'}")
    out: dict[str, Candidate] = {}
    for name, entry in entries.items():
        if name not in used:
            continue
        table = overrides.get(name, {})
        key = f"search.space.{prefix}.{name}"
        if not isinstance(table, dict):
            pb.add(key, f"must be a table of hyperparameters, got {table!r}")
            continue
        space: dict[str, Dim] = dict(entry.cls.space)
        ok = True
        for param, value in table.items():
            try:
                space[param] = parse_override(entry.cls, param, value)
            except ValueError as exc:
                pb.add(f"{key}.{param}", str(exc))
                ok = False
        if ok:
            _check_corners(entry, space, key, info, pb)
        out[name] = Candidate(entry, space)
    return out


def _check_corners(entry: Entry, space: Mapping[str, Dim], key: str, info: DataInfo | None,
                   pb: Problems) -> None:
    """Build the component at every extreme of its space; report what fails."""
    seen: set[str] = set()
    for params in corners(space):
        try:
            obj = entry.cls(**params)
            obj.check()
            why = obj.check_input(info.input_shape) if (
                info is not None and isinstance(obj, Architecture)) else None
            if why:
                raise ValueError(why)
        except (ValueError, TypeError) as exc:
            msg = str(exc)
            if msg not in seen:
                seen.add(msg)
                changed = ", ".join(f"{k}={v!r}" for k, v in params.items()
                                    if k in space and not _is_first(space, k, v))
                at = f" (at {changed})" if changed else ""
                pb.add(key, f"{entry.name}: {msg}{at}; narrow the range so every value is valid")


def _is_first(space: Mapping[str, Dim], key: str, value: Any) -> bool:
    return distribution_values(space[key])[0] == value


def _build_pluggable(
    raw: Any, key: str, aliases: Mapping[str, str], module: Any,
    defaults: Mapping[str, Mapping[str, Any]], pb: Problems, seed: int | None,
) -> Pluggable:
    fallback = Pluggable("NopPruner" if module is optuna.pruners else "RandomSampler", {})
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        pb.add(key, f"must be a name or a table with 'name', got {raw!r}")
        return fallback
    name = raw["name"]
    cls_name = aliases.get(name.lower(), name)
    known = sorted(set(aliases) | set(aliases.values()))
    cls = getattr(module, cls_name, None)
    if cls_name not in aliases.values() or cls is None:
        pb.add(f"{key}.name", f"unknown {name!r}{did_you_mean(name, known)}; known: "
                              f"{', '.join(sorted(aliases))}")
        return fallback
    options = {**defaults.get(cls_name, {}), **{k: v for k, v in raw.items() if k != "name"}}
    params = inspect.signature(cls).parameters
    for opt in options:
        if opt not in params:
            pb.add(f"{key}.{opt}", f"{cls_name} has no option '{opt}'"
                                   f"{did_you_mean(opt, params)}; options: {', '.join(params)}")
            return fallback
    plug = Pluggable(cls_name, options)
    if cls_name == "GridSampler" and "search_space" not in options:
        return plug  # the grid is derived from the searched spaces (_exhaustive)
    try:
        plug.build(module, seed)
    except Exception as exc:
        pb.add(key, f"{cls_name}({json.dumps(options, default=str)[1:-1]}) failed: {exc}")
        return fallback
    return plug
