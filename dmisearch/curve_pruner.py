"""The curve pruner (``[search] pruner = "curve"``): a trial is stopped when its learning
curve, extrapolated from the sizes trained so far, is unlikely to change the study's
top-``k`` leaderboard.

At each prune point (``search.prune_after``) the objective stores the trial's partial curve
(per-seed test errors at the sizes trained so far) on the trial before asking the pruner.
The pruner:

1. fits the partial mean curve with a parametric family (:mod:`dmisearch.curve_fit`), on
   ``bootstrap`` resamplings of the seeds, and extrapolates each to the study's sizes;
2. scores every extrapolated curve with the study's own objective
   (:meth:`dmisearch.metrics.Objective.score`: aulc over the study's sizes, the error at
   the last size, or the samples to the target), giving the predicted score and its 5-95%
   interval;
3. with ``calibrate`` (the default), corrects them by how far the same extrapolation, from
   the same number of sizes, missed on the study's complete trials (:func:`residuals`:
   those of the trial's own triplet where it has ``SAME_TRIPLET`` of them, else all): the
   median miss shifts the prediction and every miss widens its spread
   (:func:`calibrated`), since a family misses in the same direction on curves of one
   shape;
4. compares them with the *reference*: the ``k``-th best triplet's best complete score,
   or the trial's own triplet's best complete score if lower (a trial matters only if it
   could enter the top ``k`` or improve its triplet's entry there); with fewer than ``k``
   triplets complete and none of its own, there is nothing to compare with;
5. prunes when the fraction of replicates that score at least as well as the reference is
   below ``threshold``.

A fit that fails (fewer than ``min_sizes`` sizes, fewer than two seeds, a non-finite
error) never prunes. Every verdict is stored on the trial (user attribute ``extrapolation``:
the predicted score, interval, predicted curve, probability, reference and the reason),
pruned or not; confirmation trials are never pruned. Everything the pruner reads is in the
study's storage (the study's identity, the trials' curves and values), so it behaves the
same across workers and resumed runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import optuna
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial, TrialState

from dmisearch.curve_fit import FAMILIES, FitError, evaluate, extrapolate, fit, quantiles
from dmisearch.evidence import curve_matrix
from dmisearch.metrics import Objective, floor_for
from dmisearch.seeding import derive_seed
from dmisearch.trialinfo import CONFIRMS_ATTR, IDENTITY_ATTR, is_search

#: Trial attribute holding the pruner's latest verdict.
ATTR = "extrapolation"
#: Complete trials of a triplet from which only they calibrate its extrapolations.
SAME_TRIPLET = 2
#: Fewest bootstrap replicates: below this the 5% tail is one or two replicates.
MIN_BOOTSTRAP = 20


class OptionError(ValueError):
    """A pruner option out of range; ``option`` names it (``search.pruner.<option>``)."""

    def __init__(self, option: str, message: str):
        super().__init__(message)
        self.option = option


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class CurvePruner(BasePruner):
    """Prunes a trial whose extrapolated learning curve is unlikely to reach the top ``k``.

    ``threshold``: prune when P(score at least as good as the reference) is below it, in
    (0, 1). ``k``: the leaderboard depth protected, at least 1. ``family``: ``pow3`` (power
    law with a floor) or ``exp3``. ``min_sizes``: sizes a fit needs, at least 2.
    ``bootstrap``: resamplings of the seeds, at least ``MIN_BOOTSTRAP``. ``calibrate``:
    correct the extrapolation by its misses on the study's complete trials.
    """

    def __init__(self, threshold: float = 0.05, k: int = 3, family: str = "pow3",
                 min_sizes: int = 2, bootstrap: int = 200, calibrate: bool = True):
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not (
                0 < threshold < 1):
            raise OptionError("threshold", f"must be a probability strictly between 0 and 1, "
                                           f"got {threshold!r} (e.g. threshold = 0.05)")
        if not _integer(k) or k < 1:
            raise OptionError("k", f"must be an integer of at least 1 (the leaderboard depth "
                                   f"kept safe), got {k!r} (e.g. k = 3)")
        if family not in FAMILIES:
            raise OptionError("family", f"unknown family {family!r}; known: "
                                        f"{', '.join(FAMILIES)} (e.g. family = \"pow3\")")
        if not _integer(min_sizes) or min_sizes < 2:
            raise OptionError("min_sizes", f"must be an integer of at least 2 (a curve "
                                           f"needs two sizes to fit), got {min_sizes!r}")
        if not _integer(bootstrap) or bootstrap < MIN_BOOTSTRAP:
            raise OptionError("bootstrap", f"must be an integer of at least {MIN_BOOTSTRAP} "
                                           f"(resamplings of the seeds), got {bootstrap!r} "
                                           "(e.g. bootstrap = 200)")
        if not isinstance(calibrate, bool):
            raise OptionError("calibrate", f"must be true or false, got {calibrate!r}")
        self.threshold, self.k, self.family = float(threshold), k, family
        self.min_sizes, self.bootstrap, self.calibrate = min_sizes, bootstrap, calibrate

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        verdict = self.judge(study, trial)
        study._storage.set_trial_user_attr(trial._trial_id, ATTR, verdict)
        return bool(verdict["pruned"])

    def judge(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        """The verdict on ``trial`` at its latest reported size (what ``prune`` stores)."""
        out: dict[str, Any] = {"n": trial.last_step, "family": self.family, "pruned": False}
        if CONFIRMS_ATTR in trial.user_attrs:
            return {**out, "reason": "confirmation trial: never pruned"}
        ident = study.user_attrs.get(IDENTITY_ATTR)
        if not ident:
            return {**out, "reason": "not pruned: the study has no dmisearch identity "
                                     "(curve sizes, objective) to extrapolate to"}
        try:
            point, reps, curve = self.predict(ident, trial.user_attrs, trial.number)
        except FitError as exc:
            return {**out, "reason": f"not pruned: fit failed: {exc}"}
        out["fit_score"], shift = point, np.zeros(0)  # before calibration
        if self.calibrate:
            shift = residuals(study, ident, self.family, len(curve["trained"]), _pair(trial))
            point, reps = calibrated(ident["objective"]["name"], point, reps, shift)
        low, high = quantiles(reps)
        out.update(score=point, low=low, high=high, curve=curve, k=self.k,
                   threshold=self.threshold, calibrated_on=len(shift))
        ref, against = reference(study, trial, self.k)
        if ref is None:
            return {**out, "reason": f"not pruned: {against}"}
        p = float(np.mean(reps <= ref))
        out.update(p_beats=p, reference=ref, against=against, pruned=p < self.threshold)
        how = "<" if out["pruned"] else ">="
        out["reason"] = (f"{'pruned' if out['pruned'] else 'not pruned'}: P(beats {against} "
                         f"{ref:.4g}) = {p:.3f} {how} {self.threshold:g}; predicted "
                         f"{point:.4g} [{low:.4g}, {high:.4g}] from {len(curve['trained'])} "
                         "sizes")
        return out

    def predict(self, ident: Mapping[str, Any], attrs: Mapping[str, Any], number: int
                ) -> tuple[float, np.ndarray, dict[str, Any]]:
        """(predicted score, replicate scores, predicted curve) of a trial's partial curve;
        raises FitError with the reason it cannot."""
        all_sizes = np.asarray(ident["curve"]["sizes"], float)
        obj = ident["objective"]
        objective = Objective(obj["name"], obj.get("target"))
        sizes, _, err = curve_matrix(dict(attrs))
        if len(sizes) < self.min_sizes:
            raise FitError(f"too few sizes ({len(sizes)} < min_sizes {self.min_sizes})")
        if list(sizes) != list(all_sizes[: len(sizes)]):
            raise FitError(f"the partial curve's sizes {[int(n) for n in sizes]} are not "
                           "the study's first sizes")
        baseline = float(attrs.get("baseline_error", math.nan))
        if not math.isfinite(baseline) or baseline <= 0:
            raise FitError(f"no usable baseline error ({baseline})")
        floor = floor_for(obj.get("metric", "mse"), int(ident["curve"]["test_size"]), baseline)
        ex = extrapolate(self.family, sizes, err, all_sizes, floor, self.bootstrap,
                         derive_seed("curve-pruner", number, len(sizes)))
        reps = np.array([objective.score(all_sizes, c, baseline, floor)
                         for c in ex.replicates])
        lo, hi = np.quantile(ex.replicates, [0.05, 0.95], axis=0)
        curve = {"size": [int(n) for n in all_sizes], "mean": ex.point.tolist(),
                 "low": lo.tolist(), "high": hi.tolist(),
                 "trained": [int(n) for n in sizes]}
        return objective.score(all_sizes, ex.point, baseline, floor), reps, curve


def _log_scale(objective: str) -> bool:
    """Whether residuals of this objective's scores are taken in log space (positive
    scores: an error, a number of samples) rather than as differences (aulc, in decades)."""
    return objective != "aulc"


def residuals(study: optuna.Study, ident: Mapping[str, Any], family: str, m: int,
              pair: tuple[Any, Any]) -> np.ndarray:
    """How far the extrapolation from ``m`` sizes missed on the study's complete search
    trials: measured minus predicted score (log ratio for a positive objective), one per
    trial with a full finite curve and a finite score; only those of the triplet ``pair``
    where it has ``SAME_TRIPLET`` of them."""
    all_sizes = np.asarray(ident["curve"]["sizes"], float)
    obj = ident["objective"]
    objective = Objective(obj["name"], obj.get("target"))
    log = _log_scale(objective.name)
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if not is_search(t) or t.value is None or not math.isfinite(t.value):
            continue
        sizes, _, err = curve_matrix(t.user_attrs)
        baseline = float(t.user_attrs.get("baseline_error", math.nan))
        if (list(sizes) != list(all_sizes) or not np.all(np.isfinite(err))
                or not baseline > 0):
            continue
        floor = floor_for(obj.get("metric", "mse"), int(ident["curve"]["test_size"]), baseline)
        mean = err.mean(axis=1)
        params = fit(family, all_sizes[:m], mean[None, :m], floor)
        full = np.maximum(evaluate(family, params, all_sizes)[0], floor)
        full[:m] = mean[:m]
        pred = objective.score(all_sizes, full, baseline, floor)
        if not math.isfinite(pred) or (log and not (pred > 0 and t.value > 0)):
            continue
        out.append((_pair(t), math.log(t.value / pred) if log else t.value - pred))
    own = [r for p, r in out if p == pair]
    return np.array(own if len(own) >= SAME_TRIPLET else [r for _, r in out])


def calibrated(objective: str, point: float, reps: np.ndarray, shift: np.ndarray
               ) -> tuple[float, np.ndarray]:
    """The predicted score moved by the median residual, and the replicates spread by
    every residual (each replicate plus each residual): seed noise and the family's misfit
    on this study together. Unchanged without residuals."""
    if len(shift) == 0:
        return point, reps
    if _log_scale(objective):
        with np.errstate(divide="ignore"):
            lp, lr = np.log(max(point, 0.0)), np.log(np.maximum(reps, 0.0))
        return float(np.exp(lp + np.median(shift))), np.exp(lr[:, None] + shift).ravel()
    return point + float(np.median(shift)), (reps[:, None] + shift).ravel()


def _pair(t: FrozenTrial) -> tuple[Any, Any]:
    return t.user_attrs.get("model"), t.user_attrs.get("algorithm")


def reference(study: optuna.Study, trial: FrozenTrial, k: int) -> tuple[float | None, str]:
    """(value to beat, what it is): the lower of the ``k``-th best triplet's best complete
    search score and the trial's own triplet's; (None, why) when there is neither."""
    best: dict[tuple[Any, Any], float] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.value is None or math.isnan(t.value) or not is_search(t):
            continue
        best[_pair(t)] = min(best.get(_pair(t), math.inf), float(t.value))
    own = best.get(_pair(trial))
    ranked = sorted(best.values())
    kth = ranked[k - 1] if len(ranked) >= k else None
    options = [(v, what) for v, what in ((kth, f"triplet #{k}"), (own, "its triplet's best"))
               if v is not None]
    if not options:
        return None, f"nothing to compare with yet ({len(ranked)} of k={k} triplets complete)"
    return min(options)


def trial_columns(attrs: Mapping[str, Any], state: TrialState) -> dict[str, Any]:
    """The curve pruner's columns of ``Results.trials()``: ``predicted_score`` with its
    5-95% interval ``predicted_low`` / ``predicted_high`` (the extrapolated full-curve
    score at the trial's last prune point), ``predicted`` (True where that is the only
    score: a pruned trial), ``prune_p`` (P(beats the reference)) and ``prune_verdict``."""
    v = attrs.get(ATTR)
    if not isinstance(v, dict):
        return {}
    return {"predicted_score": v.get("score", math.nan), "predicted_low": v.get("low", math.nan),
            "predicted_high": v.get("high", math.nan),
            "predicted": state == TrialState.PRUNED and "score" in v,
            "prune_p": v.get("p_beats", math.nan), "prune_verdict": v.get("reason")}


def with_predicted(board: Any, trials: Any) -> Any:
    """``board`` (a leaderboard) with ``predicted_score`` / ``predicted_trial``: the best
    predicted score of the triplet's pruned trials, where it is better than the measured
    ``score`` (or there is none); NaN elsewhere."""
    board = board.copy()
    board["predicted_score"], board["predicted_trial"] = math.nan, None
    if trials.empty or "predicted" not in trials:
        return board
    pruned = trials[trials["predicted"].eq(True)]
    for i, row in board.iterrows():
        mine = pruned[(pruned["study"] == row["study"]) & (pruned["model"] == row["model"])
                      & (pruned["algorithm"] == row["algorithm"])]
        if mine.empty:
            continue
        best = mine.loc[mine["predicted_score"].idxmin()]
        if not best["predicted_score"] >= row["score"]:  # better, or no measured score
            board.at[i, "predicted_score"] = best["predicted_score"]
            board.at[i, "predicted_trial"] = int(best["trial"])
    return board
