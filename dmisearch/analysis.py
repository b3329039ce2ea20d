"""Reading results back: trials and leaderboards as pandas DataFrames.

Works on any Optuna study written by dmisearch, running or finished, from any storage.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from dmisearch.objective import PAIR_PARAM

LEADERBOARD_COLUMNS = ["rank", "data", "model", "algorithm", "score", "trial", "complete",
                       "pruned", "failed", "curve", "params"]


def _mean_curve(attrs: dict[str, Any]) -> dict[int, float]:
    curve = attrs.get("curve") or {}
    sizes, errs = curve.get("size", []), curve.get("test_error", [])
    out: dict[int, list[float]] = {}
    for n, e in zip(sizes, errs, strict=False):
        out.setdefault(int(n), []).append(float(e))
    return {n: float(np.mean(v)) for n, v in out.items()}


def leaderboard(study: optuna.Study) -> pd.DataFrame:
    """The best trial of each triplet, best first.

    One row per (data, model, algorithm) tried: its best score, that trial's number, how
    many trials of the triplet completed, were pruned or failed, its mean test error per
    training size (``curve``) and its searched hyperparameters. Triplets with no complete
    trial (all pruned or failed) come last, with a NaN score.
    """
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for t in study.get_trials(deepcopy=False):
        model, algo = t.user_attrs.get("model"), t.user_attrs.get("algorithm")
        if model is None or algo is None:
            continue
        data = (t.user_attrs.get("data") or {}).get("label", "?")
        row = rows.setdefault((data, model, algo), {
            "data": data, "model": model, "algorithm": algo, "score": math.nan,
            "trial": None, "complete": 0, "pruned": 0, "failed": 0, "curve": {}, "params": {},
        })
        if t.state == TrialState.COMPLETE:
            row["complete"] += 1
            if t.value is not None and (row["trial"] is None or t.value < row["score"]):
                row.update(score=t.value, trial=t.number, curve=_mean_curve(t.user_attrs),
                           params={k: v for k, v in t.params.items() if k != PAIR_PARAM})
        elif t.state == TrialState.PRUNED:
            row["pruned"] += 1
        elif t.state == TrialState.FAIL:
            row["failed"] += 1
    ranked = sorted(rows.values(), key=lambda r: (r["trial"] is None, r["score"]))
    df = pd.DataFrame(ranked, columns=LEADERBOARD_COLUMNS[1:])
    ranks = [i + 1 if r["trial"] is not None else None for i, r in enumerate(ranked)]
    df.insert(0, "rank", pd.array(ranks, dtype="Int64"))
    df["trial"] = pd.array(list(df["trial"]), dtype="Int64")
    return df


def format_leaderboard(df: pd.DataFrame, objective: str) -> str:
    """A plain-text table of :func:`leaderboard` for terminals."""
    if df.empty:
        return "no complete trials yet"

    def fmt(v: Any) -> str:
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    def short_param(k: str) -> str:
        return k.split(".")[-1]

    table = pd.DataFrame({
        "#": [fmt(v) for v in df["rank"]],
        "triplet": df["data"] + " | " + df["model"] + " | " + df["algorithm"],
        objective: [fmt(v) for v in df["score"]],
        "trial": [fmt(v) for v in df["trial"]],
        "done/pruned/failed": [f"{c}/{p}/{f}" for c, p, f in
                               zip(df["complete"], df["pruned"], df["failed"], strict=True)],
        "test error by n": [" ".join(f"{n}:{e:.3g}" for n, e in c.items()) for c in df["curve"]],
        "hyperparameters": [" ".join(f"{short_param(k)}={fmt(v)}" for k, v in p.items())
                            for p in df["params"]],
    })
    return table.to_string(index=False)
