"""The ``dmisearch`` command.

Exit codes: 0 success; 1 an error (one paragraph on stderr, no traceback unless
``--debug``); 2 a command-line usage error; 130 interrupted (Ctrl-C or SIGTERM).

The modules: :mod:`~dmisearch.cli.parser` (every command's parser),
:mod:`~dmisearch.cli.commands` (the commands, ``cmd_*``) and :mod:`~dmisearch.cli.output`
(what they print); :func:`main` here runs one command. Importing them imports neither
torch nor optuna: the commands do, when they run.
"""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
from collections.abc import Sequence
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
    excluded_pairings,
)
from dmisearch.cli.output import err, trial_line
from dmisearch.cli.parser import build_parser
from dmisearch.errors import DmisearchError

ENV_THREADS = "DMISEARCH_THREADS"

# The names the tests import from here.
_excluded_pairings = excluded_pairings
_trial_line = trial_line

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
    if args.func in (cmd_run, cmd_worker, cmd_rerun, cmd_probe, cmd_predict):
        import torch

        torch.set_num_threads(n)
        os.environ[ENV_THREADS] = str(n)  # worker processes of run --workers inherit it


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
        err("dmisearch: interrupted; the running trial was recorded as failed. "
            "Run the same command again to resume.")
        return 130
    except DmisearchError as exc:
        if debug:
            traceback.print_exc()
        err(f"dmisearch: error: {exc.cli_message()}")
        return 1
    except Exception as exc:  # a bug in dmisearch or a plugin: say so, briefly
        if debug:
            traceback.print_exc()
        from dmisearch.storage import mask

        err(f"dmisearch: internal error: {type(exc).__name__}: {mask(str(exc))}\n"
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


__all__ = [
    "ENV_THREADS", "build_parser", "cmd_new_plugin", "cmd_plugins", "cmd_predict", "cmd_probe",
    "cmd_report", "cmd_rerun", "cmd_run", "cmd_worker", "main",
]
