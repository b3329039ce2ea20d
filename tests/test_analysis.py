"""dmisearch.analysis and dmisearch.plots: schemas against raw attributes, bootstrap
coverage against a known truth, comparisons, figures."""

from __future__ import annotations

import copy
import math

import numpy as np
import optuna
import pandas as pd
import pytest
from conftest import TINY_STUDY
from optuna.trial import TrialState

from dmisearch import plots, simulate
from dmisearch.analysis import Results, fit_power_law, format_leaderboard
from dmisearch.metrics import aulc
from dmisearch.runner import IDENTITY_ATTR, run_study
from dmisearch.study_file import build_spec

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def study(test_registry):
    """A real study with complete, pruned and failed trials, and one still running."""
    doc = copy.deepcopy(TINY_STUDY)
    doc["search"] = {"models": ["fcn", "cnn_gap"], "algorithms": ["sgd", "ntk", "nan_test",
                                                                  "fail_test"],
                     "n_trials": 10, "sampler": "random", "seed": 3, "pruner": "none",
                     "space": {"model": {"fcn": {"width": 16, "depth": 1},
                                         "cnn_gap": {"width": 4, "depth": 1}},
                               "algorithm": {"sgd": {"steps": 5, "batch_size": 8}}}}
    spec = build_spec(doc, test_registry, storage="memory")
    st = run_study(spec)
    running = st.ask()  # a trial in flight, with a partial curve
    running.suggest_categorical("pair", [f"{m}/{a}" for m, a in spec.pairs])
    running.set_user_attr("data", {"name": "teacher", "label": "teacher"})
    running.set_user_attr("model", "fcn")
    running.set_user_attr("algorithm", "sgd")
    running.set_user_attr("curve", {"size": [8], "seed": [0], "test_error": [0.5],
                                    "train_error": [0.1], "seconds": [0.01]})
    return st


def test_curves_rows_are_the_stored_curves(study):
    df = Results([study]).curves()
    for col in ("study", "trial", "state", "data", "transforms", "model", "algorithm", "size",
                "seed", "test_error", "train_error", "seconds", "metric", "dmisearch_version"):
        assert col in df.columns, col
    assert any(c.startswith("model.") for c in df.columns)
    assert any(c.startswith("algorithm.") for c in df.columns)
    assert pd.api.types.is_numeric_dtype(df["test_error"])
    for t in study.trials:
        curve = t.user_attrs.get("curve")
        rows = df[df["trial"] == t.number]
        if not curve or not curve.get("size"):
            assert rows.empty
            continue
        assert list(rows["size"]) == curve["size"] and list(rows["seed"]) == curve["seed"]
        assert np.allclose(rows["test_error"], curve["test_error"], equal_nan=True)
        assert set(rows["state"]) == {t.state.name}
        for k, v in (t.user_attrs.get("model_params") or {}).items():
            assert all(x == v for x in rows[f"model.{k}"]), (k, v)
    assert "RUNNING" in set(df["state"])  # a study still running reads fine


def test_trials_scores_match_the_stored_ones(study):
    df = Results([study]).trials().set_index("trial")
    assert len(df) == len(study.trials)
    states = set(df["state"])
    assert {"COMPLETE", "PRUNED", "FAIL", "RUNNING"} <= states
    for t in study.trials:
        row = df.loc[t.number]
        assert row["state"] == t.state.name
        if t.state == TrialState.COMPLETE:
            assert row["value"] == pytest.approx(t.value)
            assert row["aulc"] == pytest.approx(t.user_attrs["scores"]["aulc"])
            assert row["beta"] == pytest.approx(t.user_attrs["scores"]["beta"])
            sizes = sorted(set(t.user_attrs["curve"]["size"]))
            assert f"slope_{sizes[0]}_{sizes[1]}" in df.columns
        if t.state == TrialState.FAIL:
            assert isinstance(row["error"], str) and row["error"]
        assert row["schema"] in (0, 1)


def test_trials_written_by_older_versions_read_as_missing_not_as_errors():
    st = optuna.create_study()
    st.add_trial(optuna.trial.create_trial(value=0.3, user_attrs={
        "model": "fcn", "algorithm": "sgd", "curve": {"size": [4, 8], "seed": [0, 0],
                                                     "test_error": [0.5, 0.25]}}))
    res = Results([st])
    trials = res.trials()
    assert trials.loc[0, "schema"] == 0 and trials.loc[0, "dmisearch_version"] is None
    assert pd.isna(trials.loc[0, "aulc"])
    assert len(res.curves()) == 2
    board = res.leaderboard()
    assert board.loc[0, "model"] == "fcn" and board.loc[0, "score"] == 0.3


def test_leaderboard_best_per_triplet_with_intervals(study):
    board = Results([study]).leaderboard()
    ranked = board[board["rank"].notna()]
    assert list(ranked["rank"]) == list(range(1, len(ranked) + 1))
    assert (np.diff(ranked["score"]) >= 0).all()
    for _, row in ranked.iterrows():
        best = min((t for t in study.trials if t.state == TrialState.COMPLETE
                    and t.user_attrs["model"] == row["model"]
                    and t.user_attrs["algorithm"] == row["algorithm"]), key=lambda t: t.value)
        assert row["trial"] == best.number and row["score"] == best.value
        assert row["ci_low"] <= row["score"] <= row["ci_high"] or row["ci_note"] in (
            "n/a: 2 seeds", f"n/a: best of {row['complete']}")
    unranked = board[board["rank"].isna()]
    assert set(unranked["algorithm"]) >= {"fail_test"}  # failed-only triplets come last
    assert (unranked["failed"] + unranked["pruned"] > 0).all()


def _synthetic(n_triplets: int, seeds: int, rng: np.random.Generator, sigma: float = 0.3):
    """A study of trials whose curves are err = mu(n) * lognormal noise per seed (the
    population mean curve is known: ``simulate.NoiseModel``)."""
    model = simulate.NoiseModel("lognormal", sigma=sigma)
    sizes = simulate.SIZES
    st = optuna.create_study()
    st.set_user_attr(IDENTITY_ATTR, {"objective": {"name": "aulc", "metric": "mse"},
                                     "curve": {"test_size": 1000}})
    for i, err in enumerate(model.draw(seeds, n_triplets, rng)):
        _add(st, f"m{i}", err, sizes)
    return st, model.true_score()


def _add(st, model: str, err: np.ndarray, sizes=simulate.SIZES, algorithm: str = "sgd",
         **attrs):
    """Store a complete trial with per-seed errors ``err[size, seed]``."""
    seeds = err.shape[1]
    curve = {"size": [int(n) for n in np.repeat(sizes, seeds)],
             "seed": list(attrs.pop("seed_list", range(seeds))) * len(sizes),
             "test_error": [float(e) for e in err.ravel()]}
    st.add_trial(optuna.trial.create_trial(
        value=aulc(sizes, err.mean(1), 1.0, 1e-300), params=attrs.pop("params", {}),
        distributions=attrs.pop("distributions", {}), user_attrs={
            "model": model, "algorithm": algorithm, "data": {"label": "synthetic"},
            "model_params": attrs.pop("model_params", {}), "algorithm_params": {},
            "curve": curve, "baseline_error": 1.0, **attrs}))


@pytest.mark.parametrize("seeds", [3, 5, 8, 16])
@pytest.mark.parametrize("noise", ["lognormal", "t3"])
def test_intervals_cover_the_truth_at_the_nominal_rate(noise, seeds):
    """95% intervals over seeds hold the true score of 93-97% of simulated trials, at the
    seed counts users run, with light and heavy-tailed seed noise (2000 trials: the
    binomial standard error at 0.95 is 0.005)."""
    model = simulate.MODELS[noise]
    covered = simulate.coverage(model, seeds, 2000, np.random.default_rng(seeds))
    assert 0.93 <= covered <= 0.97, covered


@pytest.mark.parametrize("seeds", [3, 5, 8, 16])
@pytest.mark.parametrize("paired", [True, False])
def test_equal_triplets_are_called_different_at_most_5_percent_of_the_time(seeds, paired):
    """Two triplets with the same true score: "a beats b" (or b beats a) comes out at most
    5% of the time, up to simulation error (one-sided binomial test at 0.1%)."""
    from scipy.stats import binomtest

    reps = 3000
    rate = simulate.false_positive_rate(simulate.MODELS["lognormal"], seeds, reps,
                                        np.random.default_rng(100 + seeds), paired=paired)
    assert binomtest(round(rate * reps), reps, 0.05, alternative="greater").pvalue > 1e-3, rate


def test_leaderboard_intervals_cover_through_the_stored_trials():
    """End to end: trials stored in a study, read back by Results.leaderboard (one
    configuration per triplet, so no selection), cover the truth at 95% +- 3 SE."""
    st, truth = _synthetic(n_triplets=600, seeds=5, rng=np.random.default_rng(0))
    board = Results([st]).leaderboard()
    assert board["ci_note"].eq("").all() and (board["seeds"] == 5).all()
    covered = ((board["ci_low"] <= truth) & (truth <= board["ci_high"])).mean()
    assert 0.923 <= covered <= 0.977, covered
    wider = Results([st]).leaderboard(confidence=0.99)
    assert ((wider["ci_high"] - wider["ci_low"]) > (board["ci_high"] - board["ci_low"])).all()


def test_no_interval_below_three_seeds_and_none_for_a_picked_best():
    st, _ = _synthetic(n_triplets=1, seeds=2, rng=np.random.default_rng(1))
    board = Results([st]).leaderboard()
    assert board.loc[0, "ci_note"] == "n/a: 2 seeds" and math.isnan(board.loc[0, "ci_low"])
    assert "n/a: 2 seeds" in format_leaderboard(board, "aulc")
    rng = np.random.default_rng(2)
    st, _ = _synthetic(n_triplets=0, seeds=5, rng=rng)
    for width in (16, 32, 64):  # three configurations of one triplet
        _add(st, "m", simulate.MODELS["lognormal"].draw(5, 1, rng)[0],
             model_params={"width": width})
    (row,) = Results([st]).leaderboard().itertuples()
    assert row.complete == 3 and row.ci_note == "n/a: best of 3" and math.isnan(row.ci_low)


def test_compare_tells_a_better_triplet_from_an_equal_one():
    rng = np.random.default_rng(5)
    st, _ = _synthetic(n_triplets=2, seeds=8, rng=rng)
    good = simulate.NoiseModel("lognormal", sigma=0.1, a=0.3).draw(8, 1, rng)[0]
    _add(st, "good", good)
    res = Results([st])
    clear = res.compare(("synthetic", "good", "sgd"), ("synthetic", "m0", "sgd"))
    assert clear.paired and clear.p_value < 0.01 and clear.ci_high < 0
    assert clear.verdict == "a is more sample-efficient" and "p = " in str(clear)
    same = res.compare(("synthetic", "m0", "sgd"), ("synthetic", "m0", "sgd"))
    assert same.p_value == 1.0 and same.verdict == "no clear difference"
    with pytest.raises(KeyError, match="no complete trial"):
        res.compare(("synthetic", "nope", "sgd"), ("synthetic", "m0", "sgd"))


def test_confirmation_trials_rank_the_board_and_feed_compare():
    """A confirmation (the same configuration on fresh seeds) gives the triplet its
    confirmed score and interval; the board ranks on it, compare uses it."""
    rng = np.random.default_rng(7)
    model = simulate.MODELS["lognormal"]
    st, _ = _synthetic(n_triplets=0, seeds=5, rng=rng)
    _add(st, "lucky", 0.5 * model.draw(5, 1, rng)[0])  # looks best in the search...
    _add(st, "solid", 0.7 * model.draw(5, 1, rng)[0])
    fresh = list(range(5, 13))
    _add(st, "lucky", 1.2 * model.draw(8, 1, rng)[0], confirms=0, confirm_seeds=fresh,
         seed_list=fresh)  # ...but not on fresh seeds
    _add(st, "solid", 0.7 * model.draw(8, 1, rng)[0], confirms=1, confirm_seeds=fresh,
         seed_list=fresh)
    board = Results([st]).leaderboard()
    assert list(board["model"]) == ["solid", "lucky"]  # ranked on confirmed scores
    assert list(board["trial"]) == [1, 0] and list(board["confirmed_trial"]) == [3, 2]
    assert (board["confirmed_seeds"] == 8).all() and board["confirmed_low"].notna().all()
    assert board.loc[0, "beats_next"] and board.loc[0, "p_vs_next"] < 0.05
    c = Results([st]).compare(("synthetic", "solid", "sgd"), ("synthetic", "lucky", "sgd"))
    assert c.confirmed and (c.trial_a, c.trial_b) == (3, 2) and c.seeds == 8
    assert "confirmed" in format_leaderboard(board, "aulc")
    kinds = Results([st]).trials()["kind"].tolist()
    assert kinds == ["search", "search", "confirmation", "confirmation"]


def test_power_law_fit_recovers_its_parameters():
    n = np.array([10, 20, 40, 80, 160, 320, 640])
    a, b, c = fit_power_law(n, 3.0 * n ** -0.7 + 0.01)
    assert a == pytest.approx(3.0, rel=1e-3) and b == pytest.approx(0.7, rel=1e-3)
    assert c == pytest.approx(0.01, rel=1e-2)
    assert all(math.isnan(v) for v in fit_power_law(n[:2], n[:2] ** -1.0))


def test_figures_render_to_every_format(study, tmp_path):
    res = Results([study])
    figs = {"curves": plots.curves(res), "heatmap": plots.heatmap(res),
            "across": plots.across_data(res), "exponents": plots.exponents(res)}
    for name, fig in figs.items():
        for ext in ("png", "svg", "pdf"):
            path = tmp_path / f"{name}.{ext}"
            fig.savefig(path)
            assert path.stat().st_size > 1000
    assert (tmp_path / "curves.pdf").read_bytes().startswith(b"%PDF")
    # heatmap cells show the leaderboard's best scores
    board = res.leaderboard()
    texts = {t.get_text() for t in figs["heatmap"].axes[0].texts}
    assert {f"{v:.2f}" for v in board["score"].dropna()} == texts
    lines = figs["curves"].axes[0].get_lines()
    assert len(lines) == int(board["rank"].notna().sum())


def test_across_data_has_one_panel_per_data_set(test_registry):
    doc = copy.deepcopy(TINY_STUDY)
    doc["search"].update(n_trials=2, models=["fcn"])
    del doc["search"]["space"]["model"]["cnn_gap"]
    studies = []
    for transforms in ([], ["permute"]):
        d = copy.deepcopy(doc)
        d["study"]["name"] = f"tiny{len(transforms)}"
        d["data"]["transforms"] = transforms
        studies.append(run_study(build_spec(d, test_registry, storage="memory")))
    res = Results(studies)
    assert set(res.leaderboard()["data"]) == {"teacher", "teacher+permute"}
    fig = plots.across_data(res)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["learning curves: teacher", "learning curves: teacher+permute"]


def test_load_by_study_file_and_name(tmp_path, tiny_doc, registry):
    from conftest import dump_toml

    tiny_doc["study"]["storage"] = f"journal:{tmp_path / 'j.log'}"
    tiny_doc["search"]["n_trials"] = 1
    path = tmp_path / "s.toml"
    path.write_text(dump_toml(tiny_doc))
    run_study(build_spec(tiny_doc, registry))
    by_file = Results.load(path)
    by_name = Results.load("tiny", storage=f"journal:{tmp_path / 'j.log'}")
    assert by_file.trials()["value"].tolist() == by_name.trials()["value"].tolist()
    from dmisearch.errors import DmisearchError

    with pytest.raises(DmisearchError, match="no study 'other'"):
        Results.load("other", storage=f"journal:{tmp_path / 'j.log'}")


def test_holm_adjusts_step_down_and_keeps_the_order():
    from dmisearch.stats import holm

    # by hand: sorted 0.01, 0.03, 0.04 -> 3 x 0.01, 2 x 0.03, max(0.06, 1 x 0.04)
    assert holm([0.01, 0.04, 0.03, math.nan])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(holm([0.5, math.nan])[1]) and holm([0.5, math.nan])[0] == 0.5
    assert holm([0.9, 0.2]) == [0.9, 0.4] and holm([0.9, 0.8]) == [1.0, 1.0] and holm([]) == []
