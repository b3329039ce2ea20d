"""Figures from studies (matplotlib): learning curves, score heatmaps, data sets side by
side, scaling exponents. Each function returns a ``matplotlib.figure.Figure``; save it with
``fig.savefig("curves.pdf")`` (PNG, SVG and PDF all work)::

    from dmisearch import plots
    from dmisearch.analysis import Results

    res = Results.load("studies/quickstart.toml")
    plots.curves(res).savefig("curves.svg")

Every figure shows the best complete trial of each triplet (as the leaderboard does).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files, not windows: works headless and in tests

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from dmisearch import stats  # noqa: E402
from dmisearch.analysis import Results, Triplet  # noqa: E402
from dmisearch.evidence import curve_matrix  # noqa: E402
from dmisearch.metrics import beta  # noqa: E402

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
