"""``dmisearch report``: a self-contained HTML page plus the data behind it.

``write_report(results, out_dir)`` writes

* ``index.html``: leaderboard with intervals over seeds and confirmed scores, learning
  curves, score heatmaps, the data sets side by side, scaling exponents, the kernel
  learners' predicted curves and spectra where the studies store them, the studies'
  settings, the plugin packages and versions the trials used, and the environment.
  Figures are embedded as base64 PNG, styles inline, no script or font from the network:
  the page opens offline.
* ``curves.csv`` and ``curves.parquet`` (one row per trial, size and seed), ``trials.csv``,
  ``leaderboard.csv``, and predictions.csv where the studies store predictions.
"""

from __future__ import annotations

import base64
import html
import io
import json
import platform
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd

from dmisearch import plots
from dmisearch.analysis import Results
from dmisearch.trialinfo import PREDICTIONS_ATTR

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em;
       color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
pre { background: #f7f7f7; padding: 0.75em; overflow-x: auto; font-size: 0.8em; }
.muted { color: #777; }
"""

# Counts script and resource errors, and marks the page once every figure has decoded
# (what the rendering test reads back). Runs offline; nothing is fetched.
SCRIPT = """
let errors = 0;
window.addEventListener("error", () => { errors += 1; }, true);
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.figures = String(imgs.length);
  document.body.dataset.figuresLoaded = String(ok);
  document.body.dataset.errors = String(errors);
});
"""


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("dmisearch", "torch", "optuna", "numpy", "pandas", "matplotlib", "pluggy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _plugins(trials: Results) -> pd.DataFrame:
    """Every component the trials used, with its plugin, package and version."""
    seen: dict[tuple, dict[str, Any]] = {}
    for _, t in trials._trials():
        pk = t.user_attrs.get("packages") or {}
        for role in ("model", "algorithm", "data"):
            if isinstance(pk.get(role), dict):
                p = pk[role]
                seen[(role, p.get("name"), p.get("package"), p.get("version"))] = {
                    "kind": role, **{k: p.get(k) for k in ("name", "plugin", "package",
                                                           "version", "class")}}
        for p in pk.get("transforms") or []:
            seen[("transform", p.get("name"), p.get("package"), p.get("version"))] = {
                "kind": "transform", **{k: p.get(k) for k in ("name", "plugin", "package",
                                                              "version", "class")}}
    return pd.DataFrame(list(seen.values()))


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, border=0, na_rep="-", escape=True)


def _figures(res: Results, board: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(title, caption, embedded PNG) of each figure of the measured curves."""
    if board["trial"].isna().all():
        return []
    datasets = sorted({d for d in board["data"].dropna()})
    figures = [("Learning curves", "Mean test error over seeds (band: lowest to highest "
                "seed) of each triplet's best trial.", _png(plots.curves(res)))]
    for d in datasets:
        figures.append((f"Best score by model and algorithm: {d}", "",
                        _png(plots.heatmap(res, data=d))))
    if len(datasets) > 1:
        figures.append(("Data sets side by side", "", _png(plots.across_data(res))))
    figures.append(("Scaling exponents", "beta of error ~ n^-beta, 95% interval over "
                    "seeds (jackknife-t; none below 3 seeds).", _png(plots.exponents(res))))
    return figures


def _figure(title: str, caption: str, src: str, level: str = "h2") -> list[str]:
    return [f"<{level}>{html.escape(title)}</{level}>",
            f'<p class="muted">{html.escape(caption)}</p>' if caption else "",
            f'<img alt="{html.escape(title)}" src="{src}">']


def _predictions_section(preds: pd.DataFrame, res: Results) -> list[str]:
    """"Predicted learning curves": the kernel learners' curves predicted from their
    spectra (stored by ``dmisearch predict --save`` or ``prior = "theory"``), beside the
    measured ones, and the spectra; nothing when no study stores predictions."""
    if preds.empty:
        return []
    table = preds.drop_duplicates(["study", "model", "algorithm"])[
        ["study", "model", "algorithm", "predicted_aulc", "rank", "modes_90", "target",
         "measured_metric"]].rename(columns={
             "predicted_aulc": "predicted aulc", "modes_90": "modes 90%",
             "target": "predicted", "measured_metric": "measured"})
    differ = (table["predicted"] != table["measured"]).any()
    return [
        "<h2>Predicted learning curves</h2>",
        '<p class="muted">Kernel ridge regression\'s test error predicted, before training, '
        "from each kernel's spectrum on a pool of the study's data (docs/theory.md), "
        "ranked by predicted aulc; modes 90%: the kernel modes that hold 90% of the "
        "target's power (fewer: better aligned)."
        + (" The predicted one-hot MSE and the measured error are different quantities: "
           "compare their rankings only." if differ else "") + "</p>",
        _table(table.round({"predicted aulc": 3})),
        *_figure("Predicted and measured curves", "Dashed: predicted; solid: the mean "
                 "curve of the pair's best trial.", _png(plots.predicted_vs_measured(res)),
                 "h3"),
        *(_figure("Kernel spectra", "Eigenvalues, and the share C(k) of the target's power "
                  "in the first k modes; dots: the modes that hold 90%.",
                  _png(plots.spectra(res)), "h3") if not res.spectra().empty else []),
    ]


def _write_tables(res: Results, out: Path) -> dict[str, pd.DataFrame]:
    """The data behind the page, as CSV (and Parquet) files in ``out``."""
    frames = {"curves": res.curves(), "trials": res.trials(), "leaderboard": res.leaderboard(),
              "predictions": res.predictions()}
    for name, df in frames.items():
        if name != "predictions" or not df.empty:
            df.to_csv(out / f"{name}.csv", index=False)
    try:
        frames["curves"].to_parquet(out / "curves.parquet", index=False)
    except ImportError:  # no parquet engine: say so next to the CSV
        (out / "curves.parquet.txt").write_text("pip install pyarrow to get curves.parquet\n")
    return frames


def write_report(res: Results, out_dir: str | Path) -> Path:
    """Write the report of ``res`` into ``out_dir`` (created); returns ``index.html``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = _write_tables(res, out)
    trials, board = frames["trials"], frames["leaderboard"]
    names = [s.study_name for s in res.studies]
    shown = board.drop(columns=["curve", "params"]).copy()
    shown["hyperparameters"] = [", ".join(f"{k}={v:.4g}" if isinstance(v, float) else
                                          f"{k}={v}" for k, v in p.items())
                                for p in board["params"]]
    settings = {s.study_name: {k: v for k, v in s.user_attrs.items()
                               if (k.startswith("dmisearch") or k == "source")
                               and k != PREDICTIONS_ATTR}
                for s in res.studies}
    state_counts = trials["state"].value_counts().to_dict() if not trials.empty else {}
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>dmisearch report: {html.escape(', '.join(names))}</title>",
        f"<style>{CSS}</style><script>{SCRIPT}</script></head><body>",
        f"<h1>dmisearch report: {html.escape(', '.join(names))}</h1>",
        f'<p class="muted">Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}; '
        f"{len(trials)} trials ({html.escape(json.dumps(state_counts))}). Scores: lower is "
        "better. Intervals are 95% over seeds (jackknife-t, coverage measured by simulation); "
        "none is given below 3 seeds, nor for a search score picked as the best of several "
        "configurations (ci_note says which): the confirmed score, retrained on fresh seeds, "
        "has one. p_vs_next: p-value of each row against the next.</p>",
        "<h2>Leaderboard</h2>", _table(shown),
    ]
    for title, caption, src in _figures(res, board):
        parts += _figure(title, caption, src)
    parts += _predictions_section(frames["predictions"], res)
    files = ", ".join(f"{n}.csv" for n, df in frames.items()
                      if n != "predictions" or not df.empty)
    parts += ["<h2>Studies</h2>",
              f"<pre>{html.escape(json.dumps(settings, indent=2, default=str))}</pre>",
              "<h2>Plugins</h2>", _table(_plugins(res)),
              "<h2>Environment</h2>",
              _table(pd.DataFrame(list(_versions().items()), columns=["", "version"])),
              f"<h2>Files</h2><p>{files}, curves.parquet beside this page.</p>",
              "</body></html>"]
    index = out / "index.html"
    index.write_text("\n".join(parts), encoding="utf-8")
    return index
