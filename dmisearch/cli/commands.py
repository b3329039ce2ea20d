"""The commands, each run from its parsed arguments (``cmd_*``; the parsers are in
:mod:`dmisearch.cli.parser`). They import what they compute with (torch, optuna, the
runner) when they run, so that importing the command line stays light."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dmisearch.cli.output import (
    describe_spec,
    err,
    print_leaderboard,
    print_plugins,
    printer,
    trial_line,
    wants_progress,
)


def _registry(args: argparse.Namespace, study: str | None = None, warn: bool = True) -> Any:
    """The registry of a command: installed plugins, ``--plugin`` files and the study
    file's ``[study] plugins``; problems are printed as warnings."""
    from dmisearch.plugins import load_registry
    from dmisearch.study_file import plugin_files, read_toml

    files = list(getattr(args, "plugin", None) or [])
    if study is not None:
        files += plugin_files(read_toml(study), study)
    registry = load_registry(files=files)
    if warn:
        for problem in registry.problems:
            err(f"dmisearch: warning: {problem}")
    return registry


def _load(args: argparse.Namespace) -> Any:
    from dmisearch.study_file import load_study

    registry = _registry(args, args.study)
    return load_study(args.study, registry, n_trials=getattr(args, "n_trials", None),
                      timeout=getattr(args, "timeout", None), storage=args.storage,
                      device=args.device, seed=getattr(args, "seed", None))


def cmd_run(args: argparse.Namespace) -> int:
    from dmisearch.runner import run_study

    spec = _load(args)
    describe_spec(spec)
    if args.dry_run:
        return _dry_run(spec)
    if args.workers > 1 or args.gpus:
        from dmisearch.workers import run_workers

        study = run_workers(spec, args, progress=wants_progress(args),
                            emit=printer(wants_progress(args)),
                            line=lambda t: trial_line(spec, t))
    else:
        emit = printer(wants_progress(args))
        study = run_study(spec, on_trial=lambda t: emit(trial_line(spec, t)),
                          progress=wants_progress(args), note=err)
    print_leaderboard(spec, study, as_json=args.json)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from dmisearch.runner import finished_count, run_study
    from dmisearch.storage import describe

    spec = _load(args)
    if args.dry_run:
        describe_spec(spec)
        return _dry_run(spec)
    emit = printer(wants_progress(args))
    _wait_for_study(spec, args.wait, emit)
    study = run_study(spec, on_trial=lambda t: emit(trial_line(spec, t)),
                      progress=wants_progress(args), session=args.session, create=False,
                      note=err)
    err(f"done: study '{spec.name}' has {finished_count(study)} finished trials in "
        f"{describe(spec.storage)}")
    return 0


def _dry_run(spec: Any) -> int:
    """What ``run`` or ``worker`` would find in the storage (which must answer)."""
    import optuna

    from dmisearch.coordination import count_states
    from dmisearch.storage import describe, open_storage

    storage = open_storage(spec.storage)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if spec.name not in names:
        print(f"dry run: {describe(spec.storage)} answers and holds no study "
              f"'{spec.name}' yet: `dmisearch run` would create it, a worker would wait "
              "for it. Nothing was run.")
        return 0
    study = optuna.load_study(study_name=spec.name, storage=storage)
    done, running, waiting = count_states(study)
    print(f"dry run: study '{spec.name}' in {describe(spec.storage)} has {done} finished, "
          f"{running} running and {waiting} queued search trials. Nothing was run.")
    return 0


def _wait_for_study(spec: Any, wait: float, emit: Any) -> None:
    """A worker joins; only ``run`` creates. Give a ``run`` started at the same time (a
    job array, a README recipe) ``wait`` seconds to create the study."""
    import time

    import optuna

    from dmisearch.storage import describe, open_storage

    storage = open_storage(spec.storage)
    end = time.monotonic() + wait
    said = False
    while time.monotonic() < end:
        if spec.name in (s.study_name for s in optuna.get_all_study_summaries(storage)):
            return
        if not said:
            emit(f"waiting up to {wait:g} s for study '{spec.name}' to be created in "
                 f"{describe(spec.storage)} by `dmisearch run` (--wait)")
            said = True
        time.sleep(1.0)


def cmd_report(args: argparse.Namespace) -> int:
    from dmisearch.analysis import Results
    from dmisearch.report import write_report

    res = Results.load(*args.studies, storage=args.storage)
    index = write_report(res, args.out)
    others = sorted(p.name for p in index.parent.iterdir() if p != index and p.is_file())
    print(f"report written to {index} (with {', '.join(others)})")
    return 0


def cmd_rerun(args: argparse.Namespace) -> int:
    """Train a stored trial again and compare; 1 when the rerun fails (error and
    traceback printed), as a failed trial's rerun usually does."""
    from dmisearch.runner import rerun_trial

    spec = _load(args)
    stored, plan = rerun_trial(spec, args.trial)
    print(f"trial {stored.number} of study '{spec.name}': {stored.params.get('pair')} "
          f"({stored.state.name} on {stored.user_attrs.get('device', '?')}); "
          f"rerun on {plan.trial.user_attrs.get('device', '?')}: {plan.outcome}")
    if "error" in stored.user_attrs:
        print(f"stored error: {stored.user_attrs['error']}")
    if plan.outcome == "failed":
        import traceback

        exc = plan.error
        print(f"rerun error: {type(exc).__name__}: {exc}" if exc else "rerun error: unknown")
        if exc is not None:
            print("".join(traceback.format_exception(exc)).rstrip(), file=sys.stderr)
        return 1
    if plan.outcome == "pruned":
        print(f"rerun pruned: {plan.trial.user_attrs.get('pruned_reason', 'pruned')}")
    _print_differences(stored.user_attrs.get("curve", {}), plan.curve)
    return 0


def _print_differences(old: dict[str, Any], new: dict[str, Any]) -> None:
    """The rerun's test errors beside the stored ones, with the largest relative difference
    (over the points both have)."""
    if not new["size"]:
        print("the rerun trained no point of the curve")
        return
    print(f"{'size':>6} {'seed':>5} {'stored':>12} {'rerun':>12} {'rel. diff':>10}")
    stored = old.get("test_error", [])
    worst, compared = 0.0, 0
    for i, (n, sd, e) in enumerate(zip(new["size"], new["seed"], new["test_error"],
                                       strict=True)):
        before = stored[i] if i < len(stored) else None
        if before is None:
            print(f"{n:>6} {sd:>5} {'-':>12} {e:12.6g} {'-':>10}")
            continue
        diff = abs(e - before) / max(abs(before), 1e-300)
        worst, compared = max(worst, diff), compared + 1
        print(f"{n:>6} {sd:>5} {before:12.6g} {e:12.6g} {diff:10.2e}")
    if compared:
        print(f"largest relative difference of the test errors: {worst:.2e} "
              f"({compared} points)")
    else:
        print("the stored trial has no curve to compare with")


def cmd_predict(args: argparse.Namespace) -> int:
    from dmisearch.predict import format_table, predict, stderr_progress, target_name

    spec = _load(args)
    if args.save:
        _check_saving(spec)
    preds = predict(spec, pool=args.pool, kinds=args.kind, seed=args.data_seed, device=args.device,
                    progress=stderr_progress(not args.json or sys.stderr.isatty()))
    if args.json:
        for rank, p in enumerate(preds, 1):
            for record in p.records(rank, target_name(spec)):
                print(json.dumps(record))
    else:
        print(format_table(spec, preds))
    if args.save:
        _save_predictions(spec, preds)
    return 0


def _check_saving(spec: Any) -> None:
    """Before any kernel: a storage that keeps what is saved, and a stored study (if any)
    that agrees with the study file (``runner.open_study`` refuses one that does not)."""
    from dmisearch.errors import DmisearchError, StudyNotFoundError
    from dmisearch.runner import open_study

    if spec.storage == "memory":
        raise DmisearchError("--save with storage \"memory\" would keep nothing: give a "
                             "persistent --storage (journal:PATH, sqlite:///f.db, ...)")
    try:
        open_study(spec, create=False)
    except StudyNotFoundError:
        pass  # created when saving, as `dmisearch run` creates it


def _save_predictions(spec: Any, preds: Any) -> None:
    """Store the predictions on the study (created as `dmisearch run` would) and say where."""
    from dmisearch.predict import stored_form
    from dmisearch.runner import open_study
    from dmisearch.storage import describe
    from dmisearch.trialinfo import PREDICTIONS_ATTR

    study = open_study(spec, create=True)
    replaced = PREDICTIONS_ATTR in study.user_attrs
    study.set_user_attr(PREDICTIONS_ATTR, stored_form(spec, preds))
    err(f"saved the predictions of {len(preds)} (model, algorithm) pairs on study "
        f"'{spec.name}' in {describe(spec.storage)} (study attribute {PREDICTIONS_ATTR}"
        f"{', replacing the earlier ones' if replaced else ''}); read them with "
        "Results.predictions() or see them in `dmisearch report`")


def cmd_plugins(args: argparse.Namespace) -> int:
    from dmisearch.hookspecs import REGISTER_HOOKS

    registry = _registry(args, warn=False)
    comps = [{
        "kind": e.kind, "name": e.name, "summary": e.cls.summary(), "plugin": e.plugin.name,
        "package": e.package, "version": e.version,
        "class": f"{e.cls.__module__}.{e.cls.__qualname__}",
        "params": {k: (list(v) if isinstance(v, tuple) else v)
                   for k, v in e.cls.param_defaults().items()},
    } for kind in REGISTER_HOOKS for e in sorted(registry, key=lambda e: e.name)
        if e.kind == kind]
    plugins = [{"name": p.name, "package": p.package, "version": p.version, "origin": p.origin,
                "status": p.status, "error": p.error, "refused": list(p.refused)}
               for p in registry.plugins]
    excluded = excluded_pairings(registry)
    if args.json:
        print(json.dumps({"components": comps, "plugins": plugins, "excluded_pairings": [
            {"model": m, "algorithm": a, "reason": why} for m, a, why in excluded],
            "problems": registry.problems}, indent=2, default=str))
        return 0
    print_plugins(comps, plugins, excluded)
    for problem in registry.problems:
        err(f"dmisearch: warning: {problem}")
    return 0


def excluded_pairings(registry: Any) -> list[tuple[str, str, str]]:
    """(model, algorithm, why) for pairs that cannot run: a capability the architecture
    lacks, or lacks with its default hyperparameters (e.g. no kernel for its activation)."""
    from dmisearch.components import capability_problem

    out = []
    archs = [e for e in registry if e.kind == "architecture"]
    for algo in (e for e in registry if e.kind == "algorithm"):
        for arch in archs:
            why = capability_problem(arch.cls, algo.cls)
            if why is None:
                try:
                    why = algo.cls().model_problem(arch.cls())
                except Exception as exc:  # a plugin whose defaults do not construct
                    why = f"cannot check with default hyperparameters: {exc}"
            if why:
                out.append((arch.name, algo.name, why))
    return out


def cmd_new_plugin(args: argparse.Namespace) -> int:
    from dmisearch.scaffold import scaffold

    root = scaffold(args.name, args.kind or [], args.dir)
    print(f"created {root}\nnext:\n  cd {root}\n  pip install -e \".[test]\"\n"
          "  dmisearch plugins\n  python -m pytest\n  dmisearch run study.toml")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    """``dmisearch probe`` (:mod:`dmisearch.probe.command`)."""
    from dmisearch.probe.command import cmd_probe as probe

    return probe(args)
