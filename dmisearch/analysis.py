"""Reading studies back: tidy DataFrames, leaderboards with uncertainty, comparisons.

Works on any Optuna study written by dmisearch, from any storage: finished or still
running, with failed and pruned trials (shown as such), and with trials written by older
versions (every trial carries ``dmisearch_version`` and ``schema``; a missing attribute
reads as missing, never as an error)::

    from dmisearch.analysis import Results

    res = Results.load("studies/quickstart.toml")          # or names + storage, or Study
    res.curves()        # one row per (trial, size, seed)
    res.trials()        # one row per trial, with its scores
    res.leaderboard()   # each triplet's best configuration, confirmed, with intervals
    res.compare(("digits", "lcn", "adam"), ("digits", "fcn", "sgd"))

Uncertainty comes from the seeds (:mod:`dmisearch.stats`): a jackknife over seeds with
Student's t, whose coverage is measured by simulation (``benchmarks/bench_intervals.py``).
Trials of one study share their seeds (same data draws, initialisations and batch orders),
so two triplets measured on the same seeds are compared *paired*. What each interval
means, and when none is given, is in docs/analysis.md.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import FrozenTrial

from dmisearch import stats
from dmisearch.curve_pruner import trial_columns, with_predicted
from dmisearch.evidence import (
    Scorer,
    Triplet,
    TripletEvidence,
    curve_matrix,
    gather,
    trial_difference,
)
from dmisearch.predictions import prediction_frame, spectrum_frame
from dmisearch.trialinfo import (
    CONFIRMS_ATTR,
    DUPLICATE_ATTR,
    PAIR_PARAM,
    is_confirmation,
    is_search,
)

LEADERBOARD_COLUMNS = [
    "rank", "study", "data", "model", "algorithm",
    "score", "ci_low", "ci_high", "ci_note", "seeds",
    "confirmed_score", "confirmed_low", "confirmed_high", "confirmed_note",
    "confirmed_seeds", "confirmed_trial",
    "p_vs_next", "beats_next", "trial", "complete", "pruned", "failed", "first_error",
    "beta", "curve", "params",
]


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------


def _open(source: str | Path | optuna.Study, storage: str | None) -> optuna.Study:
    from dmisearch.errors import StudyNotFoundError
    from dmisearch.storage import default_storage, describe, open_storage, study_storage

    if isinstance(source, optuna.Study):
        return source
    path = Path(source)
    if path.suffix == ".toml":
        from dmisearch.study_file import read_toml

        st = read_toml(path).get("study", {})
        st = st if isinstance(st, dict) else {}
        name, written = st.get("name", path.stem), st.get("storage")
        if storage is None and written is not None and not isinstance(written, str):
            from dmisearch.errors import StudyFileError

            raise StudyFileError(str(path), [  # its value is not shown: it may hold secrets
                f"study.storage: must be a storage URL or path (a string), got a "
                f"{type(written).__name__}"])
        url = storage if storage is not None else study_storage(written, path)
    else:
        name, url = str(source), storage if storage is not None else default_storage()
    backend = open_storage(url)
    try:
        return optuna.load_study(study_name=name, storage=backend)
    except KeyError:
        known = [s.study_name for s in optuna.get_all_study_summaries(backend)]
        raise StudyNotFoundError(name, describe(url), known) from None


def fit_power_law(sizes: np.ndarray, err: np.ndarray) -> tuple[float, float, float]:
    """Least-squares fit of ``err ~ a n^-b + c`` in log space (a > 0, 0 <= b <= 5,
    0 <= c <= min err); NaNs with fewer than three sizes or when the fit fails."""
    from scipy.optimize import curve_fit

    ok = np.isfinite(err) & (err > 0)
    n, e = np.asarray(sizes, float)[ok], np.asarray(err, float)[ok]
    if len(n) < 3:
        return (math.nan,) * 3

    def model(x: np.ndarray, log_a: float, b: float, c: float) -> np.ndarray:
        return np.log(np.exp(log_a) * x ** -b + c)

    b0 = max(-np.polyfit(np.log(n), np.log(e), 1)[0], 1e-3)
    p0 = [math.log(e[0]) + b0 * math.log(n[0]), b0, 0.0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            (log_a, b, c), _ = curve_fit(model, n, np.log(e), p0=p0, maxfev=5000,
                                         bounds=([-50, 0, 0], [50, 5, e.min()]))
    except (RuntimeError, ValueError):
        return (math.nan,) * 3
    return float(math.exp(log_a)), float(b), float(c)



class Results:
    """One or several dmisearch studies, read for analysis."""

    def __init__(self, studies: Sequence[optuna.Study]):
        self.studies = list(studies)
        self._scorers = {s.study_name: Scorer.of(s) for s in self.studies}

    @classmethod
    def load(cls, *sources: str | Path | optuna.Study, storage: str | None = None) -> Results:
        """Studies by study file (``.toml``: its name and storage, the default journal beside
        it when it names none), by name (in ``storage``, default the embedded journal of the
        current folder), or as ``optuna.Study`` objects."""
        return cls([_open(s, storage) for s in sources])

    # -- raw trials -----------------------------------------------------------------------

    def _trials(self) -> Iterable[tuple[optuna.Study, FrozenTrial]]:
        for study in self.studies:
            for t in study.get_trials(deepcopy=False):
                yield study, t

    @staticmethod
    def _describe(study: optuna.Study, t: FrozenTrial) -> dict[str, Any]:
        a = t.user_attrs
        data = a.get("data") or {}
        row: dict[str, Any] = {
            "study": study.study_name, "trial": t.number, "state": t.state.name,
            "kind": ("confirmation" if is_confirmation(t) else "search" if is_search(t)
                     else "duplicate"),
            "data": data.get("label", data.get("name")),
            "transforms": "+".join(x.get("name", "?") for x in data.get("transforms", [])),
            "model": a.get("model"), "algorithm": a.get("algorithm"),
        }
        for prefix, key in (("model", "model_params"), ("algorithm", "algorithm_params")):
            for k, v in (a.get(key) or {}).items():
                row[f"{prefix}.{k}"] = v
        return row

    def curves(self) -> pd.DataFrame:
        """One row per (trial, size, seed): the triplet, ``kind`` (search or
        confirmation), every hyperparameter (``model.*``, ``algorithm.*`` columns),
        ``size``, ``seed``, ``test_error``, ``train_error``, ``seconds``, and the trial's
        state and dmisearch version. Reused duplicates have no curve of their own."""
        rows = []
        for study, t in self._trials():
            curve = t.user_attrs.get("curve") or {}
            if not curve.get("size"):
                continue
            base = {**self._describe(study, t), "metric": t.user_attrs.get("metric"),
                    "dmisearch_version": t.user_attrs.get("dmisearch_version")}
            n = len(curve["size"])
            for i in range(n):
                rows.append({**base, **{k: (curve.get(k) or [None] * n)[i] for k in (
                    "size", "seed", "test_error", "train_error", "seconds")}})
        df = pd.DataFrame(rows)
        if df.empty:
            return pd.DataFrame(columns=["study", "trial", "state", "kind", "data",
                                         "transforms", "model", "algorithm", "size", "seed",
                                         "test_error", "train_error", "seconds"])
        return df

    def trials(self) -> pd.DataFrame:
        """One row per trial: the triplet and hyperparameters, ``state``, ``kind``
        (``search``; ``duplicate``: a repeated proposal answered from ``duplicate_of``;
        ``confirmation``: a retrain on fresh seeds of trial ``confirms``), ``value`` (the
        optimised score), ``aulc``, ``final_error``, ``n_to_target`` (with its status),
        ``beta`` (least-squares slope), the power-law fit ``power_law_a/b/c`` of
        ``err ~ a n^-b + c``, local slopes ``slope_<n1>_<n2>`` between consecutive sizes,
        provenance (``device``, ``worker``, ``dmisearch_version``, ``schema``, errors), and
        under the curve pruner its extrapolated score (``predicted_score``, ``predicted``:
        True where a pruned trial has only that; :func:`~dmisearch.curve_pruner.trial_columns`)."""
        rows = []
        for study, t in self._trials():
            a = t.user_attrs
            scores = a.get("scores") or {}
            row = {**self._describe(study, t), "value": t.value,
                   DUPLICATE_ATTR: a.get(DUPLICATE_ATTR), CONFIRMS_ATTR: a.get(CONFIRMS_ATTR),
                   "aulc": scores.get("aulc"), "final_error": scores.get("final_error"),
                   "n_to_target": scores.get("n_to_target"),
                   "n_to_target_status": scores.get("n_to_target_status"),
                   "beta": scores.get("beta")}
            sizes, _, err = curve_matrix(a)
            if len(sizes):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    mean = np.nanmean(err, axis=1)
                pa, pb, pc = fit_power_law(sizes, mean)
                row.update(power_law_a=pa, power_law_b=pb, power_law_c=pc)
                for (n1, e1), (n2, e2) in zip(zip(sizes, mean, strict=True),
                                              zip(sizes[1:], mean[1:], strict=True),
                                              strict=False):
                    ok = 0 < e1 < math.inf and 0 < e2 < math.inf  # a diverged point: NaN
                    row[f"slope_{int(n1)}_{int(n2)}"] = (
                        -math.log(e2 / e1) / math.log(n2 / n1) if ok else math.nan)
            row.update(wall_time_s=a.get("wall_time_s"), device=a.get("device"),
                       worker=a.get("worker"), dmisearch_version=a.get("dmisearch_version"),
                       schema=a.get("schema", 0), error=a.get("error"),
                       pruned_reason=a.get("pruned_reason"), retry_of=a.get("retry_of"))
            rows.append({**row, **trial_columns(a, t.state)})
        return pd.DataFrame(rows)

    def predictions(self) -> pd.DataFrame:
        """The kernel learners' predicted curves the studies store (``dmisearch predict
        --save``, ``prior = "theory"``): one row per (study, model, algorithm, size), with
        ``measured_error``, the mean test error at that size of the pair's best complete
        search trial (NaN: none), in ``measured_metric``. A predicted one-hot MSE and a
        measured error rate are different quantities: compare their rankings only
        (:mod:`dmisearch.predictions`). Empty when no study stores predictions."""
        return prediction_frame(self.studies, self.best_trials())

    def spectra(self) -> pd.DataFrame:
        """The stored kernel spectra: eigenvalue and cumulative target power C(k) at
        log-spaced modes k, one row per (study, model, algorithm, k)."""
        return spectrum_frame(self.studies)

    # -- leaderboard and comparisons ------------------------------------------------------

    def evidence(self) -> dict[tuple[str, Triplet], TripletEvidence]:
        """Each (study, triplet)'s trials, grouped (see :mod:`dmisearch.evidence`)."""
        return gather(self._trials())

    def best_trials(self) -> dict[tuple[str, Triplet], FrozenTrial]:
        """The best complete search trial of each (study, triplet)."""
        return {k: ev.best for k, ev in self.evidence().items() if ev.best is not None}

    def interval(self, study: str, trial: FrozenTrial, *, confidence: float = 0.95
                 ) -> stats.Interval:
        """A stored trial's score with its interval over its seeds."""
        return self._scorers[study].interval(trial, confidence)

    def leaderboard(self, *, confidence: float = 0.95, predicted: bool = False
                    ) -> pd.DataFrame:
        """One row per triplet, best first.

        ``score`` is the triplet's best search score; ``ci_low`` / ``ci_high`` its
        ``confidence`` interval over the seeds, given only where that score was not picked
        among several configurations (else ``ci_note`` says "n/a: best of K", since the
        pick makes it optimistic) and from ``MIN_SEEDS`` seeds on (else "n/a: 2 seeds").
        ``confirmed_*`` is the same configuration retrained on fresh seeds by the study's
        confirmation stage, with its interval: where it exists, rows are ranked by it.
        ``p_vs_next`` is the two-sided p-value of "this row and the next score the same"
        (paired over seeds where both were measured on the same ones), and ``beats_next``
        whether that difference is significant at ``1 - confidence``; both are NaN where
        either row has no valid interval. ``complete`` / ``pruned`` / ``failed`` count
        distinct configurations (a configuration retried after a lost worker counts once;
        reused duplicates not at all); ``first_error`` is the first failure's message.
        ``predicted=True`` adds ``predicted_score`` / ``predicted_trial``: a pruned trial's
        extrapolated score where it beats the measured ``score`` (or there is none), never
        used for the ranking (:func:`~dmisearch.curve_pruner.with_predicted`).
        """
        rows = []
        for (study, triplet), ev in self.evidence().items():
            rows.append(self._row(study, triplet, ev, confidence))
        rows.sort(key=_rank_key)
        for i, r in enumerate(rows):
            r["rank"] = i + 1 if r["trial"] is not None else None
            nxt = rows[i + 1] if i + 1 < len(rows) else None
            r["p_vs_next"], r["beats_next"] = math.nan, None
            if nxt is not None and r["_basis"] and r["_basis"] == nxt["_basis"]:
                d = self._difference(r["_compared"], nxt["_compared"], confidence)
                if d.available:
                    r["p_vs_next"] = d.p_value
                    r["beats_next"] = bool(d.p_value < 1 - confidence)
        df = pd.DataFrame(rows, columns=LEADERBOARD_COLUMNS)
        for col in ("rank", "trial", "confirmed_trial", "seeds", "confirmed_seeds"):
            df[col] = pd.array(list(df[col]), dtype="Int64")
        df["beats_next"] = pd.array(list(df["beats_next"]), dtype="boolean")
        return with_predicted(df, self.trials()) if predicted else df

    def _row(self, study: str, triplet: Triplet, ev: TripletEvidence, confidence: float
             ) -> dict[str, Any]:
        data, model, algo = triplet
        row: dict[str, Any] = {
            "study": study, "data": data, "model": model, "algorithm": algo,
            "complete": ev.count("complete"), "pruned": ev.count("pruned"),
            "failed": ev.count("failed"),
            "first_error": ev.failures[0] if ev.failures else None,
            "trial": None, "score": math.nan, "ci_low": math.nan, "ci_high": math.nan,
            "ci_note": "", "seeds": None, "confirmed_score": math.nan,
            "confirmed_low": math.nan, "confirmed_high": math.nan, "confirmed_note": "",
            "confirmed_seeds": None, "confirmed_trial": None, "beta": math.nan, "curve": {},
            "params": {}, "_basis": None, "_compared": None,
        }
        t = ev.best
        if t is None:
            return row
        iv = self.interval(study, t, confidence=confidence)
        if iv.available and ev.configs > 1:
            iv = stats.no_interval(iv.estimate, iv.seeds, f"n/a: best of {ev.configs}")
        row.update(trial=t.number, score=t.value, ci_low=iv.low, ci_high=iv.high,
                   ci_note=iv.note, seeds=iv.seeds,
                   beta=(t.user_attrs.get("scores") or {}).get("beta", math.nan),
                   curve=_mean_curve(t.user_attrs),
                   params={k: v for k, v in t.params.items() if k != PAIR_PARAM})
        if iv.available:
            row["_basis"], row["_compared"] = "search", (study, t)
        c = ev.confirmed
        if c is not None:
            civ = self.interval(study, c, confidence=confidence)
            row.update(confirmed_score=c.value, confirmed_low=civ.low,
                       confirmed_high=civ.high, confirmed_note=civ.note,
                       confirmed_seeds=civ.seeds, confirmed_trial=c.number)
            row["_basis"], row["_compared"] = ("confirmed", (study, c)) if civ.available else (
                None, None)
        return row

    def _difference(self, a: tuple[str, FrozenTrial], b: tuple[str, FrozenTrial],
                    confidence: float) -> stats.Difference:
        (sa, ta), (sb, tb) = a, b
        return trial_difference(self._scorers[sa], ta, self._scorers[sb], tb, confidence)

    def compare(self, a: Triplet, b: Triplet, *, study: str | None = None,
                confidence: float = 0.95) -> Comparison:
        """Is triplet ``a`` more sample-efficient (lower score) than ``b``?

        Compares the confirmations of both triplets' best configurations when the study
        confirmed both (fresh seeds: no winner's curse), else their best search trials (and
        says so in ``note`` when a pick among several configurations makes that optimistic).
        Paired over seeds when both were measured on the same seeds, else Welch's unpaired
        form; ``p_value`` is two-sided."""
        evidence = self.evidence()

        def find(tr: Triplet) -> tuple[str, TripletEvidence]:
            hits = [(s, ev) for (s, trip), ev in evidence.items()
                    if trip == tuple(tr) and ev.best is not None
                    and (study is None or s == study)]
            if not hits:
                known = sorted({trip for (_, trip), ev in evidence.items()
                                if ev.best is not None})
                raise KeyError(f"no complete trial for triplet {tr!r}; known: {known}")
            return hits[0]

        (sa, ea), (sb, eb) = find(a), find(b)
        confirmed = ea.confirmed is not None and eb.confirmed is not None
        ta = ea.confirmed if confirmed else ea.best
        tb = eb.confirmed if confirmed else eb.best
        assert ta is not None and tb is not None
        d = self._difference((sa, ta), (sb, tb), confidence)
        picked = [f"{'/'.join(tr[1:])}: best of {ev.configs}" for tr, ev in ((a, ea), (b, eb))
                  if ev.configs > 1]
        note = d.note
        if not confirmed and picked:
            note = ("search scores picked among several configurations on the seeds that "
                    f"score them ({'; '.join(picked)}): optimistic, confirm them on fresh "
                    "seeds ([confirm] in the study file)")
        return Comparison(a=tuple(a), b=tuple(b), score_a=float(ta.value),  # type: ignore
                          score_b=float(tb.value), difference=d.estimate,  # type: ignore
                          ci_low=d.low, ci_high=d.high, p_value=d.p_value, paired=d.paired,
                          confirmed=confirmed, trial_a=ta.number, trial_b=tb.number,
                          seeds=min(self.interval(sa, ta).seeds, self.interval(sb, tb).seeds),
                          note=note, _difference=d)


def _rank_key(r: dict[str, Any]) -> tuple:
    if r["trial"] is None:
        return (2, 0.0)
    if not math.isnan(r["confirmed_score"]):
        return (0, r["confirmed_score"])
    return (1, r["score"])


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Triplet ``a`` against ``b``: scores (lower is better), their difference ``a - b``
    with an interval, and the two-sided p-value of "no difference"."""

    a: Triplet
    b: Triplet
    score_a: float
    score_b: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    paired: bool
    confirmed: bool = False  # scores from the confirmation stage (fresh seeds)
    trial_a: int | None = None
    trial_b: int | None = None
    seeds: int = 0
    note: str = ""  # why there is no interval, or why it is optimistic
    _difference: stats.Difference | None = dataclasses.field(default=None, repr=False)

    @property
    def verdict(self) -> str:
        if math.isnan(self.ci_low):
            return "no interval"
        if self.ci_high < 0:
            return "a is more sample-efficient"
        if self.ci_low > 0:
            return "b is more sample-efficient"
        return "no clear difference"

    def equivalence_p(self, margin: float) -> float:
        """p-value of "the two scores differ by less than ``margin``" (two one-sided
        tests); NaN where there is no interval."""
        return self._difference.equivalence_p(margin) if self._difference else math.nan

    def beyond_p(self, margin: float) -> float:
        """p-value of "the two scores differ by more than ``margin``"."""
        return self._difference.beyond_p(margin) if self._difference else math.nan

    def __str__(self) -> str:
        basis = "confirmed" if self.confirmed else "search"
        text = (f"{'/'.join(self.a)} vs {'/'.join(self.b)} ({basis} scores, "
                f"{'paired' if self.paired else 'unpaired'} over seeds): {self.score_a:.4g} vs "
                f"{self.score_b:.4g}, difference {self.difference:+.4g}")
        if not math.isnan(self.ci_low):
            text += (f" [{self.ci_low:+.4g}, {self.ci_high:+.4g}], p = {self.p_value:.3g}")
        text += f": {self.verdict}"
        return text + (f" ({self.note})" if self.note else "")


def _mean_curve(attrs: dict[str, Any]) -> dict[int, float]:
    sizes, _, err = curve_matrix(attrs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(err, axis=1) if err.size else []
    return {int(n): float(e) for n, e in zip(sizes, mean, strict=True)}


# --------------------------------------------------------------------------------------------
# the CLI's table
# --------------------------------------------------------------------------------------------


def leaderboard(study: optuna.Study, **kw: Any) -> pd.DataFrame:
    """``Results([study]).leaderboard(**kw)``."""
    return Results([study]).leaderboard(**kw)


def format_leaderboard(df: pd.DataFrame, objective: str) -> str:
    """A plain-text table of a leaderboard for terminals (:func:`dmisearch.board.render`)."""
    from dmisearch.board import render

    return render(df, objective)
