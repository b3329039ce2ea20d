"""Reading studies back: tidy DataFrames, leaderboards with uncertainty, comparisons.

Works on any Optuna study written by dmisearch, from any storage: finished or still
running, with failed and pruned trials (shown as such), and with trials written by older
versions (every trial carries ``dmisearch_version`` and ``schema``; a missing attribute
reads as missing, never as an error)::

    from dmisearch.analysis import Results

    res = Results.load("studies/quickstart.toml")          # or names + storage, or Study
    res.curves()        # one row per (trial, size, seed)
    res.trials()        # one row per trial, with its scores
    res.leaderboard()   # best configuration per triplet, bootstrap intervals over seeds
    res.compare(("digits", "lcn", "adam"), ("digits", "fcn", "sgd"))

Uncertainty comes from the seeds: a triplet's score is recomputed on curves averaged over
seeds resampled with replacement (percentile bootstrap). Trials of one study share their
seeds (same data draws, initialisations and batch orders), so two triplets of a study are
compared *paired*: the same resampled seeds for both.
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
from optuna.trial import TrialState

from dmisearch.metrics import Objective, floor_for
from dmisearch.objective import PAIR_PARAM
from dmisearch.runner import IDENTITY_ATTR

LEADERBOARD_COLUMNS = ["rank", "study", "data", "model", "algorithm", "score", "ci_low",
                       "ci_high", "p_better_than_next", "trial", "complete", "pruned",
                       "failed", "beta", "curve", "params"]

Triplet = tuple[str, str, str]  # (data label, model, algorithm)


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------


def _open(source: str | Path | optuna.Study, storage: str | None) -> optuna.Study:
    from dmisearch.storage import open_storage

    if isinstance(source, optuna.Study):
        return source
    path = Path(source)
    if path.suffix == ".toml":
        from dmisearch.study_file import read_toml

        doc = read_toml(path)
        st = doc.get("study", {})
        name = st.get("name", path.stem)
        url = storage if storage is not None else st.get("storage")
    else:
        name, url = str(source), storage
    from dmisearch.errors import DmisearchError
    from dmisearch.storage import describe

    try:
        return optuna.load_study(study_name=name, storage=open_storage(url))
    except KeyError:
        raise DmisearchError(f"no study '{name}' in {describe(url)}; pass its --storage"
                             ) from None


@dataclasses.dataclass(frozen=True)
class _Scorer:
    """Recomputes a study's scores from stored errors (objective, metric, floor)."""

    objective: Objective
    metric: str
    test_size: int

    @classmethod
    def of(cls, study: optuna.Study) -> _Scorer:
        ident = study.user_attrs.get(IDENTITY_ATTR, {})
        obj = ident.get("objective", {})
        return cls(Objective(obj.get("name", "aulc"), obj.get("target")),
                   obj.get("metric", "mse"), int(ident.get("curve", {}).get("test_size", 1)))

    def floor(self, baseline: float) -> float:
        return floor_for(self.metric, self.test_size, baseline)  # type: ignore[arg-type]

    def score(self, sizes: np.ndarray, mean: np.ndarray, baseline: float) -> float:
        return self.objective.score(sizes, mean, baseline, self.floor(baseline))


def _curve_matrix(attrs: dict[str, Any]) -> tuple[np.ndarray, list[int], np.ndarray]:
    """(sizes, seeds, errors[size, seed]) of a trial's stored curve; NaN where missing."""
    curve = attrs.get("curve") or {}
    sizes = sorted(set(curve.get("size", [])))
    seeds = sorted(set(curve.get("seed", [])))
    err = np.full((len(sizes), len(seeds)), np.nan)
    si = {n: i for i, n in enumerate(sizes)}
    ri = {s: j for j, s in enumerate(seeds)}
    for n, s, e in zip(curve.get("size", []), curve.get("seed", []),
                       curve.get("test_error", []), strict=False):
        err[si[n], ri[s]] = e
    return np.array(sizes, dtype=float), seeds, err


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
        self._scorers = {s.study_name: _Scorer.of(s) for s in self.studies}

    @classmethod
    def load(cls, *sources: str | Path | optuna.Study, storage: str | None = None) -> Results:
        """Studies by study file (``.toml``: its name and storage), by name (in ``storage``,
        default the embedded journal), or as ``optuna.Study`` objects."""
        return cls([_open(s, storage) for s in sources])

    # -- raw trials -----------------------------------------------------------------------

    def _trials(self) -> Iterable[tuple[optuna.Study, optuna.trial.FrozenTrial]]:
        for study in self.studies:
            for t in study.get_trials(deepcopy=False):
                yield study, t

    @staticmethod
    def _describe(study: optuna.Study, t: optuna.trial.FrozenTrial) -> dict[str, Any]:
        a = t.user_attrs
        data = a.get("data") or {}
        row: dict[str, Any] = {
            "study": study.study_name, "trial": t.number, "state": t.state.name,
            "data": data.get("label", data.get("name")),
            "transforms": "+".join(x.get("name", "?") for x in data.get("transforms", [])),
            "model": a.get("model"), "algorithm": a.get("algorithm"),
        }
        for prefix, key in (("model", "model_params"), ("algorithm", "algorithm_params")):
            for k, v in (a.get(key) or {}).items():
                row[f"{prefix}.{k}"] = v
        return row

    def curves(self) -> pd.DataFrame:
        """One row per (trial, size, seed): the triplet, every hyperparameter (``model.*``,
        ``algorithm.*`` columns), ``size``, ``seed``, ``test_error``, ``train_error``,
        ``seconds``, and the trial's state and dmisearch version."""
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
            return pd.DataFrame(columns=["study", "trial", "state", "data", "transforms",
                                         "model", "algorithm", "size", "seed", "test_error",
                                         "train_error", "seconds"])
        return df

    def trials(self) -> pd.DataFrame:
        """One row per trial: the triplet and hyperparameters, ``state``, ``value`` (the
        optimised score), ``aulc``, ``final_error``, ``n_to_target`` (with its status),
        ``beta`` (least-squares slope), the power-law fit ``power_law_a/b/c`` of
        ``err ~ a n^-b + c``, local slopes ``slope_<n1>_<n2>`` between consecutive sizes, and
        provenance (``device``, ``worker``, ``dmisearch_version``, ``schema``, errors)."""
        rows = []
        for study, t in self._trials():
            a = t.user_attrs
            scores = a.get("scores") or {}
            row = {**self._describe(study, t), "value": t.value,
                   "aulc": scores.get("aulc"), "final_error": scores.get("final_error"),
                   "n_to_target": scores.get("n_to_target"),
                   "n_to_target_status": scores.get("n_to_target_status"),
                   "beta": scores.get("beta")}
            sizes, _, err = _curve_matrix(a)
            if len(sizes):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    mean = np.nanmean(err, axis=1)
                pa, pb, pc = fit_power_law(sizes, mean)
                row.update(power_law_a=pa, power_law_b=pb, power_law_c=pc)
                for (n1, e1), (n2, e2) in zip(zip(sizes, mean, strict=True),
                                              zip(sizes[1:], mean[1:], strict=True),
                                              strict=False):
                    ok = e1 > 0 and e2 > 0
                    row[f"slope_{int(n1)}_{int(n2)}"] = (
                        -math.log(e2 / e1) / math.log(n2 / n1) if ok else math.nan)
            row.update(wall_time_s=a.get("wall_time_s"), device=a.get("device"),
                       worker=a.get("worker"), dmisearch_version=a.get("dmisearch_version"),
                       schema=a.get("schema", 0), error=a.get("error"),
                       pruned_reason=a.get("pruned_reason"), retry_of=a.get("retry_of"))
            rows.append(row)
        return pd.DataFrame(rows)

    # -- leaderboard and comparisons ------------------------------------------------------

    def best_trials(self) -> dict[tuple[str, Triplet], optuna.trial.FrozenTrial]:
        """The best complete trial of each (study, triplet)."""
        best: dict[tuple[str, Triplet], optuna.trial.FrozenTrial] = {}
        for study, t in self._trials():
            if t.state != TrialState.COMPLETE or t.value is None:
                continue
            key = (study.study_name, self._triplet(t))
            if key not in best or t.value < best[key].value:  # type: ignore[operator]
                best[key] = t
        return best

    @staticmethod
    def _triplet(t: optuna.trial.FrozenTrial) -> Triplet:
        a = t.user_attrs
        return ((a.get("data") or {}).get("label", "?"), a.get("model", "?"),
                a.get("algorithm", "?"))

    def bootstrap(self, study: str, trial: optuna.trial.FrozenTrial, idx: np.ndarray
                  ) -> np.ndarray:
        """The trial's score on curves averaged over resampled seeds ``idx`` (B, R)."""
        sizes, _, err = _curve_matrix(trial.user_attrs)
        scorer = self._scorers[study]
        base = float(trial.user_attrs.get("baseline_error", 1.0))
        means = err[:, idx].mean(axis=2).T  # (B, sizes)
        return np.array([scorer.score(sizes, m, base) for m in means])

    def _indices(self, n_seeds: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, n_seeds, size=(n_boot, n_seeds))

    def leaderboard(self, *, confidence: float = 0.95, n_boot: int = 1000,
                    seed: int = 0) -> pd.DataFrame:
        """The best configuration of each triplet, best first, with a ``confidence``
        percentile bootstrap interval (``ci_low``, ``ci_high``) of its score over seeds and
        ``p_better_than_next``, the bootstrap probability that it scores lower (better)
        than the next row (paired over seeds within a study). Triplets with no complete
        trial come last with a NaN score; ``complete`` / ``pruned`` / ``failed`` count
        every trial of the triplet."""
        counts: dict[tuple[str, Triplet], dict[str, int]] = {}
        for study, t in self._trials():
            if t.user_attrs.get("model") is None:
                continue
            c = counts.setdefault((study.study_name, self._triplet(t)),
                                  {"complete": 0, "pruned": 0, "failed": 0})
            state = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned",
                     TrialState.FAIL: "failed"}.get(t.state)
            if state:
                c[state] += 1
        best = self.best_trials()
        rng = np.random.default_rng(seed)
        boots: dict[tuple[str, Triplet], np.ndarray] = {}
        seed_idx: dict[str, np.ndarray] = {}
        for (study, triplet), t in best.items():
            _, seeds, _ = _curve_matrix(t.user_attrs)
            if study not in seed_idx:  # one resampling per study: paired comparisons
                seed_idx[study] = self._indices(len(seeds), n_boot, rng)
            boots[(study, triplet)] = self.bootstrap(study, t, seed_idx[study])
        alpha = (1 - confidence) / 2
        rows = []
        for key, c in counts.items():
            study, (data, model, algo) = key
            t = best.get(key)
            row: dict[str, Any] = {"study": study, "data": data, "model": model,
                                   "algorithm": algo, **c, "trial": None, "score": math.nan,
                                   "ci_low": math.nan, "ci_high": math.nan, "beta": math.nan,
                                   "curve": {}, "params": {}}
            if t is not None:
                b = boots[key]
                finite = b[np.isfinite(b)]
                row.update(trial=t.number, score=t.value,
                           ci_low=float(np.quantile(b, alpha)) if len(finite) else math.nan,
                           ci_high=float(np.quantile(b, 1 - alpha)) if len(finite) else (
                               math.nan),
                           beta=(t.user_attrs.get("scores") or {}).get("beta", math.nan),
                           curve=_mean_curve(t.user_attrs),
                           params={k: v for k, v in t.params.items() if k != PAIR_PARAM})
            rows.append(row)
        rows.sort(key=lambda r: (r["trial"] is None, r["score"]))
        for i, r in enumerate(rows):
            r["rank"] = i + 1 if r["trial"] is not None else None
            nxt = rows[i + 1] if i + 1 < len(rows) else None
            r["p_better_than_next"] = math.nan
            if r["trial"] is not None and nxt is not None and nxt["trial"] is not None:
                a = boots[(r["study"], (r["data"], r["model"], r["algorithm"]))]
                b = boots[(nxt["study"], (nxt["data"], nxt["model"], nxt["algorithm"]))]
                if r["study"] != nxt["study"]:
                    b = rng.permutation(b)  # independent studies: unpaired
                r["p_better_than_next"] = _p_lower(a, b)
        df = pd.DataFrame(rows, columns=LEADERBOARD_COLUMNS)
        df["rank"] = pd.array(list(df["rank"]), dtype="Int64")
        df["trial"] = pd.array(list(df["trial"]), dtype="Int64")
        return df

    def compare(self, a: Triplet, b: Triplet, *, study: str | None = None,
                n_boot: int = 2000, confidence: float = 0.95, seed: int = 0) -> Comparison:
        """Is triplet ``a`` more sample-efficient (lower score) than ``b``? Bootstrap over
        seeds, paired when both come from the same study."""
        best = self.best_trials()

        def find(tr: Triplet) -> tuple[str, optuna.trial.FrozenTrial]:
            hits = [(s, t) for (s, trip), t in best.items()
                    if trip == tuple(tr) and (study is None or s == study)]
            if not hits:
                known = sorted({trip for _, trip in best})
                raise KeyError(f"no complete trial for triplet {tr!r}; known: {known}")
            return hits[0]

        (sa, ta), (sb, tb) = find(a), find(b)
        rng = np.random.default_rng(seed)
        _, seeds_a, _ = _curve_matrix(ta.user_attrs)
        _, seeds_b, _ = _curve_matrix(tb.user_attrs)
        paired = sa == sb and seeds_a == seeds_b
        ia = self._indices(len(seeds_a), n_boot, rng)
        ib = ia if paired else self._indices(len(seeds_b), n_boot, rng)
        diff = self.bootstrap(sa, ta, ia) - self.bootstrap(sb, tb, ib)
        alpha = (1 - confidence) / 2
        return Comparison(a=tuple(a), b=tuple(b), score_a=float(ta.value),  # type: ignore
                          score_b=float(tb.value),  # type: ignore[arg-type]
                          difference=float(ta.value - tb.value),  # type: ignore[operator]
                          ci_low=float(np.quantile(diff, alpha)),
                          ci_high=float(np.quantile(diff, 1 - alpha)),
                          p_a_better=_p_lower(diff, np.zeros_like(diff)), paired=paired)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Triplet ``a`` against ``b``: scores (lower is better), their difference ``a - b``
    with a bootstrap interval, and the bootstrap probability that ``a`` is better."""

    a: Triplet
    b: Triplet
    score_a: float
    score_b: float
    difference: float
    ci_low: float
    ci_high: float
    p_a_better: float
    paired: bool

    @property
    def verdict(self) -> str:
        if self.ci_high < 0:
            return "a is more sample-efficient"
        if self.ci_low > 0:
            return "b is more sample-efficient"
        return "no clear difference"

    def __str__(self) -> str:
        return (f"{'/'.join(self.a)} vs {'/'.join(self.b)}: {self.score_a:.4g} vs "
                f"{self.score_b:.4g}, difference {self.difference:+.4g} "
                f"[{self.ci_low:+.4g}, {self.ci_high:+.4g}], P(a better) = "
                f"{self.p_a_better:.2f} ({'paired' if self.paired else 'unpaired'}): "
                f"{self.verdict}")


def _p_lower(a: np.ndarray, b: np.ndarray) -> float:
    """P(a < b) over bootstrap replicates, ties counting half."""
    return float(np.mean((a < b) + 0.5 * (a == b)))


def _mean_curve(attrs: dict[str, Any]) -> dict[int, float]:
    sizes, _, err = _curve_matrix(attrs)
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
    """A plain-text table of a leaderboard for terminals."""
    if df.empty:
        return "no complete trials yet"

    def fmt(v: Any) -> str:
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    table = pd.DataFrame({
        "#": [fmt(v) for v in df["rank"]],
        "triplet": df["data"] + " | " + df["model"] + " | " + df["algorithm"],
        objective: [fmt(v) for v in df["score"]],
        "95% CI": ["-" if math.isnan(lo) else f"[{lo:.3g}, {hi:.3g}]"
                   for lo, hi in zip(df["ci_low"], df["ci_high"], strict=True)],
        "trial": [fmt(v) for v in df["trial"]],
        "done/pruned/failed": [f"{c}/{p}/{f}" for c, p, f in
                               zip(df["complete"], df["pruned"], df["failed"], strict=True)],
        "test error by n": [" ".join(f"{n}:{e:.3g}" for n, e in c.items()) for c in df["curve"]],
        "hyperparameters": [" ".join(f"{k.split('.')[-1]}={fmt(v)}" for k, v in p.items())
                            for p in df["params"]],
    })
    return table.to_string(index=False)
