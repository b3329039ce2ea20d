"""The theory prior (``[search] prior = "theory"``): predictions steer the search from trial 0.

Before the first trial, the kernel learners' learning curves are predicted from the kernels'
spectra on the study's own data (:mod:`dmisearch.predict`) and stored on the study. Each pair
then gets a *predicted score*: the predicted aulc of its own kernel learner where it is one
(``fcn/ntk``), else the best predicted aulc of its architecture (``fcn/adam`` gets fcn's: the
infinite-width limit as a prior for the finite networks); pairs whose architecture has no
analytic kernel get none. With it:

* **the start**: one trial of every pair is queued before the sampler's own proposals, in
  the order of the predicted score (best first, unscored pairs after the scored ones that
  are not far behind, the far-behind ones last), so the predicted-best pairs train first
  and every pair trains at least once;
* **the share**: a pair whose predicted score is more than ``margin`` worse than the best
  is *far behind*; after the start, the sampler's proposal of a far-behind pair is replaced
  by one of the other pairs (drawn at random) whenever far-behind pairs already hold
  ``share`` of the study's search trials. They keep a smaller share, never none.

The hyperparameters of every trial, queued or not, are the sampler's. docs/study-files.md
("Theory prior") has the options; docs/theory.md what the predictions are and where they
fail.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from dmisearch.coordination import trial_handle
from dmisearch.seeding import derive_seed
from dmisearch.trialinfo import PAIR_PARAM, PREDICTIONS_ATTR, is_search

#: Trial attribute of the start's queued trials: the pair and its place in the start.
START_ATTR = "prior_start"
#: Trials that count towards the shares: those that train or trained (failures do not).
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
#: Trial attribute of a trial whose sampled far-behind pair the share replaced.
REPLACED_ATTR = "prior_replaced"


@dataclasses.dataclass(frozen=True)
class Prior:
    """``[search] prior``: the theory prior's options."""

    margin: float = 0.25  # aulc by which a pair's predicted score trails the best: far behind
    share: float = 0.1  # the most of the search's trials far-behind pairs get after the start
    pool: int | None = None  # inputs whose spectra are estimated (None: predict's default)


def pair_scores(stored: Mapping[str, Any], labels: Sequence[str]) -> dict[str, float | None]:
    """Each pair's predicted score (lower is better; None: its architecture has no kernel)
    from a study's stored predictions."""
    own: dict[tuple[str, str], float] = {}
    for r in stored.get("records", []):
        own[(r["model"], r["algorithm"])] = float(r["predicted_aulc"])
    by_model: dict[str, float] = {}
    for (model, _), score in own.items():
        by_model[model] = min(score, by_model.get(model, math.inf))
    out: dict[str, float | None] = {}
    for label in labels:
        model, algo = label.split("/", 1)
        algo = algo.split("+", 1)[0]  # an augmented kernel learner: its plain kernel's score
        out[label] = own.get((model, algo), by_model.get(model))
    return out


def far_behind(scores: Mapping[str, float | None], margin: float) -> set[str]:
    """The pairs whose predicted score is more than ``margin`` worse than the best."""
    known = [s for s in scores.values() if s is not None]
    if not known:
        return set()
    best = min(known)
    return {p for p, s in scores.items() if s is not None and s > best + margin}


def predicted_pairs(stored: Mapping[str, Any]) -> set[str]:
    """The pairs whose score is their own prediction (the kernel learners)."""
    return {f"{r['model']}/{r['algorithm']}" for r in stored.get("records", [])}


def start_order(scores: Mapping[str, float | None], margin: float,
                own: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """The start's pairs: the scored ones not far behind (best first), the unscored ones,
    then the far-behind ones (best first). Of pairs with the same score, those in ``own``
    (scored by their own prediction, not their architecture's) go first."""
    far = far_behind(scores, margin)

    def key(p: str) -> tuple:
        return scores[p], p.split("+", 1)[0] not in own, p

    scored = sorted((p for p, s in scores.items() if s is not None and p not in far), key=key)
    unscored = [p for p, s in scores.items() if s is None]
    return scored + unscored + sorted(far, key=key)


def stored_predictions(study: optuna.Study) -> dict[str, Any] | None:
    return study.user_attrs.get(PREDICTIONS_ATTR)


def start(study: optuna.Study, spec: Any, predict_fn: Callable[[], dict[str, Any]],
          say: Callable[[str], None]) -> list[str]:
    """Store the predictions on the study (once: a study that has them keeps them) and queue
    the start's trials for the pairs that have none yet; returns the queued pairs. Called
    under the study lock, so that one worker of a new study does it and the others find it
    done."""
    stored = stored_predictions(study)
    if stored is None:
        stored = predict_fn()
        study.set_user_attr(PREDICTIONS_ATTR, stored)
    labels = [spec.pair_label(m, a) for m, a in spec.pairs]
    scores = pair_scores(stored, labels)
    trials = study.get_trials(deepcopy=False)
    tried = {t.params[PAIR_PARAM] for t in trials if is_search(t) and PAIR_PARAM in t.params}
    tried |= {t.user_attrs[START_ATTR]["pair"] for t in trials if START_ATTR in t.user_attrs}
    order = [p for p in start_order(scores, spec.prior.margin, predicted_pairs(stored))
             if p not in tried]
    if spec.n_trials is not None:  # no queued trial the budget would leave waiting
        done = sum(t.state in COUNTED for t in trials if is_search(t))
        order = order[:max(0, spec.n_trials - done)]
    for rank, label in enumerate(order):
        study.enqueue_trial({PAIR_PARAM: label}, user_attrs={START_ATTR: {"pair": label,
                                                                          "rank": rank}})
    if order:
        far = far_behind(scores, spec.prior.margin)
        say(f"theory prior: starting with {', '.join(order[:4])}"
            f"{', ...' if len(order) > 4 else ''}; predicted far behind, so held to "
            f"{spec.prior.share:.0%} of the search's trials: "
            f"{', '.join(sorted(far)) or 'none'}")
    return order


class PriorSampler(BaseSampler):
    """A sampler whose proposals of far-behind pairs are capped at the prior's share.

    Delegates everything to ``inner``; only the ``pair`` parameter's value can change: a
    far-behind pair proposed when far-behind pairs already hold ``share`` of the search's
    trials (counting this one) becomes one of the other pairs, drawn from a stream seeded by
    the study seed, the session and the trial number.
    """

    def __init__(self, inner: BaseSampler, prior: Prior, labels: Sequence[str],
                 seed: int | None, session: int):
        self.inner = inner
        self.prior = prior
        self.labels = list(labels)
        self.seed = 0 if seed is None else seed
        self.session = session
        self._far: set[str] | None = None

    def _far_pairs(self, study: optuna.Study) -> set[str]:
        if self._far is None:
            stored = stored_predictions(study)
            if stored is None:
                return set()  # not yet predicted: no cap
            self._far = far_behind(pair_scores(stored, self.labels), self.prior.margin)
        return self._far

    def _steer(self, study: optuna.Study, trial: FrozenTrial, pair: Any) -> Any:
        far = self._far_pairs(study)
        if pair not in far:
            return pair
        pairs = [t.params[PAIR_PARAM] for t in study.get_trials(deepcopy=False, states=COUNTED)
                 if is_search(t) and t.number != trial.number and PAIR_PARAM in t.params]
        held = sum(p in far for p in pairs)
        if pair not in pairs or held + 1 <= self.prior.share * (len(pairs) + 1):
            return pair
        rng = random.Random(derive_seed("prior", self.seed, self.session, trial.number))
        choice = rng.choice([p for p in self.labels if p not in far])
        storage, trial_id = trial_handle(study, trial)  # a trial being asked: no Trial yet
        storage.set_trial_user_attr(trial_id, REPLACED_ATTR, pair)
        return choice

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial
                                    ) -> dict[str, BaseDistribution]:
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        params = self.inner.sample_relative(study, trial, search_space)
        if PAIR_PARAM in params:
            params = {**params, PAIR_PARAM: self._steer(study, trial, params[PAIR_PARAM])}
        return params

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        value = self.inner.sample_independent(study, trial, param_name, param_distribution)
        return self._steer(study, trial, value) if param_name == PAIR_PARAM else value

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()
