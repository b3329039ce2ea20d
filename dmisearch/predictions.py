"""Predicted learning curves stored on a study, read back beside the measured ones.

A study holds the kernel learners' predicted curves and spectra when it was run with
``[search] prior = "theory"`` or given them by ``dmisearch predict STUDY.toml --save``
(the study attribute :data:`~dmisearch.trialinfo.PREDICTIONS_ATTR`, written as
:func:`dmisearch.predict.stored_form` builds it). This module turns them into DataFrames
(:meth:`dmisearch.analysis.Results.predictions` and ``.spectra``), with the error the
study measured at each size beside each prediction.

What is compared: the prediction is the expected test MSE of kernel ridge regression
(``target`` "mse"), or for classification the MSE of one-hot kernel regression ("one-hot
mse"). The measured error is in the study's metric (``measured_metric``): for
classification usually the error rate, a different quantity from a one-hot MSE, so
compare only the ranking of the pairs then, not the numbers.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import FrozenTrial

from dmisearch.evidence import Scorer, Triplet, curve_matrix
from dmisearch.trialinfo import IDENTITY_ATTR, PREDICTIONS_ATTR

PREDICTION_COLUMNS = [
    "study", "data", "model", "algorithm", "size", "predicted_error", "predicted_aulc",
    "rank", "ridge", "pool", "modes_90", "baseline_error", "target", "measured_error",
    "measured_metric",
]
#: The columns read from each stored record (:meth:`dmisearch.predict.KernelPrediction.records`).
RECORD_KEYS = PREDICTION_COLUMNS[2:13]
SPECTRUM_COLUMNS = ["study", "model", "algorithm", "k", "eigenvalue", "cumulative_power",
                    "modes_90"]
#: What to do when there is nothing to show (plots and the report say it).
HOW_TO_PREDICT = ('run the study with [search] prior = "theory", or store them with '
                  "`dmisearch predict STUDY.toml --save`")


def stored(study: optuna.Study) -> dict[str, Any] | None:
    """The predictions a study stores, or None."""
    got = study.user_attrs.get(PREDICTIONS_ATTR)
    return got if isinstance(got, dict) and got.get("records") else None


def data_label(study: optuna.Study) -> str | None:
    """The study's data label, as its trials' triplets name it."""
    data = (study.user_attrs.get(IDENTITY_ATTR) or {}).get("data") or {}
    return data.get("label", data.get("name"))


def measured_metric(study: optuna.Study) -> str:
    """The metric the study measures its test error in (``mse``, ``error_rate``...)."""
    return Scorer.of(study).metric


def mean_curve(t: FrozenTrial) -> dict[int, float]:
    """A trial's stored test error at each size, averaged over its seeds."""
    sizes, _, err = curve_matrix(t.user_attrs)
    if not err.size:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a size no seed reached: NaN
        mean = np.nanmean(err, axis=1)
    return {int(n): float(e) for n, e in zip(sizes, mean, strict=True)}


def prediction_frame(studies: Iterable[optuna.Study],
                     best: Mapping[tuple[str, Triplet], FrozenTrial]) -> pd.DataFrame:
    """One row per (study, model, algorithm, size) of every stored prediction, with
    ``measured_error``: the mean over seeds of the test error at that size of ``best``'s
    trial of the same (study, model, algorithm) (the best complete search trial), NaN
    where there is none; ``measured_metric`` names the metric it is in."""
    rows = []
    for study in studies:
        got = stored(study)
        if got is None:
            continue
        label, metric = data_label(study), measured_metric(study)
        curves = {(trip[1], trip[2]): mean_curve(t) for (name, trip), t in best.items()
                  if name == study.study_name}
        for r in got["records"]:
            measured = curves.get((r["model"], r["algorithm"]), {})
            rows.append({
                "study": study.study_name, "data": label,
                **{k: r.get(k) for k in RECORD_KEYS},
                "target": r.get("target", got.get("target")),
                "measured_error": measured.get(int(r["size"]), math.nan),
                "measured_metric": metric})
    return pd.DataFrame(rows, columns=PREDICTION_COLUMNS)


def spectrum_frame(studies: Iterable[optuna.Study]) -> pd.DataFrame:
    """One row per (study, model, algorithm, k) of every stored spectrum summary: the
    kernel's ``eigenvalue`` at mode ``k`` (1-based, log-spaced modes) and the share of the
    target's power in the first ``k`` modes, ``cumulative_power`` C(k)."""
    rows = []
    for study in studies:
        for s in (stored(study) or {}).get("spectra", []):
            for k, ev, c in zip(s["k"], s["eigenvalue"], s["cumulative_power"], strict=True):
                rows.append({"study": study.study_name, "model": s["model"],
                             "algorithm": s["algorithm"], "k": k, "eigenvalue": ev,
                             "cumulative_power": c, "modes_90": s["modes_90"]})
    return pd.DataFrame(rows, columns=SPECTRUM_COLUMNS)
