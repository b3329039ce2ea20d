"""The ``dmisearch`` command.

Exit codes: 0 success; 1 an error (one paragraph on stderr, no traceback unless
``--debug``); 2 a command-line usage error; 130 interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from dmisearch.errors import DmisearchError

ENV_THREADS = "DMISEARCH_THREADS"

EPILOG = """exit codes: 0 success, 1 error, 2 usage error, 130 interrupted.
environment: DMISEARCH_PLUGINS (load only these plugins; set but empty: none),
DMISEARCH_BLOCK_PLUGINS (never load these), DMISEARCH_TRACE=1 (like --trace),
DMISEARCH_THREADS=N (like --threads), DMISEARCH_STORAGE (default storage instead of the
journal .dmisearch/journal.log beside the study file)."""


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks on errors")
    common.add_argument("--plugin", action="append", default=argparse.SUPPRESS,
                        metavar="PATH.py",
                        help="also load this local plugin file (hook functions); repeatable")
    common.add_argument("--trace", action="store_true", default=argparse.SUPPRESS,
                        help="report every plugin load and hook call on stderr "
                             "(same as DMISEARCH_TRACE=1)")
    common.add_argument("--threads", type=_positive_int, default=argparse.SUPPRESS,
                        metavar="N",
                        help="CPU threads per process (same as DMISEARCH_THREADS=N; default: "
                             "PyTorch's, split between the workers of run --workers; probe: "
                             "1)")
    parser = argparse.ArgumentParser(
        prog="dmisearch", parents=[common], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Search (data, model, inference algorithm) triplets for the most "
                    "sample-efficient learner, with Optuna.",
    )
    from dmisearch import __version__

    parser.add_argument("--version", action="version", version=f"dmisearch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run", parents=[common], help="run (or resume) the study described by a study file",
        description="Run the Optuna study described by STUDY (a TOML study file), resuming it "
                    "if it already exists in the storage, then print the leaderboard of "
                    "triplets. Options override the file.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("study", metavar="STUDY.toml", help="study file (see docs/study-files.md)")
    run.add_argument("--n-trials", type=_positive_int, metavar="N",
                     help="finished (complete or pruned) trials the study should have in all")
    run.add_argument("--timeout", type=_positive_float, metavar="SECONDS",
                     help="stop starting new trials after this many seconds")
    run.add_argument("--storage", metavar="URL",
                     help="Optuna storage: journal:PATH, sqlite:///f.db, postgresql://..., "
                          "redis://... (default: the embedded journal file)")
    run.add_argument("--device", metavar="DEVICE", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--seed", type=_nonneg_int, metavar="N", help="seed of the sampler")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--dry-run", action="store_true",
                     help="check the study file, the plugins and the storage, say what "
                          "would run, and exit: nothing is trained and no study created")
    run.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                     help="worker processes on this machine sharing the study (default 1)")
    run.add_argument("--gpus", metavar="LIST", type=_gpu_list,
                     help="comma-separated CUDA device indices; worker i uses "
                          "gpus[i %% len(gpus)] (several workers may share one)")
    run.set_defaults(func=cmd_run)

    worker = sub.add_parser(
        "worker", parents=[common], help="join a running study as one more worker",
        description="Join the study described by STUDY.toml, stored at --storage, as one "
                    "more worker (from another process or machine): claim trials until the "
                    "study has n_trials finished trials across all workers. The study file "
                    "must agree with the stored study.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    worker.add_argument("study", metavar="STUDY.toml", help="the study's file")
    worker.add_argument("--storage", metavar="URL",
                        help="the study's storage (default: the embedded journal file)")
    worker.add_argument("--device", metavar="DEVICE", help="auto, cpu, cuda or cuda:N")
    worker.add_argument("--n-trials", type=_positive_int, metavar="N",
                        help="finished trials the study should have in all")
    worker.add_argument("--timeout", type=_positive_float, metavar="SECONDS",
                        help="stop starting new trials after this many seconds")
    worker.add_argument("--seed", type=_nonneg_int, metavar="N", help="seed of the sampler")
    worker.add_argument("--session", type=_nonneg_int, metavar="K",
                        help="the sampler session to use (set by run --workers); by default "
                             "a new one is taken from the study, so that no two workers "
                             "ever draw the same proposals")
    worker.add_argument("--wait", type=_nonneg_float, default=60.0, metavar="SECONDS",
                        help="how long to wait for `dmisearch run` to create the study "
                             "(started at the same time, e.g. in a job array) before "
                             "refusing (default 60; a worker never creates a study)")
    worker.add_argument("--no-progress", action="store_true", help="no progress bar")
    worker.add_argument("--dry-run", action="store_true",
                        help="check the study file, the plugins and the storage, say "
                             "whether the study is there to join, and exit")
    worker.set_defaults(func=cmd_worker)

    report = sub.add_parser(
        "report", parents=[common], help="write an HTML report of one or several studies",
        description="Write a self-contained HTML report (leaderboard with intervals "
                    "over seeds and confirmed scores, learning curves, heatmaps, scaling "
                    "exponents, settings, plugin versions, environment) and curves.csv / "
                    "curves.parquet / "
                    "trials.csv / leaderboard.csv for the given studies: study files "
                    "(.toml) or study names in --storage.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("studies", nargs="+", metavar="STUDY",
                        help="study files (.toml) or study names")
    report.add_argument("--storage", metavar="URL",
                        help="storage of the studies (default: each file's, else the "
                             "embedded journal file)")
    report.add_argument("--out", required=True, metavar="DIR", help="folder to write into")
    report.set_defaults(func=cmd_report)

    rerun = sub.add_parser(
        "rerun", parents=[common], help="rerun one stored trial alone and compare its curve",
        description="Rerun trial N of the study described by STUDY.toml from its stored "
                    "parameters and seeds, and compare the new learning curve with the "
                    "stored one (identical to rounding on the same device).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rerun.add_argument("study", metavar="STUDY.toml", help="the study's file")
    rerun.add_argument("--trial", type=_nonneg_int, required=True, metavar="N",
                       help="trial number")
    rerun.add_argument("--storage", metavar="URL", help="the study's storage")
    rerun.add_argument("--device", metavar="DEVICE", help="auto, cpu, cuda or cuda:N")
    rerun.set_defaults(func=cmd_rerun)

    plugins = sub.add_parser(
        "plugins", parents=[common], help="list registered components and their plugins",
        description="List every registered data generator, transform, architecture and "
                    "algorithm with the plugin and package (and version) that provides it, "
                    "plus plugins that failed to load.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.set_defaults(func=cmd_plugins)

    new = sub.add_parser(
        "new-plugin", parents=[common], help="scaffold a plugin package",
        description="Write a plugin package dmisearch-NAME: pyproject.toml with the "
                    "`dmisearch` entry point, one small working component per kind asked "
                    "for (all four by default), a README, a study file using them, and "
                    "tests built on the conformance kit (dmisearch.testing). It installs "
                    "and passes its tests as generated. Tutorial: docs/plugins.md.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    new.add_argument("name", metavar="NAME",
                     help="plugin name: lowercase letters, digits, '_' (module "
                          "dmisearch_NAME, components NAME_...)")
    new.add_argument("--kind", action="append",
                     choices=["data", "transform", "architecture", "model", "algorithm"],
                     help="component kind to include; repeatable (default: all four; "
                          "model is short for architecture)")
    new.add_argument("--dir", default=".", metavar="DIR",
                     help="folder to create the package in (default: the current one)")
    new.set_defaults(func=cmd_new_plugin)

    from dmisearch.probe import add_parser as add_probe_parser

    add_probe_parser(sub, common)
    return parser


def _positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def _nonneg_int(text: str) -> int:
    return _int_at_least(text, 0)


def _int_at_least(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be >= {least}, got {text}")
    return value


def _gpu_list(text: str) -> list[int]:
    try:
        gpus = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, got {text!r}"
                                         ) from None
    if not gpus or min(gpus) < 0:
        raise argparse.ArgumentTypeError(f"must list CUDA device indices, got {text!r}")
    return gpus


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _nonneg_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------


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
            _err(f"dmisearch: warning: {problem}")
    return registry


def _load(args: argparse.Namespace) -> Any:
    from dmisearch.study_file import load_study

    registry = _registry(args, args.study)
    return load_study(args.study, registry, n_trials=getattr(args, "n_trials", None),
                      timeout=getattr(args, "timeout", None), storage=args.storage,
                      device=args.device, seed=getattr(args, "seed", None))


def _describe_spec(spec: Any) -> None:
    from dmisearch.storage import describe

    pairs = ", ".join(spec.pair_label(m, a) for m, a in spec.pairs)
    size = spec.space_size()
    budget = " and ".join(x for x in (
        f"{spec.n_trials} trials" if spec.n_trials else "",
        f"{spec.timeout:g} s" if spec.timeout else "") if x) or (
        f"every configuration once ({size})")
    if size is not None and spec.n_trials is not None and size < spec.n_trials:
        budget += f"; the space holds {size} configurations"
    if spec.confirm is not None:
        budget += (f", then the best {spec.confirm.top} triplets confirmed on "
                   f"{len(spec.confirm.seeds)} fresh seeds")
    _err(f"study '{spec.name}': data {spec.data.label} {spec.info.input_shape} "
         f"({spec.info.task}), sizes {list(spec.grid.sizes)} x {len(spec.grid.seeds)} seeds, "
         f"objective {spec.objective.name}, budget {budget}")
    n = len(spec.pairs)
    _err(f"searching {n} pair{'s' if n != 1 else ''}: {pairs}")
    for m, a, why in spec.excluded:
        _err(f"  skipped {m}/{a}: {why}")
    _err(f"storage: {describe(spec.storage)}")


def _trial_line(spec: Any, t: Any) -> str:
    from dmisearch.coordination import LOST
    from dmisearch.trialinfo import CONFIRMS_ATTR, DUPLICATE_ATTR

    pair = f"{t.user_attrs.get('model', '?')}/{t.user_attrs.get('algorithm', '?')}"
    secs = t.user_attrs.get("wall_time_s", 0.0)
    if DUPLICATE_ATTR in t.user_attrs:
        other = t.user_attrs[DUPLICATE_ATTR]
        what = (f"repeats trial {other}: its result reused, not trained again"
                if t.state.name != "FAIL" else f"repeats trial {other}, still running: "
                "dropped, another configuration asked")
        return f"trial {t.number:>4}  {pair:<18} {what}"
    if CONFIRMS_ATTR in t.user_attrs and t.state.name == "COMPLETE":
        return (f"trial {t.number:>4}  {pair:<18} confirms trial {t.user_attrs[CONFIRMS_ATTR]} "
                f"on fresh seeds: {spec.objective.name} {t.value:.4g}  [{secs:.1f} s]")
    error = str(t.user_attrs.get("error", "unknown error"))
    if t.state.name == "FAIL" and error.startswith(LOST):
        return (f"trial {t.number:>4}  {pair:<18} taken for lost while this worker was "
                "silent (suspended or swapping?): its result is dropped, the retry trains it")
    if t.state.name == "COMPLETE":
        outcome = f"{spec.objective.name} {t.value:.4g}"
    elif t.state.name == "PRUNED":
        outcome = f"pruned ({t.user_attrs.get('pruned_reason', 'by the pruner')})"
    else:
        outcome = f"FAILED: {error}"
    return f"trial {t.number:>4}  {pair:<18} {outcome}  [{secs:.1f} s]"


def _printer(progress: bool) -> Any:
    def emit(line: str) -> None:
        if progress:
            from tqdm.auto import tqdm

            tqdm.write(line, file=sys.stderr)
        else:
            _err(line)

    return emit


def _leaderboard(spec: Any, study: Any) -> None:
    from dmisearch.analysis import format_leaderboard, leaderboard
    from dmisearch.runner import finished_count
    from dmisearch.storage import describe

    print(f"\nLeaderboard of study '{spec.name}' ({spec.objective.name}, lower is better; "
          f"test error = {spec.metric}):")
    print(format_leaderboard(leaderboard(study), spec.objective.name))
    print(f"\n{finished_count(study)} finished trials stored in {describe(spec.storage)}, "
          f"study '{spec.name}'. The same command resumes or extends it.")


def cmd_run(args: argparse.Namespace) -> int:
    from dmisearch.runner import run_study

    spec = _load(args)
    _describe_spec(spec)
    if args.dry_run:
        return _dry_run(spec)
    if args.workers > 1 or args.gpus:
        from dmisearch.workers import run_workers

        study = run_workers(spec, args, progress=_wants_progress(args),
                            emit=_printer(_wants_progress(args)),
                            line=lambda t: _trial_line(spec, t))
    else:
        emit = _printer(_wants_progress(args))
        study = run_study(spec, on_trial=lambda t: emit(_trial_line(spec, t)),
                          progress=_wants_progress(args))
    _leaderboard(spec, study)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from dmisearch.runner import finished_count, run_study
    from dmisearch.storage import describe

    spec = _load(args)
    if args.dry_run:
        _describe_spec(spec)
        return _dry_run(spec)
    emit = _printer(_wants_progress(args))
    _wait_for_study(spec, args.wait, emit)
    study = run_study(spec, on_trial=lambda t: emit(_trial_line(spec, t)),
                      progress=_wants_progress(args), session=args.session, create=False)
    _err(f"done: study '{spec.name}' has {finished_count(study)} finished trials in "
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
    print(f"report written to {index} (with curves.csv, trials.csv, leaderboard.csv)")
    return 0


def cmd_rerun(args: argparse.Namespace) -> int:
    from dmisearch.runner import rerun_trial

    spec = _load(args)
    stored, plan = rerun_trial(spec, args.trial)
    old, new = stored.user_attrs.get("curve", {}), plan.curve
    print(f"trial {stored.number} of study '{spec.name}': {stored.params.get('pair')} "
          f"({stored.state.name} on {stored.user_attrs.get('device', '?')}); "
          f"rerun on {plan.trial.user_attrs.get('device', '?')}: {plan.outcome}")
    print(f"{'size':>6} {'seed':>5} {'stored':>12} {'rerun':>12} {'rel. diff':>10}")
    worst = 0.0
    for i, (n, sd, e) in enumerate(zip(new["size"], new["seed"], new["test_error"],
                                       strict=True)):
        before = old.get("test_error", [None] * (i + 1))[i] if i < len(
            old.get("test_error", [])) else None
        diff = abs(e - before) / max(abs(before), 1e-300) if before is not None else float("nan")
        worst = max(worst, diff) if diff == diff else worst
        shown = f"{before:12.6g}" if before is not None else f"{'-':>12}"
        print(f"{n:>6} {sd:>5} {shown} {e:12.6g} {diff:10.2e}")
    print(f"largest relative difference of the test errors: {worst:.2e}")
    return 0


def _wants_progress(args: argparse.Namespace) -> bool:
    return not getattr(args, "no_progress", False) and sys.stderr.isatty()


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
    excluded = _excluded_pairings(registry)
    if args.json:
        print(json.dumps({"components": comps, "plugins": plugins, "excluded_pairings": [
            {"model": m, "algorithm": a, "reason": why} for m, a, why in excluded],
            "problems": registry.problems}, indent=2, default=str))
        return 0
    titles = {"data": "data generators", "transform": "transforms",
              "architecture": "architectures", "algorithm": "algorithms"}
    for kind, title in titles.items():
        rows = [c for c in comps if c["kind"] == kind]
        print(f"{title}:")
        if not rows:
            print("  (none)")
        width = max((len(c["name"]) for c in rows), default=0)
        for c in rows:
            pkg = f"{c['package']} {c['version']}" if c["package"] else "(not packaged)"
            print(f"  {c['name']:<{width}}  {c['summary']}  [{pkg}, plugin {c['plugin']}]")
    if excluded:
        print("pairings excluded (whatever the data):")
        for m, a, why in excluded:
            print(f"  {m} / {a}: {why}")
    print("plugins:")
    for p in plugins:
        pkg = f"{p['package']} {p['version']}" if p["package"] else "(not packaged)"
        status = p["status"]
        if p["refused"]:
            n = len(p["refused"])
            status += f" ({n} class{'es' if n > 1 else ''} refused)"
        line = f"  {p['name']}: {status}, {pkg}, {p['origin']}"
        if p["error"]:
            line += f"\n      {p['error']}"
        for why in p["refused"]:
            line += f"\n      refused: {why}"
        print(line)
    for problem in registry.problems:
        _err(f"dmisearch: warning: {problem}")
    return 0


def cmd_new_plugin(args: argparse.Namespace) -> int:
    from dmisearch.scaffold import scaffold

    root = scaffold(args.name, args.kind or [], args.dir)
    print(f"created {root}\nnext:\n  cd {root}\n  pip install -e \".[test]\"\n"
          "  dmisearch plugins\n  python -m pytest\n  dmisearch run study.toml")
    return 0


def _excluded_pairings(registry: Any) -> list[tuple[str, str, str]]:
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


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------


_INTERRUPTED = False


def _interrupt(signum: int, frame: Any) -> None:
    """Ctrl-C or SIGTERM: interrupt once; later signals must not break the cleanup that
    records the running trials as failed."""
    global _INTERRUPTED
    if _INTERRUPTED:
        return
    _INTERRUPTED = True
    raise KeyboardInterrupt(f"signal {signum}")


def _apply_threads(args: argparse.Namespace) -> None:
    """``--threads`` or ``DMISEARCH_THREADS`` for the commands that compute (the others do
    not import torch for it)."""
    import os

    n = getattr(args, "threads", None)
    if n is None:
        env = os.environ.get(ENV_THREADS, "")
        if not env:
            return
        try:
            n = int(env)
        except ValueError:
            raise DmisearchError(f"{ENV_THREADS}={env!r} is not a number of threads: "
                                 "set a positive integer, or unset it") from None
        if n < 1:
            raise DmisearchError(f"{ENV_THREADS}={env!r} must be >= 1")
    from dmisearch.probe import cmd_probe

    if args.func in (cmd_run, cmd_worker, cmd_rerun, cmd_probe):
        import torch

        torch.set_num_threads(n)
        os.environ[ENV_THREADS] = str(n)  # worker processes of run --workers inherit it


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    import os

    from dmisearch.plugins import ENV_TRACE

    traced, threads = os.environ.get(ENV_TRACE), os.environ.get(ENV_THREADS)
    if getattr(args, "trace", False):
        os.environ[ENV_TRACE] = "1"  # worker processes inherit it
    global _INTERRUPTED
    _INTERRUPTED = False
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        _apply_threads(args)
        return int(args.func(args))
    except BrokenPipeError:  # `dmisearch plugins --json | head`: the reader is done
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
        return 0
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        _err("dmisearch: interrupted; the running trial was recorded as failed. "
             "Run the same command again to resume.")
        return 130
    except DmisearchError as exc:
        if debug:
            traceback.print_exc()
        _err(f"dmisearch: error: {exc.cli_message()}")
        return 1
    except Exception as exc:  # a bug in dmisearch or a plugin: say so, briefly
        if debug:
            traceback.print_exc()
        from dmisearch.storage import mask

        _err(f"dmisearch: internal error: {type(exc).__name__}: {mask(str(exc))}\n"
             "This is a bug in dmisearch or a plugin; rerun with --debug for the traceback.")
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for name, value in ((ENV_TRACE, traced), (ENV_THREADS, threads)):
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
