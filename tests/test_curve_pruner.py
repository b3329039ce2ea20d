"""The curve pruner: extrapolated learning curves decide, on curves with a known answer; bad
options are refused before trial 0; a failed fit never prunes; a real study records the
extrapolations and the analysis shows them."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from dmisearch import plots
from dmisearch.analysis import Results
from dmisearch.curve_fit import extrapolate
from dmisearch.curve_pruner import ATTR, CurvePruner
from dmisearch.errors import StudyFileError
from dmisearch.runner import run_study
from dmisearch.study_file import build_spec
from dmisearch.trialinfo import CONFIRMS_ATTR, IDENTITY_ATTR

SIZES = [16, 32, 64, 128, 256]
SEEDS = 5
IDENTITY = {"curve": {"sizes": SIZES, "seeds": list(range(SEEDS)), "test_size": 500},
            "objective": {"name": "aulc", "target": None, "metric": "mse"}}
BASELINE = 1.0


def power_curve(a: float, b: float, c: float, rng: np.random.Generator,
                noise: float = 0.05) -> np.ndarray:
    """Per-seed errors (sizes, seeds) of e(n) = a n^-b + c with multiplicative noise."""
    n = np.array(SIZES, float)[:, None]
    return (a * n**-b + c) * np.exp(rng.normal(0.0, noise, (len(SIZES), SEEDS)))


def new_study(pruner: optuna.pruners.BasePruner) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", pruner=pruner)
    study.set_user_attr(IDENTITY_ATTR, IDENTITY)
    return study


def curve_attr(err: np.ndarray) -> dict[str, list]:
    k = err.shape[0]
    return {"size": [n for n in SIZES[:k] for _ in range(SEEDS)],
            "seed": list(range(SEEDS)) * k, "test_error": err.ravel().tolist()}


def run_trial(study: optuna.Study, pair: str, err: np.ndarray, **attrs) -> int | None:
    """Report and ask as dmisearch.objective does; the size it was pruned at, or None."""
    from dmisearch.metrics import aulc

    t = study.ask()
    for key, value in {"model": pair, "algorithm": "sgd", "baseline_error": BASELINE,
                       **attrs}.items():
        t.set_user_attr(key, value)
    sizes = np.array(SIZES, float)
    for j, n in enumerate(SIZES):
        means = err[: j + 1].mean(axis=1)
        t.report(aulc(sizes[: j + 1], means, BASELINE, 1e-12), step=n)
        t.set_user_attr("curve", curve_attr(err[: j + 1]))
        if n != SIZES[-1] and t.should_prune():
            study.tell(t, state=TrialState.PRUNED)
            return n
    value = aulc(sizes, err.mean(axis=1), BASELINE, 1e-12)
    if math.isfinite(value):
        study.tell(t, value)
    else:
        study.tell(t, state=TrialState.FAIL)
    return None


def verdict(study: optuna.Study) -> dict:
    return study.trials[-1].user_attrs[ATTR]


def test_a_clearly_dominated_trial_is_pruned_at_the_first_prune_point_it_can_fit():
    rng = np.random.default_rng(0)
    study = new_study(CurvePruner(k=1))
    assert run_trial(study, "good", power_curve(2.0, 0.8, 0.01, rng)) is None
    assert run_trial(study, "bad", power_curve(20.0, 0.3, 0.5, rng)) == 32
    got = verdict(study)
    assert got["pruned"] and got["p_beats"] < 0.05 and got["n"] == 32
    assert got["low"] <= got["score"] <= got["high"] and got["reason"].startswith("pruned: P(")
    assert got["score"] > study.trials[0].value  # predicted worse than the best


def test_the_best_trial_is_never_pruned():
    """Synthetic studies of power-law curves with noise across seeds, in random orders:
    the trial whose true curve is best (by at least 0.05 decades of aulc, a 12% lower
    error on average: more than the noise) always completes."""
    n = np.array(SIZES, float)
    for seed in range(12):
        rng = np.random.default_rng(seed)
        params = [[rng.uniform(1, 10), rng.uniform(0.2, 1.2), rng.uniform(0, 0.05)]
                  for _ in range(8)]
        while True:
            truth = [aulc_of(a * n**-b + c) for a, b, c in params]
            first, second = np.sort(truth)[:2]
            if second - first >= 0.05:
                break
            params[int(np.argmin(truth))][0] *= 0.8
        study = new_study(CurvePruner(k=1, threshold=0.2))
        outcome = {i: run_trial(study, f"m{i % 4}", power_curve(*params[i], rng))
                   for i in rng.permutation(len(params))}
        best = int(np.argmin(truth))
        assert outcome[best] is None, (seed, best, outcome)
        assert any(v is not None for v in outcome.values()), seed  # it does prune


def aulc_of(mean: np.ndarray) -> float:
    from dmisearch.metrics import aulc

    return aulc(np.array(SIZES, float), mean, BASELINE, 1e-12)


def test_the_verdict_lives_in_storage_not_in_the_pruner():
    """A new pruner (another worker, a resumed run) reaches the same verdict."""
    rng = np.random.default_rng(3)
    study = new_study(CurvePruner(k=1))
    run_trial(study, "good", power_curve(2.0, 0.8, 0.01, rng))
    run_trial(study, "bad", power_curve(20.0, 0.3, 0.5, rng))
    t = study.trials[-1]
    first, again = CurvePruner(k=1).judge(study, t), CurvePruner(k=1).judge(study, t)
    assert first == again and first == t.user_attrs[ATTR]


def test_a_failed_fit_never_prunes_and_says_why():
    rng = np.random.default_rng(1)
    study = new_study(CurvePruner(k=1, threshold=0.99))
    run_trial(study, "good", power_curve(2.0, 0.8, 0.01, rng))
    t = study.ask()  # asked after the first size: one size is too few to fit
    for key, value in {"model": "bad", "algorithm": "sgd", "baseline_error": BASELINE}.items():
        t.set_user_attr(key, value)
    t.report(0.0, step=16)
    t.set_user_attr("curve", curve_attr(power_curve(20.0, 0.3, 0.5, rng)[:1]))
    assert not t.should_prune()
    assert study.trials[-1].user_attrs[ATTR]["reason"] == (
        "not pruned: fit failed: too few sizes (1 < min_sizes 2)")
    study.tell(t, state=TrialState.FAIL)
    err = power_curve(20.0, 0.3, 0.5, rng)
    err[1, 2] = math.nan
    assert run_trial(study, "bad", err) is None  # would be pruned with finite errors
    assert verdict(study)["reason"].startswith("not pruned: fit failed: non-finite error at "
                                               "n=32")
    assert "score" not in verdict(study)


def test_confirmation_trials_are_never_pruned():
    rng = np.random.default_rng(2)
    study = new_study(CurvePruner(k=1, threshold=0.99))
    run_trial(study, "good", power_curve(2.0, 0.8, 0.01, rng))
    assert run_trial(study, "bad", power_curve(20.0, 0.3, 0.5, rng), **{CONFIRMS_ATTR: 0}) is None
    assert verdict(study)["reason"] == "confirmation trial: never pruned"


def test_the_extrapolation_recovers_a_power_law():
    rng = np.random.default_rng(4)
    err = power_curve(3.0, 0.7, 0.02, rng, noise=0.01)
    ex = extrapolate("pow3", np.array(SIZES[:3], float), err[:3], np.array(SIZES, float),
                     1e-12, 200, 0)
    truth = 3.0 * np.array(SIZES, float)**-0.7 + 0.02
    assert ex.point[-1] == pytest.approx(truth[-1], rel=0.15)
    assert ex.replicates.shape == (200, len(SIZES))


@pytest.mark.parametrize("options, key, text", [
    ({"threshold": 1.5}, "threshold", "strictly between 0 and 1, got 1.5"),
    ({"threshold": 0}, "threshold", "strictly between 0 and 1"),
    ({"k": 0}, "k", "at least 1"),
    ({"bootstrap": 10}, "bootstrap", "at least 20"),
    ({"family": "pow4"}, "family", "unknown family 'pow4'; known: pow3, exp3"),
    ({"min_sizes": 1}, "min_sizes", "at least 2"),
    ({"calibrate": "yes"}, "calibrate", "true or false"),
])
def test_bad_options_are_refused_before_trial_0(tiny_doc, registry, options, key, text):
    tiny_doc["search"]["pruner"] = {"name": "curve", **options}
    with pytest.raises(StudyFileError) as info:
        build_spec(tiny_doc, registry)
    (msg,) = info.value.problems
    assert msg.startswith(f"search.pruner.{key}:") and text in msg, msg


def test_an_unknown_option_is_refused(tiny_doc, registry):
    tiny_doc["search"]["pruner"] = {"name": "curve", "treshold": 0.1}
    with pytest.raises(StudyFileError) as info:
        build_spec(tiny_doc, registry)
    assert "did you mean 'threshold'" in info.value.problems[0]


def test_a_study_with_the_curve_pruner_records_and_shows_extrapolations(tiny_doc, registry,
                                                                          one_thread):
    tiny_doc["curve"].update(sizes=[8, 16, 32], seeds=3)
    tiny_doc["search"].update(n_trials=6, sampler="random",
                              pruner={"name": "curve", "k": 1, "threshold": 0.99})
    tiny_doc["search"]["space"]["algorithm"]["sgd"]["lr"] = {"low": 0.01, "high": 0.3,
                                                             "log": True}
    study = run_study(build_spec(tiny_doc, registry, storage="memory"))
    assert all(ATTR in t.user_attrs for t in study.trials)  # every trial judged at n=16
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned, [t.user_attrs[ATTR]["reason"] for t in study.trials]
    for t in pruned:
        v = t.user_attrs[ATTR]
        assert v["pruned"] and v["low"] <= v["score"] <= v["high"] and v["n"] == 16
        assert t.user_attrs["curve"]["size"] == [8] * 3 + [16] * 3  # the partial curve
    res = Results([study])
    df = res.trials().set_index("trial")
    for t in study.trials:
        row = df.loc[t.number]
        assert row["predicted"] == (t.state == TrialState.PRUNED)
        if t.state == TrialState.PRUNED:
            assert row["predicted_score"] == pytest.approx(t.user_attrs[ATTR]["score"])
    board = res.leaderboard(predicted=True)
    assert {"predicted_score", "predicted_trial"} <= set(board.columns)
    assert "predicted_score" not in res.leaderboard().columns
    shown = board.dropna(subset=["predicted_score"])
    assert all(not (p >= s) for p, s in zip(shown["predicted_score"], shown["score"],
                                            strict=True))
    fig = plots.extrapolations(res)
    assert fig.axes and fig.axes[0].get_title() == f"extrapolations: {study.study_name}"
