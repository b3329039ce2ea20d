"""The ``dmisearch`` command.

Exit codes: 0 success; 1 an error (one paragraph on stderr, no traceback unless
``--debug``); 2 a command-line usage error; 130 interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from dmisearch.errors import DmisearchError

EPILOG = """exit codes: 0 success, 1 error, 2 usage error, 130 interrupted.
environment: DMISEARCH_PLUGINS (load only these plugins), DMISEARCH_BLOCK_PLUGINS (never load
these), DMISEARCH_STORAGE (default storage instead of journal:.dmisearch/journal.log)."""


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks on errors")
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
    run.set_defaults(func=cmd_run)

    plugins = sub.add_parser(
        "plugins", parents=[common], help="list registered components and their plugins",
        description="List every registered data generator, transform, architecture and "
                    "algorithm with the plugin and package (and version) that provides it, "
                    "plus plugins that failed to load.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.set_defaults(func=cmd_plugins)
    return parser


def _positive_int(text: str) -> int:
    value = _nonneg_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from dmisearch.analysis import format_leaderboard, leaderboard
    from dmisearch.plugins import load_registry
    from dmisearch.runner import finished_count, run_study
    from dmisearch.storage import describe
    from dmisearch.study_file import load_study

    registry = load_registry()
    for problem in registry.problems:
        _err(f"dmisearch: warning: {problem}")
    spec = load_study(args.study, registry, n_trials=args.n_trials, timeout=args.timeout,
                      storage=args.storage, device=args.device, seed=args.seed)
    pairs = ", ".join(spec.pair_label(m, a) for m, a in spec.pairs)
    budget = " and ".join(x for x in (
        f"{spec.n_trials} trials" if spec.n_trials else "",
        f"{spec.timeout:g} s" if spec.timeout else "") if x)
    _err(f"study '{spec.name}': data {spec.data.label} {spec.info.input_shape} "
         f"({spec.info.task}), sizes {list(spec.grid.sizes)} x {len(spec.grid.seeds)} seeds, "
         f"objective {spec.objective.name}, budget {budget}")
    _err(f"searching {len(spec.pairs)} pairs: {pairs}")
    for m, a, why in spec.excluded:
        _err(f"  skipped {m}/{a}: {why}")
    _err(f"storage: {describe(spec.storage)}")
    progress = not args.no_progress and sys.stderr.isatty()

    def on_trial(t: Any) -> None:
        pair = f"{t.user_attrs.get('model', '?')}/{t.user_attrs.get('algorithm', '?')}"
        secs = t.user_attrs.get("wall_time_s", 0.0)
        if t.state.name == "COMPLETE":
            outcome = f"{spec.objective.name} {t.value:.4g}"
        elif t.state.name == "PRUNED":
            outcome = f"pruned ({t.user_attrs.get('pruned_reason', 'by the pruner')})"
        else:
            outcome = f"FAILED: {t.user_attrs.get('error', 'unknown error')}"
        line = f"trial {t.number:>4}  {pair:<18} {outcome}  [{secs:.1f} s]"
        if progress:
            from tqdm.auto import tqdm

            tqdm.write(line, file=sys.stderr)
        else:
            _err(line)

    study = run_study(spec, on_trial=on_trial, progress=progress)
    board = leaderboard(study)
    print(f"\nLeaderboard of study '{spec.name}' ({spec.objective.name}, lower is better; "
          f"test error = {spec.metric}):")
    print(format_leaderboard(board, spec.objective.name))
    print(f"\n{finished_count(study)} finished trials stored in {describe(spec.storage)}, "
          f"study '{spec.name}'. The same command resumes or extends it.")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from dmisearch.hookspecs import REGISTER_HOOKS
    from dmisearch.plugins import load_registry

    registry = load_registry()
    comps = [{
        "kind": e.kind, "name": e.name, "summary": e.cls.summary(), "plugin": e.plugin.name,
        "package": e.package, "version": e.version,
        "class": f"{e.cls.__module__}.{e.cls.__qualname__}",
        "params": {k: (list(v) if isinstance(v, tuple) else v)
                   for k, v in e.cls.param_defaults().items()},
    } for kind in REGISTER_HOOKS for e in sorted(registry, key=lambda e: e.name)
        if e.kind == kind]
    plugins = [{"name": p.name, "package": p.package, "version": p.version, "origin": p.origin,
                "status": p.status, "error": p.error} for p in registry.plugins]
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
        line = f"  {p['name']}: {p['status']}, {pkg}, {p['origin']}"
        if p["error"]:
            line += f"\n      {p['error']}"
        print(line)
    for problem in registry.problems:
        _err(f"dmisearch: warning: {problem}")
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


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        _err("dmisearch: interrupted; the running trial was recorded as failed. "
             "Run the same command again to resume.")
        return 130
    except DmisearchError as exc:
        if debug:
            traceback.print_exc()
        _err(f"dmisearch: error: {exc}")
        return 1
    except Exception as exc:  # a bug in dmisearch or a plugin: say so, briefly
        if debug:
            traceback.print_exc()
        from dmisearch.storage import mask

        _err(f"dmisearch: internal error: {type(exc).__name__}: {mask(str(exc))}\n"
             "This is a bug in dmisearch or a plugin; rerun with --debug for the traceback.")
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
