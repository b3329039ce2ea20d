"""The terminal board (dmisearch.board): fits the width, one format per column, the same
board as JSON, and failures counted by kind."""

from __future__ import annotations

import copy
import json
import re

import pytest
from conftest import TINY_STUDY, dump_toml
from test_cli import cli
from test_runner import _mean_test_doc

from dmisearch import board
from dmisearch.analysis import leaderboard
from dmisearch.runner import run_study
from dmisearch.study_file import build_spec

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def study(test_registry):
    """A study with long names and parameters, and failures of one kind."""
    doc = _mean_test_doc(copy.deepcopy(TINY_STUDY), ["mean_test", "fail_test"], 8)
    doc["search"]["models"] = ["fcn", "cnn_gap"]
    return run_study(build_spec(doc, test_registry, storage="memory"))


def demanding(study):
    """The study's board with scores of mixed magnitude and long hyperparameters."""
    df = leaderboard(study).copy()
    df["score"] = [-0.386, 0.01038, float("nan"), float("nan")][:len(df)]
    df["params"] = [{f"algorithm.sgd.{k}": v for k, v in
                     {"lr": 0.000123456, "momentum": 0.9, "batch_size": 64, "steps": 4000,
                      "weight_decay": 1e-05, "nesterov": True, "center": False}.items()}
                    | {f"model.cnn_gap.{k}": 3 for k in ("depth", "width", "filter_size")}
                    for _ in range(len(df))]
    return df


@pytest.mark.parametrize("width", [80, 100, 140, 200])
def test_the_board_fits_the_width_and_keeps_one_format_per_column(study, width):
    df = demanding(study)
    text = board.render(df, "aulc", width=width)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width, text
    assert "triplet" in lines[0] and "aulc" in lines[0] and "hyperparameters" in lines[0]
    # every score shown with the same decimals
    scores = [line.split()[6] for line in lines[1:]
              if re.match(r"^\d+\s", line)]
    shown = [s for s in scores if s != "-"]
    assert shown and len({len(s.split(".")[-1]) for s in shown}) == 1, scores
    assert scores == ["-0.386", "0.010"], scores
    # hyperparameters wrap between parameters, never inside one
    params = " ".join(line[lines[0].index("hyperparameters"):] for line in lines[1:])
    assert "lr=0.00012" in params and "mom=0.9" in params and "bs=64" in params, text
    assert len(lines) > len(df) + 1 or width >= 200  # wrapped where narrow


def test_decimals_give_three_significant_digits_to_the_largest():
    assert board.decimals([-0.386, -0.3493, 0.01038]) == 3
    assert board.decimals([12.5, 0.1]) == 1
    assert board.decimals([float("nan"), None]) == 2


def test_failures_are_counted_by_kind_with_the_first_message(study):
    found = board.failures(study.trials)
    assert [f["kind"] for f in found] == ["RuntimeError"]
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert found[0]["count"] == len(failed) > 0
    assert found[0]["first_trial"] == min(t.number for t in failed)
    assert found[0]["message"] == "RuntimeError: plugin exploded"
    text = board.format_failures(found)
    assert f"{len(failed)} x RuntimeError: first trial {found[0]['first_trial']}" in text


def test_run_json_prints_the_same_board(tmp_path, tiny_doc):
    path = tmp_path / "tiny.toml"
    path.write_text(dump_toml(tiny_doc))
    res = cli("run", str(path), "--storage", f"journal:{tmp_path / 'j.log'}",
              "--n-trials", "2", "--json")
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["objective"] == "aulc" and got["failures"] == []
    rows = got["leaderboard"]
    assert rows and {"rank", "model", "algorithm", "score", "params"} <= set(rows[0])
    assert rows[0]["rank"] == 1


def test_a_trial_of_a_batch_shows_its_share_of_the_batch_time():
    from types import SimpleNamespace

    from dmisearch.cli.output import timing

    alone = SimpleNamespace(user_attrs={"wall_time_s": 2.0, "batch_trials": 1})
    shared = SimpleNamespace(user_attrs={"wall_time_s": 312.0, "batch_trials": 4})
    assert timing(alone) == "2.0 s"
    assert timing(shared) == "~78.0 s: 1/4 of a 312.0 s batch"
    assert timing(SimpleNamespace(user_attrs={"wall_time_s": 1.5})) == "1.5 s"  # older trials


def test_a_run_says_each_stage_of_each_batch_as_it_trains(tiny_doc, registry):
    """Without a terminal: one plain line per stage, before the trials it trains finish,
    with the study's counts and, once a trial has finished, the time left."""
    tiny_doc["search"].update(pruner="median", n_trials=4, trials_per_batch=2)
    notes: list[str] = []
    finished: list[int] = []
    run_study(build_spec(tiny_doc, registry, storage="memory"), note=notes.append,
              on_trial=lambda t: (finished.append(t.number), notes.append(f"told {t.number}")))
    stages = [n for n in notes if "stage" in n]
    assert stages[0].startswith("batch of 2 (trials 0-1): stage 1/2 (n=8..8) trained")
    assert "study 0/4 done, 0 pruned, 0 failed" in stages[0]
    assert any(n.startswith("batch of 2 (trials 0-1): stage 2/2 (n=16..16)") for n in stages)
    assert notes.index(stages[0]) < notes.index("told 0")  # said before the batch ends
    later = [n for n in stages if "(trials 2-3)" in n]
    assert later and all("left" in n for n in later[:1]), later


def test_long_kernels_report_their_blocks_through_the_callers_channel(monkeypatch):
    """A Gram matrix computed inside `reporting_to(cb)` reports (done, total) blocks to cb
    (as run and predict set it), and Throttled says so at most every `every` seconds."""
    import torch

    from dmisearch import progress
    from dmisearch_builtins.architectures import CNNGAP
    from dmisearch_builtins.kernels import kernel

    seen: list[tuple[int, int]] = []
    x = torch.randn(12, 1, 8, dtype=torch.float64)
    with progress.reporting_to(lambda d, t: seen.append((d, t))):
        kernel(CNNGAP(width=4, depth=1), x, None, "ntk", max_block_bytes=2**12)
    assert len(seen) > 2 and seen[-1][0] == seen[-1][1] == len(seen)
    kernel(CNNGAP(width=4, depth=1), x, None, "ntk", max_block_bytes=2**12)
    assert progress.WORK_PROGRESS.get() is None and len(seen) == seen[-1][1]  # reset

    now = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    said: list[str] = []
    cb = progress.Throttled(said.append, "cnn_gap ntk", every=10)
    for done in range(1, 41):
        now[0] += 1.0  # one second a block
        cb(done, 40)
    assert said == ["cnn_gap ntk: 11/40 blocks, 10 s so far, ~26 s left",
                    "cnn_gap ntk: 21/40 blocks, 20 s so far, ~18 s left",
                    "cnn_gap ntk: 31/40 blocks, 30 s so far, ~9 s left"]


def test_a_run_reports_training_steps_inside_a_batch(tiny_doc, registry, monkeypatch):
    """Within a stage, the engine's training steps reach the run's notes (throttled; here
    every report is said), counted over all of the batch's networks."""
    from dmisearch import engine, progress, runner

    class Eager(progress.Throttled):
        def __init__(self, say, label="kernel", every=10.0):
            super().__init__(say, label, every=0.0)

    monkeypatch.setattr(runner, "Throttled", Eager)
    monkeypatch.setattr(engine, "CPU_MAX_CHUNK", 1)  # each network a chunk of its own
    tiny_doc["search"]["space"]["algorithm"]["sgd"]["steps"] = 64
    notes: list[str] = []
    run_study(build_spec(tiny_doc, registry, storage="memory", n_trials=1), note=notes.append)
    steps = [n for n in notes if n.startswith("this batch: ") and "network training steps" in n]
    assert steps, notes
    # every network of the batch counts: 64 steps each of the trial's seeds x sizes
    networks = len(tiny_doc["curve"]["sizes"]) * tiny_doc["curve"]["seeds"]
    counts = [tuple(map(int, re.search(r"this batch: (\d+)/(\d+) network", n).groups()))
              for n in steps]
    assert {total for _, total in counts} == {64 * networks}, steps
    assert any(0 < done < 64 * networks for done, _ in counts), steps


def test_chunks_of_a_batch_count_as_one_computation():
    """The engine trains a batch in chunks one after another, each counting its steps from 0:
    the progress counts them on, so its total and its time left are the batch's."""
    from dmisearch import progress

    seen: list[tuple[int, int, str]] = []
    cb = progress.Cumulative(lambda *a: seen.append(a), total=3 * 40 + 2 * 40)
    for k in (3, 2):  # a chunk of 3 networks, then one of 2, 40 steps each
        for t in range(0, 40, 16):
            cb(t * k, 40 * k, "network training steps")
    assert [d for d, _, _ in seen] == [0, 48, 96, 120, 152, 184]
    assert {t for _, t, _ in seen} == {200}


def test_time_left_leaves_out_the_first_stage(monkeypatch):
    """The MNIST-1D paper study's timeline: a first batch of 4 trials that took 18 minutes,
    most of them its kernels (computed once, then cached), then batches of minutes. The time
    left is the rate since the first stage line, not since the start (which said "~1 h 18 min
    left" with 8 minutes to go)."""
    from dmisearch import progress

    now = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    stage = progress.StageProgress(study=None, n_trials=16, n_stages=1)
    timeline = [(1102, 0), (1561, 4), (1582, 8), (1802, 12)]  # (seconds, trials done)
    lines = []
    for seconds, done in timeline:
        now[0] = seconds
        monkeypatch.setattr(stage, "counts", lambda d=done: (d, 0, 0))
        lines.append(stage.line(list(range(done, done + 4)), [250, 4000], 0))
    assert "left" not in lines[0]
    expect = [(1561 - 1102) / 4 * 12, (1582 - 1102) / 8 * 8, (1802 - 1102) / 12 * 4]
    for line, left in zip(lines[1:], expect, strict=True):
        assert line.endswith(f"; ~{progress.clock(left)} left"), line
