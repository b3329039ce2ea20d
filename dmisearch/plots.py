"""Figures from studies (matplotlib): learning curves, score heatmaps, data sets side by
side, scaling exponents, the kernel learners' predicted curves and spectra where the
studies store them (``dmisearch predict --save``), and the curve pruner's extrapolations
(``pruner = "curve"``). Each function returns a
``matplotlib.figure.Figure``; save it with ``fig.savefig("curves.pdf")`` (PNG, SVG and PDF
all work)::

    from dmisearch import plots
    from dmisearch.analysis import Results

    res = Results.load("studies/quickstart.toml")
    plots.curves(res).savefig("curves.svg")

Every figure but `extrapolations` shows the best complete trial of each triplet (as the
leaderboard does).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files, not windows: works headless and in tests

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from dmisearch import stats  # noqa: E402
from dmisearch.analysis import Results, Triplet  # noqa: E402
from dmisearch.curve_pruner import ATTR as EXTRAPOLATION  # noqa: E402
from dmisearch.errors import DmisearchError  # noqa: E402
from dmisearch.evidence import curve_matrix  # noqa: E402
from dmisearch.metrics import beta  # noqa: E402
from dmisearch.predictions import HOW_TO_PREDICT  # noqa: E402

STYLE = {"figure.dpi": 110, "axes.spines.top": False, "axes.spines.right": False,
         "axes.grid": True, "grid.alpha": 0.3, "font.size": 9, "legend.fontsize": 8}


def _best(res: Results, data: str | None = None) -> list[tuple[str, Triplet, object]]:
    rows = [(s, trip, t) for (s, trip), t in res.best_trials().items()
            if data is None or trip[0] == data]
    return sorted(rows, key=lambda r: r[2].value)  # type: ignore[attr-defined]


def curves(res: Results, *, data: str | None = None, triplets: Sequence[Triplet] | None = None,
           ax: plt.Axes | None = None, colors: dict[tuple[str, str], str] | None = None
           ) -> Figure:
    """Mean test error against training size on log-log axes, one line per triplet, with
    a band from the lowest to the highest seed. ``colors`` maps (model, algorithm) to a
    colour (to match panels)."""
    with plt.rc_context(STYLE):
        fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(5.5, 3.8))
        for _, trip, t in _best(res, data):
            if triplets is not None and trip not in triplets:
                continue
            sizes, _, err = curve_matrix(t.user_attrs)  # type: ignore[attr-defined]
            mean = np.nanmean(err, axis=1)
            (line,) = ax.plot(sizes, mean, marker="o", ms=3,
                              color=(colors or {}).get((trip[1], trip[2])),
                              label=f"{trip[1]} / {trip[2]}" + ("" if data else f" ({trip[0]})"))
            ax.fill_between(sizes, np.nanmin(err, axis=1), np.nanmax(err, axis=1),
                            color=line.get_color(), alpha=0.15, lw=0)
        ax.set(xscale="log", yscale="log", xlabel="training samples n", ylabel="test error",
               title=f"learning curves{'' if data is None else f': {data}'}")
        ticks = sorted({int(n) for line in ax.get_lines() for n in line.get_xdata()})
        if ticks:  # the curve's own sizes, as plain numbers
            ax.set_xticks(ticks, [str(n) for n in ticks])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.legend(loc="best", frameon=False)
        fig.tight_layout()
    return fig


def heatmap(res: Results, *, data: str | None = None) -> Figure:
    """Best score of each model x algorithm for one data set (the first if not given)."""
    best = _best(res)
    labels = sorted({trip[0] for _, trip, _ in best})
    data = data if data is not None else (labels[0] if labels else "")
    cells = {(trip[1], trip[2]): t.value for _, trip, t in best  # type: ignore[attr-defined]
             if trip[0] == data}
    models = sorted({m for m, _ in cells})
    algos = sorted({a for _, a in cells})
    grid = np.full((len(models), len(algos)), np.nan)
    for (m, a), v in cells.items():
        grid[models.index(m), algos.index(a)] = v
    with plt.rc_context({**STYLE, "axes.grid": False}):
        fig, ax = plt.subplots(figsize=(1.2 + 1.1 * max(len(algos), 1),
                                        1.0 + 0.5 * max(len(models), 1)))
        im = ax.imshow(grid, cmap="viridis_r", aspect="auto")
        ax.set_xticks(range(len(algos)), algos, rotation=30, ha="right")
        ax.set_yticks(range(len(models)), models)
        for i in range(len(models)):
            for j in range(len(algos)):
                if not math.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center",
                            color="white" if grid[i, j] > np.nanmean(grid) else "black")
        fig.colorbar(im, ax=ax, label="score (lower is better)")
        ax.set_title(f"best score: {data}")
        fig.tight_layout()
    return fig


def across_data(res: Results, *, datasets: Sequence[str] | None = None) -> Figure:
    """The same triplets across several data sets (or transforms of one), one panel per
    data set, sharing axes: e.g. digits vs permuted digits."""
    best = _best(res)
    labels = list(datasets) if datasets is not None else sorted({t[0] for _, t, _ in best})
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, max(len(labels), 1), figsize=(4.2 * max(len(labels), 1),
                                                                  3.6),
                                 sharex=True, sharey=True, squeeze=False)
        cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        pairs = sorted({(t[1], t[2]) for _, t, _ in best})
        colors = {p: cycle[i % len(cycle)] for i, p in enumerate(pairs)}  # same in each panel
        for ax, label in zip(axes[0], labels, strict=False):
            curves(res, data=label, ax=ax, colors=colors)
        fig.tight_layout()
    return fig


def exponents(res: Results) -> Figure:
    """The fitted power-law exponent ``beta`` (-slope of log error against log n) of each
    triplet, with its 95% interval over seeds (jackknife-t, :mod:`dmisearch.stats`; none
    below three seeds)."""
    rows = []
    for _, trip, t in _best(res):
        sizes, _, err = curve_matrix(t.user_attrs)  # type: ignore[attr-defined]
        err = err[:, np.all(np.isfinite(err), axis=0)]
        if len(sizes) < 2 or err.shape[1] == 0:
            continue
        iv = stats.interval(err, lambda e, n=sizes: beta(n, e.mean(axis=1), 1e-300))
        low, high = (iv.low, iv.high) if iv.available else (iv.estimate, iv.estimate)
        rows.append(("/".join(trip), iv.estimate, low, high))
    rows.sort(key=lambda r: -r[1])
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.5, 0.6 + 0.35 * max(len(rows), 1)))
        y = np.arange(len(rows))
        ax.barh(y, [r[1] for r in rows], color="#4C72B0", alpha=0.8)
        ax.errorbar([r[1] for r in rows], y,
                    xerr=[[r[1] - r[2] for r in rows], [r[3] - r[1] for r in rows]],
                    fmt="none", ecolor="black", capsize=2, lw=1)
        ax.set_yticks(y, [r[0] for r in rows])
        ax.invert_yaxis()
        ax.set(xlabel="scaling exponent beta (error ~ n^-beta)", title="scaling exponents")
        fig.tight_layout()
    return fig


def _stored(df: pd.DataFrame, study: str | None, what: str) -> pd.DataFrame:
    """``df`` (predictions or spectra) for ``study`` (None: all); refuse an empty one."""
    if study is not None:
        df = df[df["study"] == study]
    if df.empty:
        where = ("no study of these results stores" if study is None else
                 f"study '{study}' stores no")
        raise DmisearchError(f"{where} {what}: {HOW_TO_PREDICT}")
    return df


def _pair_colors(df: pd.DataFrame) -> dict[tuple[str, str], str]:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    pairs = list(dict.fromkeys(zip(df["model"], df["algorithm"], strict=True)))
    return {p: cycle[i % len(cycle)] for i, p in enumerate(pairs)}


def _panels(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame, str]]:
    """(study, its rows, what the panel shows): "both" where the prediction and the
    measurement are the same quantity, else a "predicted" and a "measured" panel."""
    out = []
    for name, rows in df.groupby("study", sort=False):
        same = rows["target"].iloc[0] == rows["measured_metric"].iloc[0]
        out += [(str(name), rows, w) for w in (("both",) if same else ("predicted",
                                                                       "measured"))]
    return out


def predicted_vs_measured(res: Results, study: str | None = None) -> Figure:
    """Each kernel pair's predicted learning curve (dashed) and the mean curve its best
    trial measured (solid, same colour) against n, on log-log axes. Where the prediction
    and the study's metric are different quantities (one-hot MSE against an error rate),
    they get a panel each: compare the rankings then, not the numbers."""
    df = _stored(res.predictions(), study, "predicted learning curves")
    panels = _panels(df)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8),
                                 squeeze=False)
        colors = _pair_colors(df)
        for ax, (name, rows, which) in zip(axes[0], panels, strict=True):
            for (m, a), g in rows.groupby(["model", "algorithm"], sort=False):
                g = g.sort_values("size")
                if which != "measured":
                    ax.plot(g["size"], g["predicted_error"], ls="--", color=colors[(m, a)],
                            label=f"{m} / {a}, predicted")
                if which != "predicted" and g["measured_error"].notna().any():
                    ax.plot(g["size"], g["measured_error"], ls="-", marker="o", ms=3,
                            color=colors[(m, a)], label=f"{m} / {a}, measured")
            target = str(rows["target"].iloc[0])
            metric = str(rows["measured_metric"].iloc[0]).replace("_", " ")
            ylabel = {"both": f"test {metric}", "predicted": f"predicted test {target}",
                      "measured": f"measured test {metric}"}[which]
            ax.set(xscale="log", yscale="log", xlabel="training samples n", ylabel=ylabel,
                   title=f"predicted and measured: {name}" if which == "both" else
                   f"{which}: {name}")
            ticks = sorted({int(n) for n in rows["size"]})
            ax.set_xticks(ticks, [str(n) for n in ticks])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.legend(loc="best", frameon=False)
        fig.tight_layout()
    return fig


def spectra(res: Results, study: str | None = None) -> Figure:
    """The stored kernel spectra, per (model, kernel algorithm): the eigenvalues against
    the mode k (log-log), and the share C(k) of the target's power in the first k modes
    (log k), with the modes that hold 90% of it marked (fewer: better aligned)."""
    df = _stored(res.spectra(), study, "kernel spectra")
    several = df["study"].nunique() > 1
    with plt.rc_context(STYLE):
        fig, (ev_ax, c_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
        colors = _pair_colors(df)
        for (name, m, a), g in df.groupby(["study", "model", "algorithm"], sort=False):
            label = f"{m} / {a}" + (f" ({name})" if several else "")
            color, m90 = colors[(m, a)], int(g["modes_90"].iloc[0])
            ev_ax.plot(g["k"], g["eigenvalue"], color=color, label=label)
            c_ax.plot(g["k"], g["cumulative_power"], color=color, label=label)
            c_ax.plot([m90], [0.9], "o", ms=5, color=color)
            ev_ax.plot([m90], [np.interp(m90, g["k"], g["eigenvalue"])], "o", ms=5,
                       color=color)
        c_ax.axhline(0.9, color="grey", ls=":", lw=0.8)
        ev_ax.set(xscale="log", yscale="log", xlabel="mode k", ylabel="eigenvalue",
                  title="kernel spectra (dots: modes holding 90% of the target)")
        c_ax.set(xscale="log", xlabel="mode k", ylim=(0, 1.02),
                 ylabel="C(k): target power in the first k modes",
                 title="alignment with the target")
        ev_ax.legend(loc="best", frameon=False)
        fig.tight_layout()
    return fig


def extrapolations(res: Results, study: str | None = None) -> Figure:
    """The curve pruner's extrapolations (``pruner = "curve"``), one panel per study: each
    judged trial's measured mean curve (solid, dots) and, from its last trained size on,
    the full curve the pruner predicted at its latest prune point (dashed with the 5-95%
    band: pruned, so only predicted; dotted: kept, then measured), coloured by pair."""
    judged = [(s, t) for s in res.studies if study is None or s.study_name == study
              for t in s.get_trials(deepcopy=False)
              if isinstance(t.user_attrs.get(EXTRAPOLATION), dict)
              and "curve" in t.user_attrs[EXTRAPOLATION]]
    if not judged:
        where = "no study of these results has" if study is None else f"study '{study}' has no"
        raise DmisearchError(f"{where} trials judged by the curve pruner: set "
                             "[search] pruner = \"curve\" (docs/study-files.md, Pruning)")
    names = list(dict.fromkeys(s.study_name for s, _ in judged))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 3.8),
                                 squeeze=False)
        cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        pairs = list(dict.fromkeys((t.user_attrs.get("model"), t.user_attrs.get("algorithm"))
                                   for _, t in judged))
        for ax, name in zip(axes[0], names, strict=True):
            for s, t in judged:
                if s.study_name == name:
                    pair = (t.user_attrs.get("model"), t.user_attrs.get("algorithm"))
                    _extrapolation(ax, t, cycle[pairs.index(pair) % len(cycle)])
            ax.set(xscale="log", yscale="log", xlabel="training samples n",
                   ylabel="mean test error", title=f"extrapolations: {name}")
            ticks = sorted({n for s, t in judged if s.study_name == name
                            for n in t.user_attrs[EXTRAPOLATION]["curve"]["size"]})
            ax.set_xticks(ticks, [str(n) for n in ticks])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            handles = [plt.Line2D([], [], color=cycle[i % len(cycle)], label=f"{m} / {a}")
                       for i, (m, a) in enumerate(pairs)]
            ax.legend(handles=handles, loc="best", frameon=False)
        fig.tight_layout()
    return fig


def _extrapolation(ax: plt.Axes, t: object, color: str) -> None:
    """One trial: measured (solid) and, beyond its last judged size, predicted."""
    record = t.user_attrs[EXTRAPOLATION]  # type: ignore[attr-defined]
    curve = record["curve"]
    sizes, _, err = curve_matrix(t.user_attrs)  # type: ignore[attr-defined]
    ax.plot(sizes, np.nanmean(err, axis=1), "-o", ms=2.5, lw=0.8, color=color, alpha=0.8)
    start = len(curve["trained"]) - 1
    n = curve["size"][start:]
    pruned = bool(record.get("pruned"))
    ax.plot(n, curve["mean"][start:], ls="--" if pruned else ":", lw=0.9, color=color)
    if pruned:
        ax.fill_between(n, curve["low"][start:], curve["high"][start:], color=color,
                        alpha=0.08, lw=0)
