"""The theory prior (``[search] prior = "theory"``): predictions stored before trial 0, the
predicted-best pairs first, far-behind pairs held to their share and never left out."""

from __future__ import annotations

import copy
import math

import optuna
import pytest
from test_study_file import one_problem

from dmisearch.prior import (
    REPLACED_ATTR,
    START_ATTR,
    Prior,
    PriorSampler,
    far_behind,
    pair_scores,
    predicted_pairs,
    start_order,
)
from dmisearch.runner import run_study
from dmisearch.study_file import build_spec
from dmisearch.trialinfo import PAIR_PARAM, PREDICTIONS_ATTR

pytestmark = pytest.mark.usefixtures("one_thread")

STUDY = {
    "study": {"name": "prior"},
    "data": {"name": "teacher", "family": "cnn_gap", "shape": [1, 8], "width": 8,
             "depth": 1, "filter_size": 3},
    "curve": {"sizes": [8, 16, 32], "seeds": 2, "test_size": 64},
    "search": {
        "models": ["fcn", "cnn_gap"], "algorithms": ["adam", "ntk"], "n_trials": 10,
        "seed": 0, "prior": {"name": "theory", "pool": 128}, "pruner": "none",
        "space": {"model": {"fcn": {"width": 16, "depth": 1},
                            "cnn_gap": {"width": 4, "depth": 1}},
                  "algorithm": {"adam": {"steps": 10}}},
    },
}


def doc(**search) -> dict:
    d = copy.deepcopy(STUDY)
    d["search"].update(search)
    return d


def stored(**aulc: float) -> dict:
    """Stored predictions with the given predicted aulc per ``model_algorithm``."""
    return {"records": [{"model": k.split("_", 1)[0], "algorithm": k.split("_", 1)[1],
                         "predicted_aulc": v} for k, v in aulc.items()]}


def test_pair_scores_far_behind_and_the_start_order():
    s = pair_scores(stored(fcn_ntk=-0.5, lcn_ntk=-1.0, gap_ntk=0.2),
                    ["fcn/adam", "fcn/ntk", "lcn/ntk+flip", "gap/sgd", "mlp/adam"])
    # own kernel's score; the architecture's best for other algorithms; none without kernel
    assert s == {"fcn/adam": -0.5, "fcn/ntk": -0.5, "lcn/ntk+flip": -1.0, "gap/sgd": 0.2,
                 "mlp/adam": None}
    assert far_behind(s, 0.25) == {"fcn/adam", "fcn/ntk", "gap/sgd"}
    assert far_behind(s, 0.6) == {"gap/sgd"}
    assert start_order(s, 0.25) == ["lcn/ntk+flip", "mlp/adam", "fcn/adam", "fcn/ntk",
                                    "gap/sgd"]
    # of equal scores, the pair scored by its own prediction (the kernel learner) first
    own = predicted_pairs(stored(fcn_ntk=-0.5, lcn_ntk=-1.0, gap_ntk=0.2))
    assert start_order(s, 0.25, own)[2:4] == ["fcn/ntk", "fcn/adam"]
    assert far_behind({"a/b": None}, 0.1) == set()


def _sampled_study(share: float, trials: int) -> optuna.Study:
    labels = ["good/x", "good/y", "bad/x", "bad/y"]
    prior = Prior(margin=0.25, share=share)
    study = optuna.create_study(sampler=PriorSampler(
        optuna.samplers.RandomSampler(seed=1), prior, labels, seed=3, session=0))
    study.set_user_attr(PREDICTIONS_ATTR, stored(good_x=-1.0, bad_x=0.0))
    study.optimize(lambda t: float(len(t.suggest_categorical(PAIR_PARAM, labels))),
                   n_trials=trials)
    return study


@pytest.mark.parametrize("share", [0.01, 0.1, 0.3])
def test_far_behind_pairs_keep_their_share_and_never_none(share):
    study = _sampled_study(share, 60)
    pairs = [t.params[PAIR_PARAM] for t in study.trials]
    far = [p for p in pairs if p.startswith("bad/")]
    # every far-behind pair once, and no more than the share (the one allowance each)
    assert {"bad/x", "bad/y"} <= set(far)
    assert len(far) <= max(2, math.floor(share * len(pairs)))
    # unconstrained, a uniform sampler gives them about half
    replaced = [t for t in study.trials if REPLACED_ATTR in t.user_attrs]
    assert replaced and all(t.params[PAIR_PARAM].startswith("good/") for t in replaced)


def test_a_study_starts_with_the_predicted_best_pairs(registry, tmp_path):
    spec = build_spec(doc(), registry, storage=f"sqlite:///{tmp_path}/s.db")
    assert spec.prior == Prior(pool=128)
    notes: list[str] = []
    study = run_study(spec, note=notes.append)
    preds = study.user_attrs[PREDICTIONS_ATTR]
    best = min(preds["records"], key=lambda r: r["predicted_aulc"])
    assert best["model"] == "cnn_gap"  # a cnn_gap teacher
    trials = sorted(study.trials, key=lambda t: t.number)
    scores = pair_scores(preds, [spec.pair_label(m, a) for m, a in spec.pairs])
    first = [t.params[PAIR_PARAM] for t in trials[:4]]
    assert first == start_order(scores, spec.prior.margin, predicted_pairs(preds))
    assert first[0] == "cnn_gap/ntk"
    assert [t.user_attrs[START_ATTR]["rank"] for t in trials[:4]] == [0, 1, 2, 3]
    far = far_behind(scores, spec.prior.margin)
    assert far == {"fcn/adam", "fcn/ntk"}
    assert sum(t.params[PAIR_PARAM] in far for t in trials) == 2  # the start's ones only
    assert any("theory prior: starting with cnn_gap" in n for n in notes)
    # a resumed study neither predicts again nor queues the start again
    again = run_study(build_spec(doc(n_trials=12), registry,
                                 storage=f"sqlite:///{tmp_path}/s.db"), note=notes.append)
    assert again.user_attrs[PREDICTIONS_ATTR] == preds
    assert sum(START_ATTR in t.user_attrs for t in again.trials) == 4
    assert len(again.trials) == 12


@pytest.mark.parametrize("prior, culprit, says", [
    ("bayes", "search.prior", "\"none\", \"theory\""),
    ({"name": "theory", "margin": 0}, "search.prior.margin", "positive"),
    ({"name": "theory", "share": 1.0}, "search.prior.share", "(0, 1)"),
    ({"name": "theory", "share": 0}, "search.prior.share", "never none"),
    ({"name": "theory", "pool": 1}, "search.prior.pool", ">= 2"),
    ({"name": "theory", "pool": 10**7}, "search.prior.pool", "more than the data"),
    ({"name": "theory", "marign": 0.1}, "search.prior.marign", "did you mean 'margin'"),
    ({"name": "none", "share": 0.2}, "search.prior", "need name = \"theory\""),
])
def test_bad_prior_options_are_refused_before_trial_0(registry, prior, culprit, says):
    d = doc(prior=prior)
    if "pool" in str(prior):
        d["data"] = {"name": "digits"}
        d["search"]["space"] = {}
    msg = one_problem(d, registry)
    assert msg.startswith(culprit) and says in msg, msg


def test_prior_needs_a_sampled_search_and_a_kernel(registry, test_registry):
    msg = one_problem(doc(sampler="brute_force", algorithms=["ntk"],
                          space={"algorithm": {"ntk": {"ridge": 0.01}}}), registry)
    assert msg.startswith("search.prior") and "nothing to order" in msg
    msg = one_problem(doc(models=["plain_mlp_test"], space={}), test_registry)
    assert "provides an analytic kernel" in msg and "fcn, lcn, cnn_vec, cnn_gap" in msg

