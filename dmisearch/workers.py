"""``dmisearch run --workers N``: N worker processes on this machine sharing one study.

Each worker is ``dmisearch worker STUDY.toml`` with the same overrides, its own sampler
session (taken from the study for all of them at once, so worker i of a run always gets
the i-th) and, with ``--gpus``, its own CUDA device; CPU workers split the cores between
them (``DMISEARCH_THREADS``). They coordinate through the study's storage only
(``coordination``), exactly as workers on other machines would. This process relays their
output, shows one progress bar for the whole study (read from the storage), and shuts them
all down on Ctrl-C or SIGTERM: each records its running trials as failed ("interrupted"), so
the same command resumes.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

import optuna

from dmisearch.coordination import claim_sessions
from dmisearch.errors import DmisearchError
from dmisearch.runner import finished_count, open_study, study_complete
from dmisearch.study_file import StudySpec

SHUTDOWN_WAIT = 60.0  # seconds workers get to record their interrupted trials


def worker_command(args: argparse.Namespace, index: int, session: int) -> list[str]:
    cmd = [sys.executable, "-m", "dmisearch", "worker", str(args.study),
           "--session", str(session), "--no-progress"]
    for path in getattr(args, "plugin", None) or []:
        cmd += ["--plugin", os.path.abspath(path)]
    for flag, value in (("--storage", args.storage), ("--n-trials", args.n_trials),
                        ("--timeout", args.timeout), ("--seed", args.seed)):
        if value is not None:
            cmd += [flag, str(value)]
    device = f"cuda:{args.gpus[index % len(args.gpus)]}" if args.gpus else args.device
    if device:
        cmd += ["--device", device]
    return cmd


def _relay(stream: IO[str], emit: Callable[[str], None], prefix: str) -> None:
    for line in stream:
        emit(prefix + line.rstrip("\n"))


def run_workers(spec: StudySpec, args: argparse.Namespace, *, progress: bool,
                emit: Callable[[str], None], line: Callable[[Any], str]) -> optuna.Study:
    """Start the workers, relay their output, wait for them; returns the study."""
    study = open_study(spec)  # created (and its identity recorded) before the workers race
    n = args.workers
    first = claim_sessions(study, spec.storage, n)
    # each worker gets its share of the cores, unless --threads / DMISEARCH_THREADS set it
    threads = int(os.environ.get("DMISEARCH_THREADS") or max(1, (os.cpu_count() or 1) // n))
    env = dict(os.environ, DMISEARCH_THREADS=str(threads), PYTHONUNBUFFERED="1")
    procs = [subprocess.Popen(worker_command(args, i, first + i), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(n)]
    relays = [threading.Thread(target=_relay, args=(p.stdout, emit, f"[worker {i}] "),
                               daemon=True) for i, p in enumerate(procs)]
    for r in relays:
        r.start()
    emit(f"started {n} workers (pids {', '.join(str(p.pid) for p in procs)}), "
         f"{threads} CPU threads each" + (f", GPUs {args.gpus}" if args.gpus else ""))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=spec.n_trials, initial=finished_count(study), unit="trial",
                   desc=f"study {spec.name} ({n} workers)", dynamic_ncols=True)
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(1.0)
            if bar is not None:
                bar.n = finished_count(study)
                bar.refresh()
    except KeyboardInterrupt:
        _shut_down(procs)
        raise
    finally:
        if bar is not None:
            bar.close()
        for r in relays:
            r.join(timeout=5)
    failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode != 0]
    if failed:
        which = ", ".join(f"{i} (exit code {rc})" for i, rc in failed)
        if not study_complete(study, spec):
            raise DmisearchError(
                f"workers {which} stopped with an error; their output is above. Trials they "
                "finished are stored; the same command resumes.")
        emit(f"warning: workers {which} stopped along the way (their output is above); the "
             "others completed the study")
    return study


def _shut_down(procs: list[subprocess.Popen]) -> None:
    """Ask every worker to stop (they record their running trials as interrupted); kill
    those that do not within SHUTDOWN_WAIT."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + SHUTDOWN_WAIT
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
