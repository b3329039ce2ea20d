"""How a study searches and when it stops: the sampler (exhaustive designs included) and the
pruner of ``[search]``, named in the file and built as Optuna objects, ``prune_after``, and
the confirmation stage (``[confirm]``)."""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Mapping
from typing import Any

import optuna

from dmisearch.errors import did_you_mean
from dmisearch.factory import Problems
from dmisearch.samplers import (
    EXHAUSTIVE,
    PRUNER_CLASSES,
    PRUNER_DEFAULTS,
    PRUNERS,
    SAMPLER_DEFAULTS,
    SAMPLERS,
    continuous,
    default_grid,
)
from dmisearch.schema import CONFIRM, SEARCH, Field
from dmisearch.spec import Candidate, Confirm, Grid, Pluggable, StudySpec


def build_sampling(
    se: Mapping[str, Any], models: Mapping[str, Candidate], algorithms: Mapping[str, Candidate],
    pairs: tuple[tuple[str, str], ...], grid: Grid | None, n_trials: int | None,
    timeout: float | None, seed: int | None, pb: Problems,
) -> tuple[Pluggable, Pluggable, tuple[int, ...]]:
    """``[search]``'s sampler (an exhaustive design checked against the searched spaces),
    pruner and ``prune_after``; a study that would never stop is refused."""
    sampler = build_pluggable(SEARCH.get(se, "sampler"), SEARCH["sampler"], SAMPLERS,
                              optuna.samplers, SAMPLER_DEFAULTS, pb, seed)
    if sampler.cls_name in EXHAUSTIVE and models and algorithms and pairs:
        sampler = exhaustive(sampler, models, algorithms, pairs, pb)
    elif n_trials is None and timeout is None:
        pb.add("search", "set n_trials or timeout (or pass --n-trials / --timeout), "
                         "otherwise the study would never stop")
    problems = len(pb.items)
    pruner = build_pluggable(SEARCH.get(se, "pruner"), SEARCH["pruner"], PRUNERS,
                             PRUNER_CLASSES, PRUNER_DEFAULTS, pb, None)
    prune_after = build_prune_after(se, pruner, grid, pb, len(pb.items) > problems)
    return sampler, pruner, prune_after


def build_pluggable(
    raw: Any, field: Field, aliases: Mapping[str, str], module: Any,
    defaults: Mapping[str, Mapping[str, Any]], pb: Problems, seed: int | None,
) -> Pluggable:
    """A sampler or pruner: a name (an alias or the class name) or a table of ``name`` and
    the class's options, built once to check them (the fallback if not). A class that
    refuses an option by raising an error with an ``option`` attribute (the curve pruner)
    is reported under ``search.<field>.<option>``."""
    key = f"search.{field.key}"
    fallback = Pluggable("NopPruner" if module is PRUNER_CLASSES else "RandomSampler", {})
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        pb.add(key, field.wrong(raw))
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
        return plug  # the grid is derived from the searched spaces (exhaustive)
    try:
        plug.build(module, seed)
    except Exception as exc:
        option = getattr(exc, "option", None)
        if option is not None:
            pb.add(f"{key}.{option}", str(exc))
        else:
            pb.add(key, f"{cls_name}({json.dumps(options, default=str)[1:-1]}) failed: {exc}")
        return fallback
    return plug


def exhaustive(sampler: Pluggable, models: Mapping[str, Candidate],
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


def build_prune_after(se: Mapping[str, Any], pruner: Pluggable, grid: Grid | None,
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
        pb.add(key, SEARCH["prune_after"].wrong(value))
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


def build_confirm(table: Mapping[str, Any], grid: Grid | None, n_trials: int | None,
                  sampler: Pluggable, pb: Problems) -> Confirm | None:
    """``[confirm]`` (None when left out), which needs a trial budget to start after."""
    confirm = _confirm(table, grid, pb)
    if confirm is not None and n_trials is None and sampler.cls_name not in EXHAUSTIVE:
        pb.add("confirm", "the confirmation stage starts when the search has spent its "
                          "budget: set search.n_trials (or pass --n-trials), or use an "
                          "exhaustive sampler (\"grid\", \"brute_force\")")
    return confirm


def _confirm(table: Mapping[str, Any], grid: Grid | None, pb: Problems) -> Confirm | None:
    """``top`` (triplets, default 3) and ``seeds`` (a count, default the curve's number of
    seeds and at least 5, or a list of seeds the search does not use)."""
    if not table:
        return None
    before = len(pb)
    top = CONFIRM.read(table, "top", pb)
    if len(pb) > before or grid is None:
        return None
    raw = CONFIRM.get(table, "seeds")
    raw = max(len(grid.seeds), 5) if raw is None else raw
    first = max(grid.seeds) + 1
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw < 3:
            pb.add("confirm.seeds", f"must be at least 3 (fewer give no interval), got {raw}")
            return None
        return Confirm(top, tuple(range(first, first + raw)))
    if (isinstance(raw, list) and len(raw) >= 3 and all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in raw)
            and len(set(raw)) == len(raw)):  # hashable only once they are all integers
        used = sorted(set(raw) & set(grid.seeds))
        if used:
            pb.add("confirm.seeds", f"{used} are curve seeds the search uses: confirmation "
                                    f"needs fresh ones (e.g. from {first} on)")
            return None
        return Confirm(top, tuple(raw))
    pb.add("confirm.seeds", CONFIRM["seeds"].wrong(raw))
    return None
