"""The report's figures, with Plotly: interactive (zoom, hover, highlight), drawn offline.

Each function returns a ``plotly.graph_objects.Figure`` (or None when there is nothing to
draw); :func:`embed` turns one into the ``<div>`` and ``<script>`` the page holds, without
Plotly's JavaScript (the page inlines it once). Plotly is imported inside the functions,
so that only writing a report needs it.

* :func:`curves`: each triplet's best trial, mean test error over seeds with the seeds'
  range as a band, the trivial predictor dashed; one panel per data set.
* :func:`heatmap`: the best score of each model x algorithm of a data set; pairs with no
  complete trial are labelled ("pruned", "failed", "not tried"), not left blank.
* :func:`confirmation`: search and confirmed scores side by side, with intervals.
* :func:`exponents`: the scaling exponent of each triplet with its interval over seeds.
* :func:`predicted` and :func:`spectra`: the kernel learners' predicted curves and
  spectra, where the studies store them.

Traces of one triplet share a ``legendgroup``: the page's script highlights a group when
its line or legend entry is clicked (``report_html.SCRIPT``).
"""

from __future__ import annotations

import html
import math
import warnings
from typing import Any

import numpy as np
import pandas as pd

from dmisearch import board as boardfmt
from dmisearch import stats
from dmisearch.analysis import Results
from dmisearch.evidence import Scorer, curve_matrix
from dmisearch.metrics import beta

#: Colours of the (model, algorithm) pairs, the same in every figure.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f")
#: Plotly's options for every figure: no logo (a link to plotly.com), resizes with the page.
CONFIG = {"displaylogo": False, "responsive": True}
#: Group of traces that stay visible whatever is highlighted (the trivial predictor).
KEEP = "reference"
FAINT = 0.15  # opacity of the traces that are not highlighted


def embed(fig: Any, div_id: str, height: int = 420, highlight: bool = False) -> str:
    """The figure as a ``<div>`` plus the script that draws it (Plotly already loaded)."""
    fig.update_layout(height=height, autosize=True, template="plotly_white",
                      margin={"l": 60, "r": 20, "t": 60, "b": 40})
    div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                      config=CONFIG, default_width="100%", default_height=f"{height}px")
    return f'<div class="figure{" highlightable" if highlight else ""}">{div}</div>'


def metric_label(metric: str) -> str:
    """``test mse``, ``test error rate``: the y-axis of a learning curve."""
    return f"test {metric.replace('_', ' ')}"


Colors = dict[tuple[str, str], str]


def pair_colors(pairs: list[tuple[str, str]]) -> Colors:
    """A colour per (model, algorithm) pair, in the order given (pass the leaderboard's,
    so that a pair has one colour in every figure)."""
    unique = list(dict.fromkeys(pairs))
    return {p: PALETTE[i % len(PALETTE)] for i, p in enumerate(unique)}


def _colors(pairs: list[tuple[str, str]], given: Colors | None) -> Colors:
    return {**pair_colors(pairs), **(given or {})}


def _log_ticks(fig: Any, sizes: list[int]) -> None:
    """Log axes, x ticked at the training sizes."""
    fig.update_xaxes(type="log", title_text="training samples n", tickvals=sizes,
                     ticktext=[str(n) for n in sizes])
    fig.update_yaxes(type="log")


def _rgba(color: str, alpha: float) -> str:
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _finite(values: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in values]


def _best(res: Results) -> list[tuple[str, tuple[str, str, str], Any]]:
    rows = [(s, trip, t) for (s, trip), t in res.best_trials().items()]
    return sorted(rows, key=lambda r: (str(r[1][0]), r[2].value))


def _triplet_traces(go: Any, study: str, trip: tuple[str, str, str], t: Any, name: str,
                    color: str) -> list[Any]:
    """The band (lowest to highest seed) and the mean line of one trial's curve."""
    sizes, seeds, err = curve_matrix(t.user_attrs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, low, high = (np.nanmean(err, axis=1), np.nanmin(err, axis=1),
                           np.nanmax(err, axis=1))
        std = np.nanstd(err, axis=1, ddof=1) if err.shape[1] > 1 else np.full(len(sizes),
                                                                                math.nan)
    group = f"{study} | {' | '.join(trip)}"
    params = html.escape(boardfmt.short_params(
        {k: v for k, v in t.params.items() if k != "pair"}))
    n = [int(x) for x in sizes]
    band = go.Scatter(x=n + n[::-1], y=_finite(high) + _finite(low)[::-1], fill="toself",
                      mode="lines", fillcolor=_rgba(color, 0.15), line={"width": 0},
                      hoverinfo="skip", showlegend=False, legendgroup=group, name=name)
    custom = [[t.number, lo, hi, sd, err.shape[1]] for lo, hi, sd in
              zip(_finite(low), _finite(high), _finite(std), strict=True)]
    line = go.Scatter(
        x=n, y=_finite(mean), mode="lines+markers", name=name, legendgroup=group,
        line={"color": color}, marker={"size": 6}, customdata=custom,
        hovertemplate=(f"<b>{html.escape(name)}</b> (study {html.escape(study)})<br>"
                       "trial %{customdata[0]}, n = %{x}<br>mean %{y:.4g} over "
                       "%{customdata[4]} seeds<br>seeds: %{customdata[1]:.4g} to "
                       "%{customdata[2]:.4g} (std %{customdata[3]:.2g})<br>"
                       f"{params}<extra></extra>"))
    return [band, line]


def _baseline_trace(go: Any, sizes: list[int], value: float, first: bool) -> Any:
    return go.Scatter(x=[min(sizes), max(sizes)], y=[value, value], mode="lines",
                      name="trivial predictor", legendgroup=KEEP, showlegend=first,
                      line={"color": "#555", "dash": "dash", "width": 1.5},
                      hovertemplate=f"trivial predictor: {value:.4g}<extra></extra>")


def curves(res: Results, colors: Colors | None = None) -> Any | None:
    """Learning curves of each triplet's best trial, one panel per data set."""
    from plotly import graph_objects as go
    from plotly.subplots import make_subplots

    best = _best(res)
    if not best:
        return None
    datasets = list(dict.fromkeys(str(trip[0]) for _, trip, _ in best))
    several = len(datasets) > 1
    fig = make_subplots(rows=1, cols=len(datasets), shared_yaxes=True,
                        subplot_titles=datasets if several else None,
                        horizontal_spacing=0.04)
    colors = _colors([(trip[1], trip[2]) for _, trip, _ in best], colors)
    baselines: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
    for study, trip, t in best:
        col = datasets.index(str(trip[0])) + 1
        name = f"{trip[1]} / {trip[2]}" + (f" ({trip[0]})" if several else "")
        for trace in _triplet_traces(go, study, trip, t, name, colors[(trip[1], trip[2])]):
            fig.add_trace(trace, row=1, col=col)
        sizes, _, _ = curve_matrix(t.user_attrs)
        got = baselines.setdefault((study, str(trip[0])), ([], []))
        got[0].extend(int(n) for n in sizes)
        if "baseline_error" in t.user_attrs:
            got[1].append(float(t.user_attrs["baseline_error"]))
    for i, ((_, data), (sizes, values)) in enumerate(baselines.items()):
        if values:
            fig.add_trace(_baseline_trace(go, sizes, float(np.mean(values)), i == 0),
                          row=1, col=datasets.index(data) + 1)
    metrics = sorted({Scorer.of(s).metric for s in res.studies})
    ticks = sorted({n for sizes, _ in baselines.values() for n in sizes})
    _log_ticks(fig, ticks)
    fig.update_yaxes(title_text=f"{' / '.join(metric_label(m) for m in metrics)} "
                     "(mean over seeds)", row=1, col=1)
    fig.update_layout(legend={"orientation": "h", "y": -0.2}, hovermode="closest")
    return fig


def _cell(rows: pd.DataFrame) -> tuple[float, str]:
    """A heatmap cell from a pair's leaderboard rows: (best score, its label)."""
    scored = rows["score"].dropna()
    if len(scored):
        return float(scored.min()), ""
    pruned, failed = int(rows["pruned"].sum()), int(rows["failed"].sum())
    label = ("pruned / failed" if pruned and failed else "pruned" if pruned else
             "failed" if failed else "no trial")
    return math.nan, label


def heatmap(board: pd.DataFrame, data: str, objective: str) -> Any:
    """Best score of each model x algorithm on ``data``; cells without a complete trial
    say why ("pruned", "failed", "not tried")."""
    from plotly import graph_objects as go

    rows = board[board["data"] == data]
    models, algos = sorted(rows["model"].unique()), sorted(rows["algorithm"].unique())
    z = np.full((len(models), len(algos)), np.nan)
    labels = [["not tried" for _ in algos] for _ in models]
    places = boardfmt.decimals(rows["score"])
    for (m, a), pair in rows.groupby(["model", "algorithm"]):
        i, j = models.index(m), algos.index(a)
        z[i, j], label = _cell(pair)
        labels[i][j] = label or boardfmt.fixed(z[i, j], places)
    empty = [[1.0 if math.isnan(v) else None for v in r] for r in z]
    fig = go.Figure([
        go.Heatmap(z=[_finite(r) for r in z], x=algos, y=models, colorscale="Viridis",
                   reversescale=True, colorbar={"title": {"text": f"{objective}<br>(lower "
                                                          "is better)"}},
                   hovertemplate="%{y} / %{x}: %{z:.4g}<extra></extra>", hoverongaps=False),
        go.Heatmap(z=empty, x=algos, y=models, showscale=False, hoverinfo="skip",
                   colorscale=[[0, "#e5e5e5"], [1, "#e5e5e5"]]),
    ])
    for i, m in enumerate(models):
        for j, a in enumerate(algos):
            fig.add_annotation(x=a, y=m, text=labels[i][j], showarrow=False,
                               bgcolor="rgba(255,255,255,0.75)", font={"size": 13})
    fig.update_layout(xaxis_title="algorithm", yaxis_title="model")
    return fig


def confirmation(board: pd.DataFrame, objective: str) -> Any | None:
    """Each confirmed triplet's search score (best of its search) and confirmed score
    (fresh seeds), with the confirmed interval; None when nothing was confirmed."""
    from plotly import graph_objects as go

    rows = board[board["confirmed_trial"].notna()]
    if rows.empty:
        return None
    label = [f"{d} | {m} | {a}" for d, m, a in
             zip(rows["data"], rows["model"], rows["algorithm"], strict=True)]
    fig = go.Figure([
        go.Scatter(x=list(rows["score"]), y=label, mode="markers", name="search (best of "
                   "the search, its own seeds)", marker={"symbol": "circle-open", "size": 10},
                   hovertemplate="%{y}: search %{x:.4g}<extra></extra>"),
        go.Scatter(x=list(rows["confirmed_score"]), y=label, mode="markers",
                   name="confirmed (fresh seeds), 95% interval", marker={"size": 9},
                   error_x={"type": "data", "symmetric": False,
                            "array": _finite((rows["confirmed_high"] - rows["confirmed_score"])
                                             .to_numpy(float)),
                            "arrayminus": _finite((rows["confirmed_score"] -
                                                   rows["confirmed_low"]).to_numpy(float))},
                   hovertemplate="%{y}: confirmed %{x:.4g}<extra></extra>"),
    ])
    fig.update_layout(xaxis_title=f"{objective} (lower is better)",
                      yaxis={"autorange": "reversed"},
                      legend={"orientation": "h", "y": -0.25})
    return fig


def exponents(res: Results) -> Any | None:
    """The scaling exponent beta (error ~ n^-beta) of each triplet's best trial with its
    95% interval over seeds (jackknife-t; none below three seeds)."""
    from plotly import graph_objects as go

    rows = []
    for study, trip, t in _best(res):
        sizes, _, err = curve_matrix(t.user_attrs)
        err = err[:, np.all(np.isfinite(err), axis=0)]
        if len(sizes) < 2 or err.shape[1] == 0:
            continue
        iv = stats.interval(err, lambda e, n=sizes: beta(n, e.mean(axis=1), 1e-300))
        low, high = (iv.low, iv.high) if iv.available else (iv.estimate, iv.estimate)
        rows.append((" | ".join(trip), iv.estimate, low, high, study))
    if not rows:
        return None
    rows.sort(key=lambda r: -r[1])
    fig = go.Figure(go.Bar(
        x=[r[1] for r in rows], y=[r[0] for r in rows], orientation="h",
        marker={"color": "#4C72B0"}, customdata=[[r[2], r[3], r[4]] for r in rows],
        error_x={"type": "data", "symmetric": False, "array": [r[3] - r[1] for r in rows],
                 "arrayminus": [r[1] - r[2] for r in rows]},
        hovertemplate="%{y} (study %{customdata[2]}): beta %{x:.3g}, 95% interval "
                      "[%{customdata[0]:.3g}, %{customdata[1]:.3g}]<extra></extra>"))
    fig.update_layout(xaxis_title="scaling exponent beta (error ~ n^-beta)",
                      yaxis={"autorange": "reversed"})
    return fig


def predicted(preds: pd.DataFrame, colors: Colors | None = None) -> Any | None:
    """Predicted (dashed) and measured (solid) curves of the kernel pairs, one panel per
    study, or two where the prediction and the measurement are different quantities."""
    from plotly import graph_objects as go
    from plotly.subplots import make_subplots

    if preds.empty:
        return None
    panels = []
    for name, rows in preds.groupby("study", sort=False):
        same = rows["target"].iloc[0] == rows["measured_metric"].iloc[0]
        panels += [(str(name), rows, w) for w in (("both",) if same else ("predicted",
                                                                          "measured"))]
    titles = [f"{'predicted and measured' if w == 'both' else w}: {n}" for n, _, w in panels]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=titles)
    colors = _colors(list(zip(preds["model"], preds["algorithm"], strict=True)), colors)
    for col, (name, rows, which) in enumerate(panels, start=1):
        for (m, a), g in rows.groupby(["model", "algorithm"], sort=False):
            g, group = g.sort_values("size"), f"{name} | {m} | {a}"
            if which != "measured":
                fig.add_trace(go.Scatter(x=list(g["size"]), y=list(g["predicted_error"]),
                                         name=f"{m} / {a}, predicted", legendgroup=group,
                                         mode="lines",
                                         line={"dash": "dash", "color": colors[(m, a)]}),
                              row=1, col=col)
            if which != "predicted" and g["measured_error"].notna().any():
                fig.add_trace(go.Scatter(x=list(g["size"]), y=_finite(
                    g["measured_error"].to_numpy(float)), name=f"{m} / {a}, measured",
                    legendgroup=group, mode="lines+markers", line={"color": colors[(m, a)]}),
                    row=1, col=col)
        metric = metric_label(str(rows["measured_metric"].iloc[0]))
        target = f"predicted test {rows['target'].iloc[0]}"
        fig.update_yaxes(title_text={"both": metric, "predicted": target,
                                     "measured": f"measured {metric}"}[which], row=1, col=col)
    _log_ticks(fig, sorted({int(n) for n in preds["size"]}))
    fig.update_layout(legend={"orientation": "h", "y": -0.2})
    return fig


def spectra(spec: pd.DataFrame, colors: Colors | None = None) -> Any | None:
    """Eigenvalues against the mode k, and the share C(k) of the target's power in the
    first k modes, with the modes holding 90% of it marked."""
    from plotly import graph_objects as go
    from plotly.subplots import make_subplots

    if spec.empty:
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "kernel spectra (dots: modes holding 90% of the target)",
        "alignment with the target"))
    colors = _colors(list(zip(spec["model"], spec["algorithm"], strict=True)), colors)
    several = spec["study"].nunique() > 1
    for (name, m, a), g in spec.groupby(["study", "model", "algorithm"], sort=False):
        label, color = f"{m} / {a}" + (f" ({name})" if several else ""), colors[(m, a)]
        m90 = int(g["modes_90"].iloc[0])
        group = f"{name} | {m} | {a}"
        fig.add_trace(go.Scatter(x=list(g["k"]), y=list(g["eigenvalue"]), name=label,
                                 legendgroup=group, line={"color": color}), row=1, col=1)
        fig.add_trace(go.Scatter(x=list(g["k"]), y=list(g["cumulative_power"]), name=label,
                                 legendgroup=group, showlegend=False, line={"color": color}),
                      row=1, col=2)
        fig.add_trace(go.Scatter(x=[m90], y=[0.9], mode="markers", legendgroup=group,
                                 showlegend=False, marker={"color": color, "size": 9},
                                 hovertemplate=f"{label}: 90% in {m90} modes<extra></extra>"),
                      row=1, col=2)
    fig.update_xaxes(type="log", title_text="mode k")
    fig.update_yaxes(type="log", exponentformat="power", title_text="eigenvalue", row=1,
                     col=1)
    fig.update_yaxes(title_text="C(k): target power in the first k modes", range=[0, 1.02],
                     row=1, col=2)
    fig.update_layout(legend={"orientation": "h", "y": -0.2})
    return fig
