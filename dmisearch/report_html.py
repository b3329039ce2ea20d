"""The report's HTML: styles, the page's script, and its tables.

Tables fit the window (``width: 100%``, long values wrap anywhere), numbers are shown with
one number of decimals per column (:func:`dmisearch.board.decimals`), missing values as
``-``, and a click on a column header sorts the rows (:data:`SCRIPT`, a few lines of
vanilla JavaScript: nothing is fetched). The same script highlights a triplet's curves
when its line or legend entry is clicked, and marks on ``<body>`` what the rendering test
reads back (figures drawn, script errors, the page's width, resources from the network).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from dmisearch import board as boardfmt

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 80em;
       color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; margin-top: 2em;
       border-bottom: 1px solid #ddd; } h3 { font-size: 1.05em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; width: 100%;
        table-layout: auto; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.45em; text-align: left;
         vertical-align: top; overflow-wrap: anywhere; }
.wrap { overflow-wrap: anywhere; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th.sortable { cursor: pointer; user-select: none; }
th.sortable::after { content: " \\2195"; color: #aaa; }
th[aria-sort="ascending"]::after { content: " \\25B2"; color: #333; }
th[aria-sort="descending"]::after { content: " \\25BC"; color: #333; }
pre { background: #f7f7f7; padding: 0.75em; font-size: 0.8em; white-space: pre-wrap;
      overflow-wrap: anywhere; }
details { margin: 0.3em 0; } summary { cursor: pointer; overflow-wrap: anywhere; }
.figure { width: 100%; margin: 0.5em 0 1.5em; }
.muted { color: #666; } .summary { font-size: 1.05em; }
nav a { margin-right: 0.8em; white-space: nowrap; }
"""

SCRIPT = """
let errors = 0;
window.addEventListener("error", () => { errors += 1; }, true);

function sortKey(td) {
  const v = td.dataset.sort !== undefined ? td.dataset.sort : td.textContent.trim();
  if (v === "" || v === "-") return null;
  const x = Number(v);
  return td.dataset.sort !== undefined && !Number.isNaN(x) ? x : v;
}
function sortBy(th) {
  const table = th.closest("table"), body = table.tBodies[0];
  const col = Array.from(th.parentNode.children).indexOf(th);
  const asc = th.getAttribute("aria-sort") !== "ascending";
  table.querySelectorAll("th").forEach(h => h.removeAttribute("aria-sort"));
  th.setAttribute("aria-sort", asc ? "ascending" : "descending");
  const rows = Array.from(body.rows).map(r => [sortKey(r.children[col]), r]);
  rows.sort(([a], [b]) => {
    if (a === null || b === null) return (a === null) - (b === null);  // missing last
    const d = typeof a === "number" && typeof b === "number" ? a - b
      : String(a).localeCompare(String(b), undefined, {numeric: true});
    return asc ? d : -d;
  });
  rows.forEach(([, r]) => body.appendChild(r));
}
document.addEventListener("click", e => {
  const th = e.target.closest("th.sortable");
  if (th) sortBy(th);
});
document.addEventListener("keydown", e => {
  const th = e.target.closest && e.target.closest("th.sortable");
  if (th && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); sortBy(th); }
});

// Clicking a line or its legend entry highlights that triplet; clicking it again, all.
function highlight(gd, group) {
  const key = !group || gd.dataset.highlighted === group ? "" : group;
  gd.dataset.highlighted = key;
  const keep = t => !key || t.legendgroup === key || t.legendgroup === "reference";
  Plotly.restyle(gd, {opacity: gd.data.map(t => keep(t) ? 1 : 0.15)});
}
function interactive() {
  document.querySelectorAll(".highlightable .plotly-graph-div").forEach(gd => {
    gd.on("plotly_click", ev => highlight(gd, ev.points[0].data.legendgroup));
    gd.on("plotly_legendclick", ev => {
      highlight(gd, ev.data[ev.curveNumber].legendgroup);
      return false;  // highlight instead of hiding (double-click still isolates)
    });
  });
}

window.addEventListener("load", () => {
  interactive();
  const figs = Array.from(document.querySelectorAll(".plotly-graph-div"));
  const drawn = figs.filter(f => f.querySelector(".main-svg")).length;
  const remote = performance.getEntriesByType("resource")
    .filter(r => /^(https?|wss?):/.test(r.name)).length;
  const d = document.body.dataset;
  d.figures = String(figs.length);
  d.figuresDrawn = String(drawn);
  d.errors = String(errors);
  d.remote = String(remote);
  d.scrollWidth = String(document.documentElement.scrollWidth);
  d.innerWidth = String(window.innerWidth);
});
"""

#: What each objective is, for the page's summary.
OBJECTIVES = {"aulc": "area under the log learning curve",
              "final_error": "test error at the largest training size",
              "n_to_target": "training samples to reach the target error"}
#: Trial states in the order the summary counts them.
STATES = (("COMPLETE", "complete"), ("PRUNED", "pruned"), ("FAIL", "failed"),
          ("RUNNING", "running"), ("WAITING", "waiting"))
#: Failed trials listed with their traceback (the rest: trials.csv and optuna-dashboard).
MAX_TRACEBACKS = 100


def esc(v: Any) -> str:
    return html.escape("-" if boardfmt.missing(v) else str(v))


#: Words longer than this may break anywhere (class ``wrap``), so that a table fits.
LONG_WORD = 16


def td(text: str, title: str = "") -> str:
    """A text cell; one holding a long word may break it anywhere."""
    long = any(len(w) > LONG_WORD for w in text.split())
    attrs = (' class="wrap"' if long else "") + (f' title="{html.escape(title)}"'
                                                 if title else "")
    return f"<td{attrs}>{esc(text)}</td>"


def table(df: pd.DataFrame, *, sortable: bool = False, numeric: Sequence[str] = (),
          table_id: str | None = None) -> str:
    """``df`` as an HTML table: ``-`` for missing values, floats with the column's
    decimals, ``numeric`` columns right-aligned and sorted as numbers."""
    if df.empty:
        return '<p class="muted">none</p>'
    cls = ' class="sortable" tabindex="0" title="click to sort"' if sortable else ""
    head = "".join(f"<th{cls}>{esc(c)}</th>" for c in df.columns)
    places = {c: boardfmt.decimals(df[c]) for c in df.columns
              if pd.api.types.is_float_dtype(df[c])}
    rows = []
    for rec in df.itertuples(index=False):
        cells = []
        for col, v in zip(df.columns, rec, strict=True):
            text = boardfmt.fixed(v, places[col]) if col in places else esc(v)
            if col in numeric or col in places:
                key = "" if boardfmt.missing(v) else str(v)
                cells.append(f'<td class="num" data-sort="{key}">{text}</td>')
            else:
                cells.append(td("-" if boardfmt.missing(v) else str(v)))
        rows.append(f"<tr>{''.join(cells)}</tr>")
    ident = f' id="{table_id}"' if table_id else ""
    return (f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}"
            "</tbody></table>")


def _cells(values: Sequence[Any], places: int) -> list[tuple[str, str]]:
    """(shown text, sort key) of numbers with ``places`` decimals."""
    return [(boardfmt.fixed(v, places), "" if boardfmt.missing(v) else repr(float(v)))
            for v in values]


def edges(found: Sequence[Any]) -> str:
    """The best configurations at the edge of their search range (``dmisearch.edges``),
    under the leaderboard ("" when none)."""
    if not found:
        return ""
    items = "".join(f"<li>{esc(e.advice())}</li>" for e in found)
    return (f'<div id="edges"><p><strong>At the edge of the search range</strong>: the range, '
            f"not the data, may have set these triplets' scores.</p><ul>{items}</ul></div>")


def leaderboard(board: pd.DataFrame, objective: str) -> str:
    """The leaderboard: sortable, formatted, the objective named in its header."""
    if board.empty:
        return '<p class="muted">no trials yet</p>'
    places = boardfmt.decimals(list(board["score"]) + list(board["confirmed_score"]))
    score = f"{objective} (lower is better)"
    cols: dict[str, list[tuple[str, str | None]]] = {
        "#": [(boardfmt.fixed(r, 0), "" if boardfmt.missing(r) else str(int(r)))
              for r in board["rank"]],
        "triplet (data | model | algorithm)": [
            (f"{d} | {m} | {a}", None) for d, m, a in
            zip(board["data"], board["model"], board["algorithm"], strict=True)],
    }
    if board["study"].nunique() > 1:
        cols["study"] = [(str(s), None) for s in board["study"]]
    cols[score] = _cells(board["score"], places)
    cols["95% CI"] = [(boardfmt.interval(lo, hi, n, places), None) for lo, hi, n in
                      zip(board["ci_low"], board["ci_high"], board["ci_note"], strict=True)]
    if board["confirmed_trial"].notna().any():
        cols[f"confirmed {objective}"] = _cells(board["confirmed_score"], places)
        cols["confirmed 95% CI"] = [
            (boardfmt.interval(lo, hi, n, places), None) for lo, hi, n in zip(
                board["confirmed_low"], board["confirmed_high"], board["confirmed_note"],
                strict=True)]
    cols["p vs next"] = [("-" if boardfmt.missing(p) else f"{p:.2g}" + (" *" if b else ""),
                          "" if boardfmt.missing(p) else repr(float(p)))
                         for p, b in zip(board["p_vs_next"], board["beats_next"], strict=True)]
    cols[boardfmt.curve_header(board)] = [(boardfmt.curve_ends(c).replace("→", " → "), None)
                                          for c in board["curve"]]
    cols["trials done / pruned / failed"] = [
        (f"{c} / {p} / {f}", None) for c, p, f in
        zip(board["complete"], board["pruned"], board["failed"], strict=True)]
    cols["best trial"] = [(boardfmt.fixed(t, 0), "" if boardfmt.missing(t) else str(int(t)))
                          for t in board["trial"]]
    cols["hyperparameters"] = [(boardfmt.short_params(p), None) for p in board["params"]]
    return _sortable(cols, board["params"])


def _sortable(cols: Mapping[str, list[tuple[str, str | None]]],
              params: Sequence[Mapping[str, Any]]) -> str:
    head = "".join(f'<th class="sortable" tabindex="0" title="click to sort">{esc(c)}</th>'
                   for c in cols)
    rows = []
    for i, full in enumerate(params):
        cells = []
        for name, values in cols.items():
            text, key = values[i]
            if key is not None:
                cells.append(f'<td class="num" data-sort="{esc(key) if key else ""}">'
                             f"{esc(text)}</td>")
            elif name == "hyperparameters":
                cells.append(td(text, " ".join(f"{k}={v}" for k, v in full.items())))
            else:
                cells.append(td(text))
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (f'<table id="leaderboard"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def objective_text(scorers: Sequence[Any]) -> str:
    """``objective aulc (area under the log learning curve, lower is better) · test
    error: mse``; several when the studies differ."""
    objectives, metrics = [], []
    for sc in scorers:
        name = sc.objective.name
        what = OBJECTIVES.get(name, name)
        if name == "n_to_target":
            what = f"training samples to reach test error {sc.objective.target:g}"
        objectives.append(f"{name} ({what}, lower is better)")
        metrics.append(sc.metric)
    objectives, metrics = list(dict.fromkeys(objectives)), list(dict.fromkeys(metrics))
    return (f"objective {'; '.join(objectives)} · test error: "
            f"{', '.join(m.replace('_', ' ') for m in metrics)}")


def summary(trials: pd.DataFrame, scorers: Sequence[Any]) -> str:
    """``15 trials: 14 complete, 1 failed · objective aulc (...) · test error: mse``."""
    if trials.empty:
        return f"0 trials · {objective_text(scorers)}"
    shown = trials[trials["kind"] != "duplicate"]
    counts = shown["state"].value_counts()
    parts = [f"{int(counts[s])} {word}" for s, word in STATES if counts.get(s, 0)]
    parts += [f"{int(n)} {s.lower()}" for s, n in counts.items()
              if s not in dict(STATES)]
    text = f"{len(shown)} trial{'s' if len(shown) != 1 else ''}: {', '.join(parts)}"
    confirmations = int((shown["kind"] == "confirmation").sum())
    if confirmations:
        text += f" ({confirmations} of them confirmations on fresh seeds)"
    repeats = len(trials) - len(shown)
    if repeats:
        text += f"; {repeats} repeated proposals answered from earlier trials"
    return f"{text} · {objective_text(scorers)}"


def anchor(study: str, number: int) -> str:
    return f"trial-{''.join(c if c.isalnum() else '-' for c in study)}-{number}"


def failures(studies: Sequence[Any]) -> str:
    """Failed trials by kind (count, first message, a link to the first one), then each
    failed trial's error and traceback in a ``<details>`` block."""
    from dmisearch.trialinfo import is_duplicate

    kinds, failed = [], []
    for s in studies:
        trials = s.get_trials(deepcopy=False)
        kinds += [{**k, "study": s.study_name} for k in boardfmt.failures(trials)]
        failed += [(s.study_name, t) for t in trials
                   if t.state.name == "FAIL" and not is_duplicate(t)]
    if not failed:
        return '<p class="muted">No trial failed.</p>'
    rows = "".join(
        f"<tr><td>{esc(k['study'])}</td><td>{esc(k['kind'])}</td>"
        f'<td class="num">{k["count"]}</td><td><a href="#{anchor(k["study"], k["first_trial"])}'
        f'">trial {k["first_trial"]}</a></td><td>{esc(k["message"])}</td></tr>'
        for k in kinds)
    parts = ['<table id="failure-kinds"><thead><tr><th>study</th><th>kind</th>'
             "<th>trials</th><th>first</th><th>first message</th></tr></thead>"
             f"<tbody>{rows}</tbody></table>"]
    for study, t in failed[:MAX_TRACEBACKS]:
        a = t.user_attrs
        what = f"{a.get('model', '?')} / {a.get('algorithm', '?')}"
        tb = a.get("traceback") or "(no traceback stored)"
        parts.append(f'<details id="{anchor(study, t.number)}" class="failure"><summary>'
                     f"{esc(study)}, trial {t.number} ({esc(what)}): "
                     f"{esc(a.get('error', 'unknown error'))}</summary>"
                     f"<pre>{html.escape(str(tb))}</pre></details>")
    if len(failed) > MAX_TRACEBACKS:
        parts.append(f'<p class="muted">{len(failed) - MAX_TRACEBACKS} more failed trials: '
                     "their errors are in trials.csv, their tracebacks in the trials' "
                     "user attribute 'traceback'.</p>")
    return "\n".join(parts)


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts (and lists holding dicts) as dotted keys; lists of plain values as
    ``a, b, c``; missing as ``-``."""
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: "-"}
    if isinstance(value, (list, tuple)):
        if any(isinstance(v, (Mapping, list, tuple)) for v in value):
            out = {}
            for i, v in enumerate(value):
                out.update(flatten(v, f"{prefix}.{i}"))
            return out or {prefix: "-"}
        return {prefix: ", ".join(_scalar(v) for v in value) or "(none)"}
    return {prefix: _scalar(value)}


def _scalar(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return json.dumps(v) if isinstance(v, bool) else str(v)


def settings(studies: Sequence[Any], skip: Sequence[str]) -> str:
    """The studies' settings (identity, search, source...) as one readable table: a row
    per dotted key, a column per study."""
    from dmisearch.runner import SEARCH_ATTR
    from dmisearch.trialinfo import IDENTITY_ATTR

    flat = {}
    for s in studies:
        attrs = {k: v for k, v in s.user_attrs.items()
                 if (k.startswith("dmisearch") or k == "source") and k not in skip}
        ordered = {"identity": attrs.pop(IDENTITY_ATTR, {}),
                   "search": attrs.pop(SEARCH_ATTR, {}),
                   **{k.removeprefix("dmisearch_"): v for k, v in attrs.items()}}
        flat[s.study_name] = flatten(ordered)
    keys = list(dict.fromkeys(k for f in flat.values() for k in f))
    df = pd.DataFrame({"setting": keys,
                       **{name: [f.get(k, "-") for k in keys] for name, f in flat.items()}})
    return table(df, table_id="settings")
