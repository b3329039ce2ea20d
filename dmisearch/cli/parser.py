"""The parsers: the ``dmisearch`` command's (:func:`build_parser`) with one subparser per
command, each set to run its ``cmd_*`` function (:mod:`dmisearch.cli.commands`). The probe's
options show its defaults from :mod:`dmisearch.probe.settings`, which imports no torch: so
neither does ``dmisearch --help``."""

from __future__ import annotations

import argparse
import math
from typing import Any

from dmisearch.cli.commands import (
    cmd_new_plugin,
    cmd_plugins,
    cmd_predict,
    cmd_probe,
    cmd_report,
    cmd_rerun,
    cmd_run,
    cmd_worker,
)
from dmisearch.probe.settings import (
    DEFAULT_DATA,
    PROBE_DEFAULTS,
    TOLERANCES,
    Settings,
    show_param,
)

EPILOG = """exit codes: 0 success, 1 error, 2 usage error, 130 interrupted.
environment: DMISEARCH_PLUGINS (load only these plugins; set but empty: none),
DMISEARCH_BLOCK_PLUGINS (never load these), DMISEARCH_TRACE=1 (like --trace),
DMISEARCH_THREADS=N (like --threads), DMISEARCH_STORAGE (default storage instead of the
journal .dmisearch/journal.log beside the study file)."""

PROBE_EPILOG = """exit codes: 0 success, 1 error or (--verify) a false declaration, 2 usage error.
See docs/probes.md for what is measured and how verdicts are reached."""


def build_parser() -> argparse.ArgumentParser:
    """The ``dmisearch`` command's parser, with every subcommand."""
    common = _common()
    parser = argparse.ArgumentParser(
        prog="dmisearch", parents=[common], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Search (data, model, inference algorithm) triplets for the most "
                    "sample-efficient learner, with Optuna.",
    )
    from dmisearch import __version__

    parser.add_argument("--version", action="version", version=f"dmisearch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_add_run, _add_worker, _add_report, _add_rerun, _add_predict, _add_plugins,
                _add_new_plugin, _add_probe):
        add(sub, common)
    return parser


def _common() -> argparse.ArgumentParser:
    """The options every command takes (before or after its name)."""
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
    return common


def _add_run(sub: Any, common: argparse.ArgumentParser) -> None:
    """``dmisearch run``."""
    run = sub.add_parser(
        "run", parents=[common], help="run (or resume) the study described by a study file",
        description="Run the Optuna study described by STUDY (a TOML study file), resuming it "
                    "if it already exists in the storage, then print the leaderboard of "
                    "triplets, with the best configurations at the edge of their search "
                    "range and the failures under it. Options override the file.",
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
    run.add_argument("--json", action="store_true",
                     help="print the final board (every leaderboard column), the failures "
                          "by kind and the best configurations at the edge of their search "
                          "range as one JSON object instead of the table")
    run.add_argument("--dry-run", action="store_true",
                     help="check the study file, the plugins and the storage, say what "
                          "would run, and exit: nothing is trained and no study created")
    run.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                     help="worker processes on this machine sharing the study (default 1)")
    run.add_argument("--gpus", metavar="LIST", type=_gpu_list,
                     help="comma-separated CUDA device indices; worker i uses "
                          "gpus[i %% len(gpus)] (several workers may share one)")
    run.set_defaults(func=cmd_run)


def _add_worker(sub: Any, common: argparse.ArgumentParser) -> None:
    """``dmisearch worker``."""
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


def _add_report(sub: Any, common: argparse.ArgumentParser) -> None:
    """``dmisearch report``."""
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


def _add_rerun(sub: Any, common: argparse.ArgumentParser) -> None:
    """``dmisearch rerun``."""
    rerun = sub.add_parser(
        "rerun", parents=[common], help="rerun one stored trial alone and compare its curve",
        description="Rerun trial N of the study described by STUDY.toml from its stored "
                    "parameters and seeds, and compare the new learning curve with the "
                    "stored one (identical to rounding on the same device). A rerun that "
                    "fails prints its error and traceback and exits with status 1.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rerun.add_argument("study", metavar="STUDY.toml", help="the study's file")
    rerun.add_argument("--trial", type=_nonneg_int, required=True, metavar="N",
                       help="trial number")
    rerun.add_argument("--storage", metavar="URL", help="the study's storage")
    rerun.add_argument("--device", metavar="DEVICE", help="auto, cpu, cuda or cuda:N")
    rerun.set_defaults(func=cmd_rerun)


def _add_predict(sub: Any, common: argparse.ArgumentParser) -> None:
    """``dmisearch predict``."""
    predict = sub.add_parser(
        "predict", parents=[common],
        help="predict the kernel learners' learning curves before training",
        description="For every architecture of STUDY.toml with an analytic kernel (nngp, "
                    "ntk), predict kernel ridge regression's test error at each size of the "
                    "study's curve from the kernel's spectrum on a pool of the study's own "
                    "training data, and rank the architectures by the predicted aulc. "
                    "Classification is predicted through one-hot targets (their mean "
                    "squared error, not the error rate). With --save, the predictions are "
                    "also stored on the study (created if needed, as `dmisearch run` "
                    "would), for Results.predictions(), the plots and the report. "
                    "docs/theory.md has the theory.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    predict.add_argument("study", metavar="STUDY.toml", help="the study's file")
    predict.add_argument("--pool", type=_int_at_least_2, metavar="N",
                         help="training inputs whose Gram matrix gives the spectrum (default: "
                              "4x the largest size, at least 1000, within the data); sizes "
                              "above a quarter of the pool are not predicted")
    predict.add_argument("--kind", action="append", choices=("nngp", "ntk"),
                         help="kernel to predict (repeatable; default: the study's kernel "
                              "algorithms, else ntk)")
    predict.add_argument("--data-seed", type=_nonneg_int, default=0, metavar="SEED",
                         help="data seed of the pool (default 0: the study's first draw)")
    predict.add_argument("--device", metavar="DEVICE", help="auto, cpu, cuda or cuda:N")
    predict.add_argument("--json", action="store_true",
                         help="one JSON record per (model, algorithm, size)")
    predict.add_argument("--save", action="store_true",
                         help="also store the predictions and spectra on the study in its "
                              "storage (creating the study if needed; replaces earlier ones)")
    predict.add_argument("--storage", metavar="URL",
                         help="with --save: the study's storage, as for `dmisearch run` "
                              "(default: the study file's, else the embedded journal file)")
    predict.set_defaults(func=cmd_predict)


def _int_at_least_2(text: str) -> int:
    return _int_at_least(text, 2)


def _add_plugins(sub: Any, common: argparse.ArgumentParser) -> None:
    """``dmisearch plugins``."""
    plugins = sub.add_parser(
        "plugins", parents=[common], help="list registered components and their plugins",
        description="List every registered data generator, transform, architecture and "
                    "algorithm with the plugin and package (and version) that provides it, "
                    "plus plugins that failed to load.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.set_defaults(func=cmd_plugins)


def _add_new_plugin(sub: Any, common: argparse.ArgumentParser) -> None:
    """``dmisearch new-plugin``."""
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


def _add_probe(sub: Any, common: argparse.ArgumentParser) -> None:
    """``dmisearch probe``: what to probe (:mod:`dmisearch.probe`), then how."""
    p = sub.add_parser(
        "probe", parents=[common],
        help="measure the symmetries of (model, algorithm) pairs",
        description="Train a (model, algorithm) pair on data D and on g.D (g: a transform "
                    "acting on the inputs) and compare its predictions at g.x with those at "
                    "x: exactly, seed by seed, where the architecture couples to g or the "
                    "algorithm is deterministic, else with a permutation test over seeds. "
                    "Prints a verdict (equivariant / not equivariant / inconclusive) with "
                    "the numbers behind it.",
        epilog=PROBE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = p.add_mutually_exclusive_group()
    what.add_argument("--all", action="store_true",
                      help="the table of every registered pair under every transform "
                           "(--model/--algorithm/--group narrow it)")
    what.add_argument("--verify", action="store_true",
                      help="check every declared symmetry of the registered components "
                           "(exit code 1 if one is false)")
    p.add_argument("--model", action="append", metavar="M",
                   help="architecture (repeatable with --all/--verify)")
    p.add_argument("--algorithm", action="append", metavar="I",
                   help="algorithm, e.g. sgd or sgd+shift (repeatable with --all/--verify)")
    p.add_argument("--group", action="append", metavar="G",
                   help="transform acting on the inputs (repeatable with --all/--verify)")
    p.add_argument("--data", metavar="D",
                   help="data generator, optionally with transforms (digits+permute); "
                        f"default: {DEFAULT_DATA[0]} with "
                        + ", ".join(f"{k}={show_param(v)}" for k, v in DEFAULT_DATA[1].items()))
    p.add_argument("-p", "--param", action="append", default=[], metavar="KIND.KEY=VALUE",
                   help="a hyperparameter: KIND is model, algorithm, data or group, VALUE a "
                        "TOML value (-p model.width=64 -p algorithm.lr=0.1). Defaults: "
                        + "; ".join(f"{k}: " + ", ".join(f"{q}={v}" for q, v in d.items())
                                    for k, d in PROBE_DEFAULTS.items()))
    _add_probe_settings(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_probe)


def _add_probe_settings(p: argparse.ArgumentParser) -> None:
    """How ``dmisearch probe`` trains and decides: the fields of its ``Settings``."""
    d = Settings()
    p.add_argument("--seeds", type=int, default=d.seeds, metavar="S",
                   help=f"seeds per side (default {d.seeds})")
    p.add_argument("--n-train", type=int, default=d.n_train, metavar="N",
                   help=f"training samples (default {d.n_train})")
    p.add_argument("--n-test", type=int, default=d.n_test, metavar="N",
                   help=f"test inputs compared (default {d.n_test})")
    # The probe runs in the dtypes it has a tolerance for (dmisearch.probe.statistics.DTYPES).
    p.add_argument("--dtype", choices=sorted(TOLERANCES), default=d.dtype,
                   help=f"dtype of the runs (default {d.dtype})")
    p.add_argument("--device", default=d.device, help=f"cpu, cuda or cuda:N (default "
                                                       f"{d.device})")
    p.add_argument("--alpha", type=float, default=d.alpha,
                   help=f"level of the statistical test (default {d.alpha})")
    p.add_argument("--tolerance", type=float, metavar="GAP",
                   help="relative gap counted as equal (default: "
                        + ", ".join(f"{k} {v:g}" for k, v in TOLERANCES.items()) + ")")
    p.add_argument("--data-seed", type=int, default=d.data_seed, metavar="N",
                   help="which data set D is drawn (default 0)")
    p.add_argument("--witness", action=argparse.BooleanOptionalAction, default=None,
                   help="when the test on D does not reject, search witness data (D with "
                        "anisotropic or sparse inputs) on a pilot and test it on fresh seeds, "
                        "each test at alpha/2 (default: on, unless --data fixes the data)")


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
