"""``dmisearch probe``: the command run from its parsed arguments (:func:`cmd_probe`); its
parser is in :mod:`dmisearch.cli.parser`, like every command's."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any

import torch

from dmisearch.errors import DmisearchError
from dmisearch.probe.building import (
    make_algorithm,
    make_data,
    make_group,
    make_model,
    parse_overrides,
)
from dmisearch.probe.formatting import LEGEND, format_cell, format_findings, format_table
from dmisearch.probe.prober import Prober, probe_all
from dmisearch.probe.settings import Settings
from dmisearch.probe.statistics import Cell
from dmisearch.probe.verification import verify


def cmd_probe(args: argparse.Namespace) -> int:
    """``dmisearch probe``: one cell, the table (``--all``) or the declarations
    (``--verify``)."""
    _check_args(args)
    threads = torch.get_num_threads()
    if getattr(args, "threads", None) is None and not os.environ.get("DMISEARCH_THREADS"):
        torch.set_num_threads(1)  # the probe's networks are tiny: more threads mostly spin
    try:
        return _cmd_probe(args)
    finally:
        torch.set_num_threads(threads)


def _check_args(args: argparse.Namespace) -> None:
    """What the parser cannot check: which options go together, and the ranges."""
    if not (args.all or args.verify) and not (args.model and args.algorithm and args.group):
        raise DmisearchError("probe needs --model, --algorithm and --group (or --all, or "
                             "--verify); see dmisearch probe --help")
    if not (args.all or args.verify) and max(map(len, (args.model, args.algorithm,
                                                       args.group))) > 1:
        raise DmisearchError("name one --model, --algorithm and --group, or use --all")
    for name, value, low in (("--seeds", args.seeds, 2), ("--n-train", args.n_train, 1),
                             ("--n-test", args.n_test, 1)):
        if value < low:
            raise DmisearchError(f"{name} must be >= {low}, got {value}")
    if not 0 < args.alpha < 1:
        raise DmisearchError(f"--alpha must be in (0, 1), got {args.alpha}")


def _registry(args: argparse.Namespace | None = None) -> Any:
    from dmisearch.plugins import load_registry

    return load_registry(files=getattr(args, "plugin", None) or [])


def _cmd_probe(args: argparse.Namespace) -> int:
    # The witness search replaces the data by another: only where the user left it to us.
    witness = args.witness if args.witness is not None else args.data is None
    settings = Settings(n_train=args.n_train, n_test=args.n_test, seeds=args.seeds,
                        dtype=args.dtype, device=args.device, alpha=args.alpha,
                        tolerance=args.tolerance, data_seed=args.data_seed, witness=witness)
    registry = _registry(args)
    for problem in registry.problems:
        print(f"dmisearch: warning: {problem}", file=sys.stderr)
    params = parse_overrides(args.param)
    tick = _ticker(not args.json and sys.stderr.isatty())
    if args.verify:
        return _verify(args, registry, settings, tick)
    return _cells(args, registry, settings, params, tick)


def _verify(args: argparse.Namespace, registry: Any, settings: Settings, tick: Any) -> int:
    """``--verify``: the findings; exit code 1 if one is false."""
    findings = verify(registry, settings, models=args.model, algorithms=args.algorithm,
                      groups=args.group, progress=tick)
    n_false = sum(f.status == "false" for f in findings)
    if args.json:
        print(json.dumps({"settings": _settings_json(settings),
                          "findings": [f.to_json() for f in findings],
                          "false": n_false}, indent=2))
    else:
        print(format_findings(findings))
    return 1 if n_false else 0


def _cells(args: argparse.Namespace, registry: Any, settings: Settings,
           params: dict[str, dict[str, Any]], tick: Any) -> int:
    """One cell, or the table (``--all``), on the data asked for."""
    data = make_data(registry, args.data, params["data"])
    prober = Prober(data, settings)
    if args.all:
        cells = probe_all(registry, prober, models=args.model, algorithms=args.algorithm,
                          groups=args.group, params=params, progress=tick)
    else:
        model = make_model(registry, args.model[0], params["model"])
        algo = make_algorithm(registry, args.algorithm[0], params["algorithm"])
        group = make_group(registry, args.group[0], params["group"])
        cells = [prober.probe(model, algo, group)]
    if args.json:
        print(json.dumps({"data": prober.label, "settings": _settings_json(settings),
                          "cells": [c.to_json() for c in cells]}, indent=2))
    elif args.all:
        s = settings
        print(f"symmetry probe on {prober.label}: {s.n_train} training / {s.n_test} test "
              f"samples, {s.seeds} seeds per side, {s.dtype} on {s.device}, alpha {s.alpha:g}, "
              f"tolerance {s.tol:g}, witness search {'on' if s.searches else 'off'}\n")
        print(format_table(cells))
        print("\n" + LEGEND)
    else:
        print(format_cell(cells[0]))
    return 0


def _settings_json(settings: Settings) -> dict[str, Any]:
    return {**dataclasses.asdict(settings), "tolerance": settings.tol}


def _ticker(enabled: bool) -> Any:
    """A progress line on stderr per cell or finding, when stderr is a terminal."""
    if not enabled:
        return None

    def tick(item: Any) -> None:
        what = (f"{item.model} / {item.algorithm} under {item.group}: {item.verdict}"
                if isinstance(item, Cell) else f"{item.subject} under {item.group}: "
                                               f"{item.status}")
        print(f"  {what}", file=sys.stderr, flush=True)

    return tick
