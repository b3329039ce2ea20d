"""Best configurations at the edge of their search range (``dmisearch.edges``): which values
count as at an end, what the board says, and what a user can paste to widen the range."""

from __future__ import annotations

import html
import json
import re

import optuna
import pytest
from conftest import dump_toml
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from test_report import body_data, chromium, needs_chromium

from dmisearch import edges
from dmisearch.cli import main

RIDGE = FloatDistribution(1e-6, 0.1, log=True)


def frozen(params: dict, dists: dict, number: int = 3) -> optuna.trial.FrozenTrial:
    trial = optuna.trial.create_trial(params=params, distributions=dists, value=0.0)
    trial.number = number
    return trial


@pytest.mark.parametrize(("value", "end"), [
    (1e-6, "low"),      # the bound itself (a corner trial, a prior's start)
    (1.1e-6, "low"),    # within 1% of the log range: log(1.1) / log(1e5) = 0.8%
    (0.1, "high"), (0.095, "high"),
    (1.2e-6, None),     # 1.6% of the log range in: not an edge
    (3e-4, None),
])
def test_a_value_at_or_within_one_percent_of_an_end_is_at_the_edge(value, end):
    found = edges.trial_edges(frozen({"algorithm.ntk.ridge": value},
                                     {"algorithm.ntk.ridge": RIDGE}), "cnn_gap", "ntk")
    assert [e.end for e in found] == ([end] if end else [])


def test_linear_and_integer_ranges_and_what_never_counts():
    dists = {"algorithm.sgd.momentum": FloatDistribution(0.0, 0.9),
             "model.fcn.depth": IntDistribution(1, 5),
             "model.fcn.width": IntDistribution(16, 16),  # one value: no beyond to search
             "model.cnn_vec.depth": IntDistribution(1, 4),  # 4 values: every one at an end
             "algorithm.sgd.nesterov": CategoricalDistribution([True, False]),
             "pair": CategoricalDistribution(["fcn/sgd"])}
    params = {"algorithm.sgd.momentum": 0.895, "model.fcn.depth": 1, "model.fcn.width": 16,
              "model.cnn_vec.depth": 4,
              "algorithm.sgd.nesterov": True, "pair": "fcn/sgd"}
    found = {e.param: e for e in edges.trial_edges(frozen(params, dists), "fcn", "sgd")}
    assert set(found) == {"algorithm.sgd.momentum", "model.fcn.depth"}
    assert found["algorithm.sgd.momentum"].end == "high"
    assert found["algorithm.sgd.momentum"].widened() == pytest.approx((0.0, 1.8))
    assert found["model.fcn.depth"].widened() == (1, 5)  # not down to 0 networks' layers
    params["model.fcn.depth"] = 5
    assert {e.param: e for e in edges.trial_edges(frozen(params, dists), "fcn", "sgd")}[
        "model.fcn.depth"].widened() == (1, 9)
    params["model.fcn.depth"] = 4  # an integer strictly inside is not at the edge
    found = edges.trial_edges(frozen(params, dists), "fcn", "sgd")
    assert [e.param for e in found] == ["algorithm.sgd.momentum"]


def test_the_advice_names_the_study_file_line_that_widens_the_range():
    (edge,) = edges.trial_edges(frozen({"algorithm.ntk.ridge": 1.01958e-06},
                                       {"algorithm.ntk.ridge": RIDGE}, number=9),
                                "cnn_gap", "ntk")
    assert edge.widened() == pytest.approx((1e-7, 0.1))
    assert edge.advice() == (
        "cnn_gap/ntk: the best trial (9) has ridge = 1.01958e-06, at the low end of its range "
        "[1e-06, 0.1]; a better value may lie beyond. To search further, widen it, e.g. "
        "[search.space.algorithm.ntk] ridge = { low = 1e-07, high = 0.1, log = true }")


def test_run_says_which_best_configurations_sit_at_an_edge(tmp_path, tiny_doc, monkeypatch,
                                                          capsys):
    """Through the command users type (in this process, with every value of a range counted
    as at an edge, EDGE_SHARE = 0.5): the board lists each triplet's best trial with the
    line that widens its learning rate's range, and --json carries the same."""
    monkeypatch.setattr(edges, "EDGE_SHARE", 0.5)
    tiny_doc["search"]["space"]["algorithm"]["sgd"]["lr"] = {"low": 0.01, "high": 0.1,
                                                             "log": True}
    tiny_doc["search"]["n_trials"] = 2
    study = tmp_path / "tiny.toml"
    study.write_text(dump_toml(tiny_doc))
    storage = f"journal:{tmp_path / 'j.log'}"
    assert main(["run", str(study), "--storage", storage, "--no-progress"]) == 0
    out = capsys.readouterr().out
    text = out.split("At the edge of the search range:\n", 1)[1]
    lines = [line for line in text.splitlines() if line.startswith("  ")]
    assert all("[search.space.algorithm.sgd] lr = " in line and "log = true }" in line
               for line in lines), out
    assert main(["run", str(study), "--storage", storage, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert [e["advice"] for e in record["edges"]] == [line.strip() for line in lines]
    best = [r["trial"] for r in record["leaderboard"] if r["trial"] is not None]
    assert lines and [e["trial"] for e in record["edges"]] == best  # one per triplet
    monkeypatch.setattr(edges, "EDGE_SHARE", 0.0)  # none: the board says nothing of edges
    assert main(["run", str(study), "--storage", storage]) == 0
    assert "At the edge" not in capsys.readouterr().out


@pytest.fixture
def report_with_edges(tmp_path, tiny_doc, test_registry, monkeypatch):
    """A report whose leaderboard lists edges (every value counted as at one)."""
    from dmisearch.analysis import Results
    from dmisearch.report import write_report
    from dmisearch.runner import run_study
    from dmisearch.study_file import build_spec

    monkeypatch.setattr(edges, "EDGE_SHARE", 0.5)
    tiny_doc["search"]["space"]["algorithm"]["sgd"]["lr"] = {"low": 0.01, "high": 0.1,
                                                             "log": True}
    tiny_doc["search"]["n_trials"] = 2
    study = run_study(build_spec(tiny_doc, test_registry, storage="memory"))
    return write_report(Results([study]), tmp_path / "rep")


def test_the_report_lists_them_under_its_leaderboard(report_with_edges):
    page = report_with_edges.read_text()
    board = page[page.index('<h2 id="leaderboard">'):page.index('<h2 id="figures">')]
    items = re.findall(r"<li>(.*?)</li>", board.split('<div id="edges">')[1])
    assert items and all("[search.space.algorithm.sgd] lr = " in html.unescape(i)
                         for i in items), items


@needs_chromium
def test_the_edges_fit_an_800_px_window(report_with_edges, tmp_path):
    """In a real browser the page with its edges list still fits 800 px: no sideways
    scrolling from the long advice lines."""
    shown = chromium(report_with_edges.as_uri(), tmp_path, 800, "--dump-dom")
    got = body_data(shown.stdout)
    assert got["errors"] == "0", got
    assert int(got["scroll-width"]) <= int(got["inner-width"]) == 800, got
    assert 'id="edges"' in shown.stdout
