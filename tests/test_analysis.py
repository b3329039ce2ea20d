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

from dmisearch import plots
from dmisearch.analysis import Results, fit_power_law
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
    board = res.leaderboard(n_boot=50)
    assert board.loc[0, "model"] == "fcn" and board.loc[0, "score"] == 0.3


def test_leaderboard_best_per_triplet_with_intervals(study):
    board = Results([study]).leaderboard(n_boot=300)
    ranked = board[board["rank"].notna()]
    assert list(ranked["rank"]) == list(range(1, len(ranked) + 1))
    assert (np.diff(ranked["score"]) >= 0).all()
    for _, row in ranked.iterrows():
        best = min((t for t in study.trials if t.state == TrialState.COMPLETE
                    and t.user_attrs["model"] == row["model"]
                    and t.user_attrs["algorithm"] == row["algorithm"]), key=lambda t: t.value)
        assert row["trial"] == best.number and row["score"] == best.value
        assert row["ci_low"] <= row["score"] <= row["ci_high"] or math.isclose(
            row["ci_low"], row["ci_high"])
    unranked = board[board["rank"].isna()]
    assert set(unranked["algorithm"]) >= {"fail_test"}  # failed-only triplets come last
    assert (unranked["failed"] + unranked["pruned"] > 0).all()


def _synthetic(n_triplets: int, seeds: int, rng: np.random.Generator, sigma: float = 0.4):
    """Curves err = a n^-b * exp(sigma z) per seed: the population mean curve is known."""
    sizes = np.array([16, 32, 64, 128, 256])
    st = optuna.create_study()
    st.set_user_attr(IDENTITY_ATTR, {"objective": {"name": "aulc", "metric": "mse"},
                                     "curve": {"test_size": 1000}})
    a, b, baseline = 2.0, 0.5, 1.0
    truth = aulc(sizes, a * sizes ** -b * math.exp(sigma ** 2 / 2), baseline, 1e-300)
    for i in range(n_triplets):
        err = a * sizes[:, None] ** -b * np.exp(sigma * rng.standard_normal((5, seeds)))
        value = aulc(sizes, err.mean(1), baseline, 1e-300)
        curve = {"size": [int(n) for n in np.repeat(sizes, seeds)],
                 "seed": list(range(seeds)) * 5, "test_error": [float(e) for e in err.ravel()]}
        st.add_trial(optuna.trial.create_trial(value=value, user_attrs={
            "model": f"m{i}", "algorithm": "sgd", "data": {"label": "synthetic"},
            "curve": curve, "baseline_error": baseline}))
    return st, truth


def test_bootstrap_intervals_cover_the_truth_at_about_the_nominal_rate():
    st, truth = _synthetic(n_triplets=300, seeds=16, rng=np.random.default_rng(0))
    board = Results([st]).leaderboard(confidence=0.9, n_boot=400, seed=1)
    covered = ((board["ci_low"] <= truth) & (truth <= board["ci_high"])).mean()
    # 300 replicates: the binomial standard error at 0.9 is 0.017
    assert 0.84 <= covered <= 0.96, covered
    wider = Results([st]).leaderboard(confidence=0.99, n_boot=400, seed=1)
    assert ((wider["ci_high"] - wider["ci_low"]) > (board["ci_high"] - board["ci_low"])).all()


def test_compare_tells_a_better_triplet_from_an_equal_one():
    rng = np.random.default_rng(5)
    st, _ = _synthetic(n_triplets=2, seeds=8, rng=rng)
    sizes = np.array([16, 32, 64, 128, 256])
    good = 0.3 * sizes[:, None] ** -0.5 * np.exp(0.1 * rng.standard_normal((5, 8)))
    st.add_trial(optuna.trial.create_trial(
        value=aulc(sizes, good.mean(1), 1.0, 1e-300), user_attrs={
            "model": "good", "algorithm": "sgd", "data": {"label": "synthetic"},
            "baseline_error": 1.0, "curve": {
                "size": [int(n) for n in np.repeat(sizes, 8)], "seed": list(range(8)) * 5,
                "test_error": [float(e) for e in good.ravel()]}}))
    res = Results([st])
    clear = res.compare(("synthetic", "good", "sgd"), ("synthetic", "m0", "sgd"))
    assert clear.paired and clear.p_a_better > 0.99 and clear.ci_high < 0
    assert clear.verdict == "a is more sample-efficient" and "P(a better)" in str(clear)
    same = res.compare(("synthetic", "m0", "sgd"), ("synthetic", "m0", "sgd"))
    assert same.p_a_better == 0.5 and same.verdict == "no clear difference"
    with pytest.raises(KeyError, match="no complete trial"):
        res.compare(("synthetic", "nope", "sgd"), ("synthetic", "m0", "sgd"))


def test_power_law_fit_recovers_its_parameters():
    n = np.array([10, 20, 40, 80, 160, 320, 640])
    a, b, c = fit_power_law(n, 3.0 * n ** -0.7 + 0.01)
    assert a == pytest.approx(3.0, rel=1e-3) and b == pytest.approx(0.7, rel=1e-3)
    assert c == pytest.approx(0.01, rel=1e-2)
    assert all(math.isnan(v) for v in fit_power_law(n[:2], n[:2] ** -1.0))


def test_figures_render_to_every_format(study, tmp_path):
    res = Results([study])
    figs = {"curves": plots.curves(res), "heatmap": plots.heatmap(res),
            "across": plots.across_data(res), "exponents": plots.exponents(res, n_boot=50)}
    for name, fig in figs.items():
        for ext in ("png", "svg", "pdf"):
            path = tmp_path / f"{name}.{ext}"
            fig.savefig(path)
            assert path.stat().st_size > 1000
    assert (tmp_path / "curves.pdf").read_bytes().startswith(b"%PDF")
    # heatmap cells show the leaderboard's best scores
    board = res.leaderboard(n_boot=20)
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
    assert set(res.leaderboard(n_boot=20)["data"]) == {"teacher", "teacher+permute"}
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
