"""What the commands print: the study about to run, one line per finished trial, the
leaderboard, and the list of plugins. Nothing here imports torch or optuna at import time."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any


def err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def wants_progress(args: argparse.Namespace) -> bool:
    return not getattr(args, "no_progress", False) and sys.stderr.isatty()


def describe_spec(spec: Any) -> None:
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
    err(f"study '{spec.name}': data {spec.data.label} {spec.info.input_shape} "
        f"({spec.info.task}), sizes {list(spec.grid.sizes)} x {len(spec.grid.seeds)} seeds, "
        f"objective {spec.objective.name}, budget {budget}")
    n = len(spec.pairs)
    err(f"searching {n} pair{'s' if n != 1 else ''}: {pairs}")
    for m, a, why in spec.excluded:
        err(f"  skipped {m}/{a}: {why}")
    err(f"storage: {describe(spec.storage)}")


def trial_line(spec: Any, t: Any) -> str:
    from dmisearch.coordination import LOST
    from dmisearch.trialinfo import CONFIRMS_ATTR, DUPLICATE_ATTR

    pair = f"{t.user_attrs.get('model', '?')}/{t.user_attrs.get('algorithm', '?')}"
    if DUPLICATE_ATTR in t.user_attrs:
        other = t.user_attrs[DUPLICATE_ATTR]
        what = (f"repeats trial {other}: its result reused, not trained again"
                if t.state.name != "FAIL" else f"repeats trial {other}, still running: "
                "dropped, another configuration asked")
        return f"trial {t.number:>4}  {pair:<18} {what}"
    if CONFIRMS_ATTR in t.user_attrs and t.state.name == "COMPLETE":
        return (f"trial {t.number:>4}  {pair:<18} confirms trial {t.user_attrs[CONFIRMS_ATTR]} "
                f"on fresh seeds: {spec.objective.name} {t.value:.4g}  [{timing(t)}]")
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
    return f"trial {t.number:>4}  {pair:<18} {outcome}  [{timing(t)}]"


def timing(t: Any) -> str:
    """The trial's seconds; a trial trained together with others in a batch shows its share
    of the batch's time, marked as such."""
    secs = float(t.user_attrs.get("wall_time_s", 0.0))
    batch = int(t.user_attrs.get("batch_trials", 1) or 1)
    if batch <= 1:
        return f"{secs:.1f} s"
    return f"~{secs / batch:.1f} s: 1/{batch} of a {secs:.1f} s batch"


def printer(progress: bool) -> Any:
    def emit(line: str) -> None:
        if progress:
            from tqdm.auto import tqdm

            tqdm.write(line, file=sys.stderr)
        else:
            err(line)

    return emit


def print_leaderboard(spec: Any, study: Any, as_json: bool = False) -> None:
    """The board (or with ``as_json`` its records, the failures and the edges as one JSON
    object), the best configurations at the edge of their search range
    (:mod:`dmisearch.edges`), the failures by kind, and what to do next."""
    from dmisearch import board, edges
    from dmisearch.analysis import leaderboard
    from dmisearch.runner import finished_count
    from dmisearch.storage import describe

    df = leaderboard(study)
    failed = board.failures(study.get_trials(deepcopy=False))
    at_edges = edges.board_edges(study, df)
    if as_json:
        print(json.dumps({"study": spec.name, "objective": spec.objective.name,
                          "metric": spec.metric, "leaderboard": board.records(df),
                          "failures": failed, "edges": edges.records(at_edges)},
                         default=str))
        return
    print(f"\nLeaderboard of study '{spec.name}' ({spec.objective.name}, lower is better; "
          f"test error = {spec.metric}):")
    print(board.render(df, spec.objective.name))
    if at_edges:
        print("\n" + edges.format_edges(at_edges))
    if failed:
        print("\n" + board.format_failures(failed))
    done = finished_count(study)
    print(f"\n{done} finished trials stored in {describe(spec.storage)}, study "
          f"'{spec.name}'. {what_next(spec, study, done)}")


def what_next(spec: Any, study: Any, done: int) -> str:
    """Whether the study is complete, and how to go on."""
    from dmisearch.runner import study_complete

    if spec.n_trials is None:
        return "The same command searches it further (for another --timeout)."
    if not study_complete(study, spec):
        return "The same command resumes it."
    more = max(done, spec.n_trials) * 2
    return (f"The study is complete; to extend it, run the same command with "
            f"--n-trials {more} (or any number above {max(done, spec.n_trials)}).")


PLUGIN_KINDS = {"data": "data generators", "transform": "transforms",
                "architecture": "architectures", "algorithm": "algorithms"}


def print_plugins(comps: Sequence[dict[str, Any]], plugins: Sequence[dict[str, Any]],
                  excluded: Sequence[tuple[str, str, str]]) -> None:
    """``dmisearch plugins`` as text: the components by kind, the pairings excluded, and
    the plugins with their status."""
    for kind, title in PLUGIN_KINDS.items():
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
        print(_plugin_line(p))


def _plugin_line(p: dict[str, Any]) -> str:
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
    return line
