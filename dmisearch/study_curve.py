"""What a study measures: ``[data]`` (the generator and its transforms, built by
:mod:`dmisearch.factory`), ``[curve]`` (the sizes and seeds of the learning curve) and
``[objective]`` (the score and the error metric). Problems go to a :class:`Problems` sink."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from dmisearch.components import DataInfo
from dmisearch.data import Composed
from dmisearch.errors import did_you_mean
from dmisearch.factory import Problems, build_data
from dmisearch.metrics import METRICS, Objective, default_metric
from dmisearch.registry import Entry, Registry
from dmisearch.schema import CURVE, DATA, OBJECTIVE
from dmisearch.spec import Grid


def build_data_section(table: Mapping[str, Any], registry: Registry, pb: Problems
                       ) -> tuple[Composed | None, tuple[Entry, ...], DataInfo | None]:
    """``[data]``: the generator ``name`` with every other key as its parameters, composed
    with ``transforms``."""
    if "name" not in table:
        pb.add("data.name", f"missing: which data generator? Known: "
                            f"{', '.join(registry.names('data'))}")
        return None, (), None
    params = {k: v for k, v in table.items() if k not in DATA.keys()}
    transforms: list[tuple[Any, dict[str, Any]]] = []
    for i, item in enumerate(DATA.read(table, "transforms", pb)):
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


def build_grid(table: Mapping[str, Any], info: DataInfo | None, pb: Problems) -> Grid | None:
    """``[curve]``: the sizes and seeds, checked against the data's size."""
    sizes = _sizes(table, pb)
    seeds = _seeds(table, pb)
    before = len(pb)
    test_size = CURVE.read(table, "test_size", pb)
    if len(pb) > before:
        return None
    if sizes and info is not None:
        _check_fit(sizes, test_size, info, pb)
    if not sizes or not seeds:
        return None
    return Grid(tuple(sizes), tuple(seeds), test_size)


def _sizes(table: Mapping[str, Any], pb: Problems) -> list[int]:
    raw = CURVE.get(table, "sizes")
    if raw is None:
        pb.add("curve.sizes", "missing: list the training sizes, e.g. sizes = [32, 64, 128], "
                              "or sizes = {min = 32, max = 512, num = 5} (log-spaced)")
        return []
    if isinstance(raw, dict):
        return _log_sizes(raw, pb)
    if isinstance(raw, list) and raw and all(_is_int(v) for v in raw):
        sizes = list(raw)
        if any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)) or sizes[0] < 1:
            pb.add("curve.sizes", f"must be positive and strictly increasing, got {raw!r}")
        return sizes
    pb.add("curve.sizes", CURVE["sizes"].wrong(raw))
    return []


def _log_sizes(raw: Mapping[str, Any], pb: Problems) -> list[int]:
    """``{min, max, num}``: ``num`` log-spaced integers from ``min`` to ``max``."""
    extra = set(raw) - {"min", "max", "num"}
    lo, hi, num = raw.get("min"), raw.get("max"), raw.get("num")
    if extra or not all(_is_int(v) for v in (lo, hi, num)):
        pb.add("curve.sizes", "a log-spaced grid is {min = <int>, max = <int>, num = <int>}"
                              f", got {raw!r}")
        return []
    if not 1 <= lo < hi or num < 2:
        pb.add("curve.sizes", f"needs 1 <= min < max and num >= 2, got {raw!r}")
        return []
    sizes = sorted({int(round(v)) for v in np.geomspace(lo, hi, num)})
    if len(sizes) < num:
        pb.add("curve.sizes", f"{num} log-spaced integers do not fit between {lo} and "
                              f"{hi}; lower num or widen the range")
    return sizes


def _seeds(table: Mapping[str, Any], pb: Problems) -> list[int]:
    raw = CURVE.get(table, "seeds")
    if _is_int(raw):
        if raw < 1:
            pb.add("curve.seeds", f"must be >= 1 (how many seeds), got {raw}")
        return list(range(max(raw, 0)))
    if isinstance(raw, list) and raw and all(_is_int(s) and s >= 0 for s in raw):
        if len(set(raw)) != len(raw):
            pb.add("curve.seeds", f"repeats a seed: {raw!r}")
        return list(raw)
    pb.add("curve.seeds", CURVE["seeds"].wrong(raw))
    return []


def _check_fit(sizes: list[int], test_size: int, info: DataInfo, pb: Problems) -> None:
    """The largest size and the test set fit in the data (a fixed test set, or one pool)."""
    if info.n_test_available is not None:
        if test_size > info.n_test_available:
            pb.add("curve.test_size", f"{test_size} test samples asked for but the fixed test "
                                      f"set has only {info.n_test_available}; lower it")
        if info.n_available is not None and sizes[-1] > info.n_available:
            pb.add("curve.sizes", f"the largest size {sizes[-1]} exceeds the {info.n_available} "
                                  "training samples; lower curve.sizes")
    elif info.n_available is not None:
        need = sizes[-1] + test_size
        if need > info.n_available:
            pb.add("curve", f"the largest size {sizes[-1]} plus test_size {test_size} needs "
                            f"{need} samples but the data has only {info.n_available}; lower "
                            "curve.sizes or curve.test_size")


def build_objective(table: Mapping[str, Any], info: DataInfo | None, grid: Grid | None,
                    pb: Problems) -> tuple[Objective | None, str]:
    """``[objective]``: the score (with its target) and the error metric (``auto``: the
    task's default)."""
    name = OBJECTIVE.get(table, "name")
    known = OBJECTIVE["name"].choices
    if name not in known:
        pb.add("objective.name", f"unknown objective {name!r}{did_you_mean(str(name), known)}"
                                 f"; known: {', '.join(known)}")
        return None, ""
    before = len(pb)
    target = OBJECTIVE.read(table, "target", pb)
    if len(pb) > before:
        return None, ""
    try:
        objective = Objective(name, None if target is None else float(target))
    except ValueError as exc:
        pb.add("objective.target" if "target" in str(exc) else "objective.name", str(exc))
        objective = None
    if objective and name in ("aulc", "n_to_target") and grid and len(grid.sizes) < 2:
        pb.add("curve.sizes", f"the {name} objective needs at least two sizes")
    metric = OBJECTIVE.get(table, "metric")
    if info is None:
        return objective, ""
    if metric == "auto":
        metric = default_metric(info.task)
    elif metric not in METRICS[info.task]:
        pb.add("objective.metric", f"{metric!r} does not apply to {info.task}; choose one of "
                                   f"{', '.join(('auto',) + METRICS[info.task])}")
    return objective, metric


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
