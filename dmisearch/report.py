"""``dmisearch report``: one self-contained, interactive HTML page plus the data behind it.

``write_report(results, out_dir)`` writes

* ``index.html``: a summary line (trials by state, the objective and the metric), the
  leaderboard (sortable by a click on a header, scores with one number of decimals per
  column, intervals over seeds and confirmed scores), the learning curves (hover for each
  point's trial, seed range and hyperparameters; a click on a line or legend entry
  highlights that triplet), score heatmaps that say which pairs were pruned or failed,
  the confirmed scores, the scaling exponents, the kernel learners' predicted curves and
  spectra where the studies store them, the failed trials by kind with their tracebacks,
  the studies' settings, the plugin packages and versions the trials used, the
  environment, and the files written beside it. Figures are Plotly
  (:mod:`dmisearch.report_figures`), tables and the page's few lines of script are in
  :mod:`dmisearch.report_html`; Plotly's JavaScript is inlined once, so the page opens
  offline (about 5 MB, most of it Plotly).
* ``curves.csv`` and ``curves.parquet`` (one row per trial, size and seed; without a
  Parquet engine, curves.parquet.txt says how to get one), ``trials.csv``,
  ``leaderboard.csv``, and predictions.csv where the studies store predictions.
"""

from __future__ import annotations

import html
import platform
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd

from dmisearch import edges
from dmisearch import report_figures as figs
from dmisearch import report_html as page
from dmisearch.analysis import Results
from dmisearch.evidence import Scorer
from dmisearch.trialinfo import PREDICTIONS_ATTR

#: Packages whose versions the page lists.
PACKAGES = ("dmisearch", "torch", "optuna", "numpy", "pandas", "plotly", "matplotlib",
            "pluggy")
READING = ("Intervals are 95% over seeds (jackknife-t, coverage measured by simulation); "
           "none is given below 3 seeds, nor for a search score picked as the best of "
           "several configurations (the interval column says so): the confirmed score, "
           "retrained on fresh seeds, has one. p vs next: p-value of each row against the "
           "next (* where the difference is significant at 5%). Click a column header to "
           "sort; hover over the figures for values; click a curve or its legend entry to "
           "highlight it (click again for all).")


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _plugins(trials: Results) -> pd.DataFrame:
    """Every component the trials used, with its plugin, package and version."""
    seen: dict[tuple, dict[str, Any]] = {}
    keys = ("name", "plugin", "package", "version", "class")
    for _, t in trials._trials():
        pk = t.user_attrs.get("packages") or {}
        used = [(role, pk[role]) for role in ("model", "algorithm", "data")
                if isinstance(pk.get(role), dict)]
        used += [("transform", p) for p in pk.get("transforms") or [] if isinstance(p, dict)]
        for role, p in used:
            seen[(role, p.get("name"), p.get("package"), p.get("version"))] = {
                "kind": role, **{k: p.get(k) for k in keys}}
    return pd.DataFrame(list(seen.values()))


def _write_tables(res: Results, out: Path) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """The data behind the page, as CSV (and Parquet) files in ``out``; returns the
    frames and the names of the files actually written."""
    frames = {"curves": res.curves(), "trials": res.trials(), "leaderboard": res.leaderboard(),
              "predictions": res.predictions()}
    written = []
    for name, df in frames.items():
        if name != "predictions" or not df.empty:
            df.to_csv(out / f"{name}.csv", index=False)
            written.append(f"{name}.csv")
    try:
        frames["curves"].to_parquet(out / "curves.parquet", index=False)
        written.append("curves.parquet")
    except ImportError:  # no parquet engine: say so next to the CSV
        (out / "curves.parquet").unlink(missing_ok=True)
        (out / "curves.parquet.txt").write_text("pip install pyarrow to get curves.parquet\n")
        written.append("curves.parquet.txt")
    return frames, written


def _section(ident: str, title: str, body: str, note: str = "") -> list[str]:
    return [f'<h2 id="{ident}">{html.escape(title)}</h2>',
            f'<p class="muted">{html.escape(note)}</p>' if note else "", body]


def _figure(builder: Callable[[], Any], div_id: str, title: str, note: str = "",
            height: int = 420, highlight: bool = False) -> list[str]:
    """A figure under an ``<h3>``; nothing when ``builder`` has nothing to draw."""
    fig = builder()
    if fig is None:
        return []
    return [f"<h3>{html.escape(title)}</h3>",
            f'<p class="muted">{html.escape(note)}</p>' if note else "",
            figs.embed(fig, div_id, height, highlight)]


def _figures(res: Results, board: pd.DataFrame, objective: str, metric: str,
             colors: figs.Colors) -> list[str]:
    """Every figure of the measured curves and scores."""
    if board["trial"].isna().all():
        return ['<p class="muted">No complete trial yet: nothing to draw.</p>']
    parts = _figure(lambda: figs.curves(res, colors), "fig-curves", "Learning curves",
                    f"Mean {metric} over seeds of each triplet's best trial (band: lowest to "
                    "highest seed); dashed: the trivial predictor. Log axes.",
                    height=480, highlight=True)
    for i, data in enumerate(sorted(board["data"].dropna().unique())):
        rows = board[board["data"] == data]
        parts += _figure(lambda d=data: figs.heatmap(board, d, objective), f"fig-heat-{i}",
                         f"Best {objective} by model and algorithm: {data}",
                         "Grey cells: no complete trial (pruned, failed or not tried, as "
                         "labelled).",
                         height=160 + 60 * rows["model"].nunique())
    parts += _figure(lambda: figs.confirmation(board, objective), "fig-confirmed",
                     "Search and confirmed scores", "Open circles: the best search score "
                     "(picked among configurations on the seeds that score it: optimistic); "
                     "dots: the same configuration retrained on fresh seeds.",
                     height=160 + 40 * int(board["confirmed_trial"].notna().sum()))
    parts += _figure(lambda: figs.exponents(res), "fig-exponents", "Scaling exponents",
                     "beta of error ~ n^-beta, 95% interval over seeds (jackknife-t; none "
                     "below 3 seeds).", height=160 + 30 * int(board["trial"].notna().sum()))
    return parts


def _predictions(res: Results, preds: pd.DataFrame, colors: figs.Colors) -> list[str]:
    """The kernel learners' predicted curves beside the measured ones, and the spectra;
    nothing when no study stores predictions."""
    if preds.empty:
        return []
    shown = preds.drop_duplicates(["study", "model", "algorithm"])[
        ["study", "model", "algorithm", "predicted_aulc", "rank", "modes_90", "target",
         "measured_metric"]].rename(columns={
             "predicted_aulc": "predicted aulc", "modes_90": "modes 90%",
             "target": "predicted", "measured_metric": "measured"})
    differ = (shown["predicted"] != shown["measured"]).any()
    note = ("Kernel ridge regression's test error predicted, before training, from each "
            "kernel's spectrum on a pool of the study's data (docs/theory.md), ranked by "
            "predicted aulc; modes 90%: the kernel modes that hold 90% of the target's "
            "power (fewer: better aligned)." + (
                " The predicted one-hot MSE and the measured error are different "
                "quantities: compare their rankings only." if differ else ""))
    return [*_section("predictions", "Predicted learning curves",
                      page.table(shown, sortable=True, numeric=("rank", "modes 90%")), note),
            *_figure(lambda: figs.predicted(preds, colors), "fig-predicted",
                     "Predicted and measured curves", "Dashed: predicted; solid: the mean "
                     "curve of the pair's best trial.", highlight=True),
            *_figure(lambda: figs.spectra(res.spectra(), colors), "fig-spectra", "Kernel spectra",
                     "Eigenvalues, and the share C(k) of the target's power in the first k "
                     "modes; dots: the modes that hold 90%.", highlight=True)]


def _files(written: list[str]) -> str:
    links = ", ".join(f'<a href="{html.escape(n)}">{html.escape(n)}</a>' for n in written)
    note = (" (no Parquet engine was installed: pip install pyarrow for curves.parquet)"
            if "curves.parquet.txt" in written else "")
    return f"<p>Beside this page: {links}{note}.</p>"


def _names(scorers: list[Scorer]) -> tuple[str, str]:
    """The objective and metric to name in headers: the studies', or generic words."""
    objectives = {sc.objective.name for sc in scorers}
    metrics = {sc.metric for sc in scorers}
    return (objectives.pop() if len(objectives) == 1 else "score",
            figs.metric_label(metrics.pop()) if len(metrics) == 1 else "test error")


def write_report(res: Results, out_dir: str | Path) -> Path:
    """Write the report of ``res`` into ``out_dir`` (created); returns ``index.html``."""
    import plotly.offline

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames, written = _write_tables(res, out)
    board = frames["leaderboard"]
    scorers = [Scorer.of(s) for s in res.studies]
    objective, metric = _names(scorers)
    colors = figs.pair_colors(list(zip(board["model"], board["algorithm"], strict=True)))
    title = f"dmisearch report: {', '.join(s.study_name for s in res.studies)}"
    versions = pd.DataFrame(list(_versions().items()), columns=["package", "version"])
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{page.CSS}</style>",
        f"<script>{plotly.offline.get_plotlyjs()}</script>",
        f"<script>{page.SCRIPT}</script></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="summary">{html.escape(page.summary(frames["trials"], scorers))}</p>',
        f'<p class="muted">Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}.</p>',
        "<nav>" + "".join(f'<a href="#{a}">{t}</a>' for a, t in (
            ("leaderboard", "Leaderboard"), ("figures", "Figures"), ("failures", "Failures"),
            ("settings", "Settings"), ("plugins", "Plugins"), ("files", "Files"))) + "</nav>",
        *_section("leaderboard", "Leaderboard", page.leaderboard(board, objective)
                  + page.edges(edges.board_edges(res.studies, board)), READING),
        *_section("figures", "Figures", ""), *_figures(res, board, objective, metric, colors),
        *_predictions(res, frames["predictions"], colors),
        *_section("failures", "Failures", page.failures(res.studies),
                  "Failed trials by kind (the error's type); each failed trial's traceback "
                  "below (dmisearch rerun --trial N reruns one)."),
        *_section("settings", "Studies", page.settings(res.studies, [PREDICTIONS_ATTR]),
                  "What each study was run with (its stored identity and search space)."),
        *_section("plugins", "Plugins", page.table(_plugins(res))),
        *_section("environment", "Environment", page.table(versions)),
        *_section("files", "Files", _files(written)),
        "</body></html>"]
    index = out / "index.html"
    index.write_text("\n".join(p for p in parts if p), encoding="utf-8")
    return index
