"""Predicted learning curves stored on a study (``dmisearch predict --save``) read back:
``Results.predictions()`` / ``.spectra()``, the figures, the report."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import re

import numpy as np
import optuna
import pytest
from conftest import dump_toml
from optuna.trial import TrialState

from dmisearch import plots
from dmisearch.analysis import Results
from dmisearch.cli import main
from dmisearch.errors import DmisearchError
from dmisearch.predictions import PREDICTION_COLUMNS, RECORD_KEYS, SPECTRUM_COLUMNS
from dmisearch.report import write_report
from dmisearch.runner import run_study
from dmisearch.study_file import build_spec
from dmisearch.trialinfo import IDENTITY_ATTR, PREDICTIONS_ATTR, is_search

pytestmark = pytest.mark.usefixtures("one_thread")

STUDY = {
    "study": {"name": "predicted", "device": "cpu"},
    "data": {"name": "teacher", "family": "cnn_gap", "shape": [1, 8], "width": 8},
    "curve": {"sizes": [16, 32, 64], "seeds": 2, "test_size": 64},
    "search": {"models": ["fcn", "cnn_gap"], "algorithms": ["ntk"], "n_trials": 6,
               "sampler": "random", "seed": 1, "pruner": "none",
               "space": {"model": {"fcn": {"width": 16, "depth": 1},
                                   "cnn_gap": {"width": 4, "depth": 1}},
                         "algorithm": {"ntk": {"ridge": {"low": 1e-6, "high": 0.1,
                                                         "log": True}}}}},
}
POOL = "128"


def cli(*argv: str) -> tuple[int, str, str]:
    """``dmisearch ARGV`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def write_study(folder, doc) -> str:
    path = folder / f"{doc['study']['name']}.toml"
    path.write_text(dump_toml(doc))
    return str(path)


@pytest.fixture(scope="module")
def saved(registry, tmp_path_factory):
    """A tiny study run, then its predictions printed (--json) and saved (--save)."""
    tmp = tmp_path_factory.mktemp("predictions")
    doc = copy.deepcopy(STUDY)
    doc["study"]["storage"] = f"journal:{tmp / 'journal.log'}"
    path = write_study(tmp, doc)
    run_study(build_spec(doc, registry, source=path))
    code, out, _ = cli("predict", path, "--pool", POOL, "--json")
    assert code == 0
    code, _, said = cli("predict", path, "--pool", POOL, "--save")
    assert code == 0, said
    return path, [json.loads(line) for line in out.splitlines()], said, tmp


def copy_of(study: optuna.Study, *, predictions: bool = True, keep=lambda t: True,
            **attrs) -> optuna.Study:
    """The study in memory, with its trials that ``keep`` accepts and ``attrs`` changed."""
    new = optuna.create_study(study_name=study.study_name)
    for k, v in {**study.user_attrs, **attrs}.items():
        if k != PREDICTIONS_ATTR or predictions:
            new.set_user_attr(k, v)
    new.add_trials([t for t in study.trials if keep(t)])
    return new


def test_save_stores_what_predict_json_prints(saved):
    path, records, said, tmp = saved
    df = Results.load(path).predictions()
    assert list(df.columns) == PREDICTION_COLUMNS
    assert len(df) == len(records) == 2 * 3  # (fcn, cnn_gap) x 3 sizes
    for r, (_, row) in zip(records, df.iterrows(), strict=True):
        for key in RECORD_KEYS:
            if r[key] is None:  # a size beyond a quarter of the pool: null, NaN in the frame
                assert key == "predicted_error" and math.isnan(row[key]) and r["size"] > 32
                continue
            assert row[key] == (pytest.approx(r[key], rel=1e-12) if isinstance(r[key], float)
                                else r[key]), key
    assert set(df["study"]) == {"predicted"} and set(df["data"]) == {"teacher"}
    assert set(df["target"]) == {"mse"} and set(df["pool"]) == {int(POOL)}
    assert "saved the predictions of 2" in said and "'predicted'" in said
    assert str(tmp / "journal.log") in said and PREDICTIONS_ATTR in said
    spectra = Results.load(path).spectra()
    assert list(spectra.columns) == SPECTRUM_COLUMNS
    assert set(zip(spectra["model"], spectra["algorithm"], strict=True)) == {
        ("fcn", "ntk"), ("cnn_gap", "ntk")}
    assert (spectra["cumulative_power"].between(0, 1 + 1e-9)).all()
    modes = {(r["model"], r["algorithm"]): r["modes_90"] for r in records}
    for (m, a), g in spectra.groupby(["model", "algorithm"]):
        assert set(g["modes_90"]) == {modes[(m, a)]}


def best_mean(study: optuna.Study, model: str, algorithm: str, size: int) -> float:
    """The stored test errors at ``size`` of the pair's best complete search trial,
    averaged over its seeds, recomputed here from the raw attributes."""
    done = [t for t in study.trials if t.state == TrialState.COMPLETE and is_search(t)
            and t.user_attrs["model"] == model and t.user_attrs["algorithm"] == algorithm]
    best = min(done, key=lambda t: t.value)
    curve = best.user_attrs["curve"]
    return float(np.mean([e for n, e in zip(curve["size"], curve["test_error"], strict=True)
                          if n == size]))


def test_measured_error_is_the_best_trials_mean_curve(saved):
    path = saved[0]
    res = Results.load(path)
    (study,) = res.studies
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    for pair in ("fcn", "cnn_gap"):  # "best" must pick: each pair has several trials
        values = {t.value for t in complete if t.user_attrs["model"] == pair}
        assert len(values) >= 2, pair
    df = res.predictions()
    assert set(df["measured_metric"]) == {"mse"}
    for _, row in df.iterrows():
        assert row["measured_error"] == pytest.approx(
            best_mean(study, row["model"], row["algorithm"], row["size"]), rel=1e-12)
    # a pair with no complete trial: NaN, the prediction still there
    fcn_only = Results([copy_of(study, keep=lambda t: t.user_attrs.get("model") == "fcn")])
    df = fcn_only.predictions()
    assert len(df) == 6
    assert df[df["model"] == "cnn_gap"]["measured_error"].isna().all()
    assert df[df["model"] == "fcn"]["measured_error"].notna().all()


def test_the_figures_show_each_pairs_predicted_and_measured_curves(saved):
    res = Results.load(saved[0])
    df = res.predictions()
    fig = plots.predicted_vs_measured(res)
    (ax,) = fig.axes
    lines = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
    assert len(lines) == 4 and "mse" in ax.get_ylabel()
    assert ax.get_xscale() == ax.get_yscale() == "log"
    for (m, a), g in df.groupby(["model", "algorithm"]):
        pred, meas = lines[f"{m} / {a}, predicted"], lines[f"{m} / {a}, measured"]
        assert pred.get_linestyle() == "--" and meas.get_linestyle() == "-"
        assert pred.get_color() == meas.get_color()
        g = g.sort_values("size")
        assert list(pred.get_ydata()) == pytest.approx(list(g["predicted_error"]), nan_ok=True)
        assert list(meas.get_ydata()) == pytest.approx(list(g["measured_error"]))
    colors = {lines[f"{m} / ntk, predicted"].get_color() for m in ("fcn", "cnn_gap")}
    assert len(colors) == 2

    fig = plots.spectra(res)
    ev_ax, c_ax = fig.axes
    assert ev_ax.get_xscale() == ev_ax.get_yscale() == "log" and c_ax.get_xscale() == "log"
    spectra = res.spectra()
    for ax, col in ((ev_ax, "eigenvalue"), (c_ax, "cumulative_power")):
        labelled = [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]
        assert sorted(ln.get_label() for ln in labelled) == ["cnn_gap / ntk", "fcn / ntk"]
        for ln in labelled:
            g = spectra[spectra["model"] == ln.get_label().split(" / ")[0]]
            assert list(ln.get_ydata()) == pytest.approx(list(g[col]))
    dots = [ln for ln in c_ax.get_lines() if ln.get_marker() == "o"]
    assert sorted(float(d.get_xdata()[0]) for d in dots) == sorted(
        float(v) for v in spectra.drop_duplicates("model")["modes_90"])


def test_a_prediction_in_another_quantity_than_the_metric_gets_its_own_panel(saved):
    """Classification: a predicted one-hot MSE and a measured error rate are not drawn
    on one axis."""
    (study,) = Results.load(saved[0]).studies
    stored = copy.deepcopy(study.user_attrs[PREDICTIONS_ATTR])
    for r in stored["records"]:
        r["target"] = "one-hot mse"
    ident = copy.deepcopy(study.user_attrs[IDENTITY_ATTR])
    ident["objective"]["metric"] = "error_rate"
    res = Results([copy_of(study, **{PREDICTIONS_ATTR: stored, IDENTITY_ATTR: ident})])
    assert set(res.predictions()["measured_metric"]) == {"error_rate"}
    predicted, measured = plots.predicted_vs_measured(res).axes
    assert "one-hot mse" in predicted.get_ylabel() and "error rate" in measured.get_ylabel()
    for ax, kind in ((predicted, "predicted"), (measured, "measured")):
        labels = [ln.get_label() for ln in ax.get_lines()]
        assert len(labels) == 2 and all(lb.endswith(kind) for lb in labels)


def test_the_report_has_a_predicted_curves_section_when_the_study_stores_them(saved, tmp_path):
    (study,) = Results.load(saved[0]).studies
    page = write_report(Results([study]), tmp_path / "with").read_text()
    section = page[page.index('<h2 id="predictions">'):page.index('<h2 id="failures">')]
    assert re.findall(r'<div id="(fig-[a-z-]+)" class="plotly-graph-div"', section) == [
        "fig-predicted", "fig-spectra"]
    assert "modes 90%" in section and "predicted aulc" in section
    assert section.count("<td>fcn</td>") == 1 and section.count("<td>cnn_gap</td>") == 1
    assert (tmp_path / "with" / "predictions.csv").exists()
    plain = write_report(Results([copy_of(study, predictions=False)]), tmp_path / "without")
    assert "Predicted learning curves" not in plain.read_text()
    assert not (tmp_path / "without" / "predictions.csv").exists()


def test_without_predictions_frames_are_empty_and_figures_say_how_to_get_them(saved):
    (study,) = Results.load(saved[0]).studies
    res = Results([copy_of(study, predictions=False)])
    assert res.predictions().empty and list(res.predictions().columns) == PREDICTION_COLUMNS
    assert res.spectra().empty and list(res.spectra().columns) == SPECTRUM_COLUMNS
    for figure in (plots.predicted_vs_measured, plots.spectra):
        with pytest.raises(DmisearchError, match=r'prior = "theory".*predict STUDY.toml --save'):
            figure(res)
        with pytest.raises(DmisearchError, match="study 'elsewhere' stores no"):
            figure(Results([study]), study="elsewhere")


def test_save_creates_a_study_that_run_then_runs_and_refuses_a_changed_file(registry,
                                                                            tmp_path):
    doc = copy.deepcopy(STUDY)
    doc["study"]["name"] = "fresh"
    doc["search"].update(models=["fcn"], n_trials=2)
    del doc["search"]["space"]["model"]["cnn_gap"]
    path = write_study(tmp_path, doc)
    storage = f"journal:{tmp_path / 'fresh.log'}"
    code, _, said = cli("predict", path, "--pool", POOL, "--save", "--storage", storage)
    assert code == 0, said
    study = optuna.load_study(study_name="fresh", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "fresh.log"))))
    assert not study.trials and study.user_attrs[PREDICTIONS_ATTR]["records"]
    code, _, said = cli("run", path, "--storage", storage, "--no-progress")
    assert code == 0, said
    res = Results.load(path, storage=storage)
    assert sum(t.state == TrialState.COMPLETE for t in res.studies[0].trials) == 2
    assert res.predictions()["measured_error"].notna().all()
    doc["curve"]["sizes"] = [16, 32]  # another study under the same name: refused up front
    code, _, said = cli("predict", write_study(tmp_path, doc), "--pool", "64", "--save",
                        "--storage", storage)
    assert code == 1 and "different curve" in said and "Gram matrix" not in said
