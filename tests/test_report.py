"""dmisearch report: files, the page's contents, and the page rendered and clicked in
headless Chromium (Debian's package; .ci/run installs it)."""

from __future__ import annotations

import copy
import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY_STUDY, dump_toml

from dmisearch import report_figures, report_html
from dmisearch.analysis import Results
from dmisearch.report import write_report
from dmisearch.runner import run_study
from dmisearch.study_file import build_spec

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not "
                                    "installed (.ci/run installs it)")
#: The page must open offline and stay small enough to mail.
MAX_BYTES = 10_000_000


@pytest.fixture(scope="module")
def two_studies(test_registry, tmp_path_factory):
    """digits-like comparison: one data set and its permuted copy, in a journal file; the
    first also tries an algorithm that always fails (the test plugin's ``fail_test``)."""
    tmp = tmp_path_factory.mktemp("report")
    storage = f"journal:{tmp / 'j.log'}"
    files = []
    for transforms in ([], ["permute"]):
        doc = copy.deepcopy(TINY_STUDY)
        doc["study"].update(name=f"tiny{len(transforms)}", storage=storage)
        doc["data"]["transforms"] = transforms
        doc["search"]["n_trials"] = 3
        if not transforms:
            doc["search"]["algorithms"] = ["sgd", "fail_test"]
        run_study(build_spec(doc, test_registry))
        path = tmp / f"tiny{len(transforms)}.toml"
        path.write_text(dump_toml(doc))
        files.append(path)
    return tmp, storage, files


@pytest.fixture(scope="module")
def report(two_studies, tmp_path_factory):
    """The report as `dmisearch report` writes it: (index.html, its text)."""
    _, _, files = two_studies
    out = tmp_path_factory.mktemp("rep")
    res = subprocess.run([sys.executable, "-m", "dmisearch", "report", *map(str, files),
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    index = out / "index.html"
    return index, index.read_text()


def section(page: str, ident: str) -> str:
    """The page from the ``<h2 id=ident>`` to the next ``<h2``."""
    start = page.index(f'<h2 id="{ident}">')
    end = page.find("<h2", start + 1)
    return page[start:end if end > 0 else len(page)]


def test_report_files_hold_the_dataframes(two_studies, report):
    _, _, files = two_studies
    res = Results.load(*files)
    out = report[0].parent
    assert {p.name for p in out.iterdir()} == {"index.html", "curves.csv", "curves.parquet",
                                               "trials.csv", "leaderboard.csv"}
    curves = pd.read_csv(out / "curves.csv")
    assert len(curves) == len(res.curves())
    assert pd.read_parquet(out / "curves.parquet")["test_error"].tolist() == pytest.approx(
        res.curves()["test_error"].tolist())
    trials = pd.read_csv(out / "trials.csv")
    assert sorted(trials["study"].unique()) == ["tiny0", "tiny1"]
    assert (trials["state"] == "COMPLETE").sum() == 6 and (trials["state"] == "FAIL").any()
    page = report[1]
    for needle in ("Leaderboard", "Learning curves", "Scaling exponents", "Failures",
                   "Plugins", "Environment", "teacher+permute", "builtin-architectures"):
        assert needle in page, needle


def test_the_page_is_self_contained_and_its_size_is_bounded(report):
    index, page = report
    size = index.stat().st_size
    print(f"report size: {size / 1e6:.2f} MB ({size} bytes)")
    assert size < MAX_BYTES
    # no script, style, image or frame from the network: every <script> is inline
    remote = re.findall(r"<(?:script|link|img|iframe|source)\b[^>]*\b(?:src|href)\s*=\s*"
                        r"[\"']?(?:https?:)?//", page, re.I)
    assert not remote, remote
    assert not re.search(r"<script\b[^>]*\bsrc\s*=", page, re.I)
    assert page.count("* plotly.js v") == 1  # Plotly's bundle, inlined once
    figures = re.findall(r'<div id="(fig-[a-z0-9-]+)" class="plotly-graph-div"', page)
    assert figures == ["fig-curves", "fig-heat-0", "fig-heat-1", "fig-exponents"], figures


def test_summary_and_leaderboard_say_what_they_show(report):
    page = report[1]
    summary = re.search(r'<p class="summary">(.*?)</p>', page).group(1)
    assert html.unescape(summary) == (
        "9 trials: 6 complete, 3 failed · objective aulc (area under the log learning "
        "curve, lower is better) · test error: mse")
    board = section(page, "leaderboard")
    assert "&lt;NA&gt;" not in board and "<NA>" not in board and ">nan<" not in board
    heads = [html.unescape(h) for h in re.findall(r"<th\b[^>]*>(.*?)</th>", board)]
    assert heads[3] == "aulc (lower is better)", heads
    assert all('class="sortable"' in th for th in re.findall(r"<th\b[^>]*>", board))
    rows = re.findall(r"<tr>(.*?)</tr>", board.split("<tbody>")[1])
    scores = [re.findall(r"<td[^>]*>(.*?)</td>", r)[3] for r in rows]
    shown = [s for s in scores if s != "-"]
    assert len(shown) == 4 and "-" in scores  # the failed-only pairs show "-"
    assert len({len(s.split(".")[1]) for s in shown}) == 1, scores  # one format
    top = max(shown, key=lambda s: abs(float(s)))  # three significant digits
    assert len(top.lstrip("-").replace(".", "").lstrip("0")) == 3, scores
    # the stylesheet makes tables fit the window: full width, long words may break
    assert re.search(r"table \{[^}]*width: 100%", page)
    assert re.search(r"\.wrap \{ overflow-wrap: anywhere", page)


def test_failed_trials_show_their_reason_and_traceback(report):
    failures = section(report[1], "failures")
    kinds = failures.split("</table>")[0]
    assert "RuntimeError" in kinds and "RuntimeError: plugin exploded" in kinds
    first = re.search(r'href="#(trial-tiny0-(\d+))"', kinds)
    assert first, kinds
    block = re.search(rf'<details id="{first.group(1)}" class="failure"><summary>(.*?)'
                      r"</summary><pre>(.*?)</pre></details>", failures, re.S)
    assert block, failures[:2000]
    assert "plugin exploded" in block.group(1) and f"trial {first.group(2)}" in block.group(1)
    traceback = html.unescape(block.group(2))
    assert traceback.startswith("Traceback") and "fit_predict" in traceback
    assert len(re.findall(r'<details id="trial-tiny0-\d+" class="failure">', failures)) == 3


def test_settings_are_a_table_not_json(report):
    settings = section(report[1], "settings")
    assert '<table id="settings">' in settings and "<pre>" not in settings
    assert not re.search(r"[{}]\s*&quot;|&quot;\w+&quot;:", settings)  # no JSON dump
    rows = {html.unescape(m[0]): [html.unescape(v) for v in m[1:]] for m in re.findall(
        r"<tr><td[^>]*>([^<]*)</td><td[^>]*>([^<]*)</td><td[^>]*>([^<]*)</td></tr>",
        settings)}
    assert rows["identity.curve.sizes"] == ["8, 16", "8, 16"]
    assert rows["identity.objective.name"] == ["aulc", "aulc"]
    assert rows["identity.data.label"] == ["teacher", "teacher+permute"]
    assert rows["search.pairs"][0] == "fcn/sgd, fcn/fail_test, cnn_gap/sgd, cnn_gap/fail_test"


def test_settings_flatten_nested_values_and_drop_predictions():
    flat = report_html.flatten({"a": {"b": [1, 2], "c": {"d": None}},
                                "t": [{"name": "permute"}], "e": [], "f": True})
    assert flat == {"a.b": "1, 2", "a.c.d": "-", "t.0.name": "permute", "e": "(none)",
                    "f": "true"}

    class Study:
        study_name = "s"
        user_attrs = {"dmisearch_identity": {"curve": {"seeds": [0, 1]}},
                      "dmisearch_predictions": {"records": [{"bulky": 1}]}}

    got = report_html.settings([Study()], ["dmisearch_predictions"])
    assert "identity.curve.seeds" in got and "0, 1" in got
    assert "predictions" not in got and "bulky" not in got


def test_the_file_list_names_only_files_written(two_studies, tmp_path, monkeypatch):
    _, _, files = two_studies
    res = Results.load(*files)

    def no_engine(*args, **kwargs):
        raise ImportError("Unable to find a usable engine")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", no_engine)
    index = write_report(res, tmp_path / "out")
    written = {p.name for p in index.parent.iterdir()} - {"index.html"}
    assert written == {"curves.csv", "trials.csv", "leaderboard.csv", "curves.parquet.txt"}
    listed = set(re.findall(r'<a href="([^"#]+)">', section(index.read_text(), "files")))
    assert listed == written


def test_heatmap_cells_without_a_complete_trial_say_why(two_studies):
    _, _, files = two_studies
    board = Results.load(*files).leaderboard()
    fig = report_figures.heatmap(board, "teacher", "aulc")
    texts = {(a.y, a.x): a.text for a in fig.layout.annotations}
    assert texts[("fcn", "fail_test")] == "failed" and texts[("cnn_gap", "fail_test")] == (
        "failed")
    assert re.fullmatch(r"-?\d\.\d+", texts[("fcn", "sgd")]), texts
    pruned = board.copy()
    gone = (pruned["data"] == "teacher") & (pruned["model"] == "fcn") & (
        pruned["algorithm"] == "sgd")
    pruned.loc[gone, ["score", "complete", "pruned"]] = [float("nan"), 0, 2]
    untried = pruned[(pruned["model"] != "cnn_gap") | (pruned["algorithm"] != "sgd")]
    texts = {(a.y, a.x): a.text for a in report_figures.heatmap(
        untried, "teacher", "aulc").layout.annotations}
    assert texts[("fcn", "sgd")] == "pruned" and texts[("cnn_gap", "sgd")] == "not tried"


# --------------------------------------------------------------------------------------------
# in headless Chromium
# --------------------------------------------------------------------------------------------


def chromium(url: str, tmp_path, width: int, *mode: str) -> subprocess.CompletedProcess:
    """Chromium, offline, at ``width`` px: ``mode`` is --dump-dom or --screenshot=PATH."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
           "--host-resolver-rules=MAP * ~NOTFOUND", "--enable-logging=stderr", "--v=0",
           "--hide-scrollbars", f"--window-size={width},3000", "--virtual-time-budget=10000",
           *mode, url]
    shown = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    return shown


def body_data(dom: str) -> dict[str, str]:
    body = re.search(r"<body([^>]*)>", dom).group(1)
    return {k: html.unescape(v) for k, v in re.findall(r'data-([a-z-]+)="([^"]*)"', body)}


@needs_chromium
@pytest.mark.parametrize("width", [1400, 800])
def test_the_page_renders_offline_and_fits_the_window(report, tmp_path, width):
    index, _ = report
    shown = chromium(index.as_uri(), tmp_path, width, "--dump-dom")
    got = body_data(shown.stdout)
    assert got["figures"] == "4" and got["figures-drawn"] == "4", got
    assert got["errors"] == "0" and got["remote"] == "0", got
    assert int(got["scroll-width"]) <= int(got["inner-width"]) == width, got  # no sideways
    console = [ln for ln in shown.stderr.splitlines() if "CONSOLE" in ln]
    assert not console, console
    assert "tiny0" in shown.stdout and "tiny1" in shown.stdout
    png = tmp_path / f"report-{width}.png"
    chromium(index.as_uri(), tmp_path, width, f"--screenshot={png}")
    assert png.stat().st_size > 10_000
    print(f"screenshot: {png}")


#: Appended to a copy of the page: clicks a legend entry, a curve and column headers as a
#: user would (mouse events at their place on the page) and writes what changed into
#: <body data-result>.
CLICKS = """
<script>
const after = ms => new Promise(ok => setTimeout(ok, ms));
const opacities = gd => gd.data.map(t => [t.legendgroup, t.opacity === undefined ? 1 : t.opacity,
                                          t.visible === undefined ? true : t.visible]);
function mouse(el, x, y, ...types) {
  const o = {bubbles: true, cancelable: true, clientX: x, clientY: y, button: 0, view: window};
  types.forEach(t => el.dispatchEvent(new MouseEvent(t, o)));
}
function column(name) {
  const heads = Array.from(document.querySelectorAll("#leaderboard th"));
  const i = heads.findIndex(h => h.textContent.startsWith(name));
  return [heads[i], () => Array.from(document.querySelectorAll("#leaderboard tbody tr"))
                               .map(r => r.children[i].textContent)];
}
async function run() {
  await after(300);
  const out = {}, gd = document.getElementById("fig-curves");
  // a legend entry
  const entry = gd.querySelectorAll(".legend .traces")[0];
  out.legendName = entry.querySelector(".legendtext").textContent;
  entry.scrollIntoView();
  let r = entry.querySelector(".legendtoggle").getBoundingClientRect();
  mouse(entry.querySelector(".legendtoggle"), r.x + 4, r.y + 4, "mousedown", "mouseup");
  await after(300);
  out.afterLegend = opacities(gd);
  // a curve: its last line's first point, hovered then clicked where it is drawn
  const k = gd.data.map(t => t.mode).lastIndexOf("lines+markers");
  const t = gd._fullData[k], fl = gd._fullLayout;
  const xa = fl["xaxis" + t.xaxis.slice(1)], ya = fl["yaxis" + t.yaxis.slice(1)];
  gd.scrollIntoView();
  const box = gd.getBoundingClientRect();
  const x = box.left + xa._offset + xa.l2p(xa.d2l(t.x[0]));
  const y = box.top + ya._offset + ya.l2p(ya.d2l(t.y[0]));
  const target = document.elementFromPoint(x, y);
  mouse(target, x, y, "mousemove");
  await after(300);
  out.hover = gd.querySelector(".hoverlayer").textContent;
  mouse(target, x, y, "mousedown", "mouseup", "click");
  await after(300);
  out.clicked = t.legendgroup;
  out.afterClick = opacities(gd);
  // column headers
  const [score, scores] = column("aulc");
  out.rowsBefore = scores();
  score.click(); out.ascending = scores();
  score.click(); out.descending = scores();
  const [triplet, triplets] = column("triplet");
  triplet.click(); out.triplets = triplets();
  document.body.dataset.result = JSON.stringify(out);
}
window.addEventListener("load", () => run().catch(e => {
  document.body.dataset.result = JSON.stringify({error: String(e.stack)});
}));
</script>
"""


@needs_chromium
def test_clicks_highlight_curves_and_sort_the_leaderboard(two_studies, report, tmp_path):
    index, page = report
    clicked = index.parent / "clicked.html"
    clicked.write_text(page.replace("</body>", CLICKS + "</body>"))
    try:
        got = json.loads(body_data(chromium(clicked.as_uri(), tmp_path, 1400,
                                            "--dump-dom").stdout)["result"])
    finally:
        clicked.unlink()
    assert "error" not in got, got["error"]

    def highlighted(state):
        assert all(visible is True for _, _, visible in state), state  # none hidden
        lit = {g for g, o, _ in state if o == 1 and g != report_figures.KEEP}
        faint = {g for g, o, _ in state if o == report_figures.FAINT}
        assert all(o == 1 for g, o, _ in state if g == report_figures.KEEP)
        return lit, faint

    lit, faint = highlighted(got["afterLegend"])
    assert len(lit) == 1 and len(faint) == 3, got["afterLegend"]
    model_algo = got["legendName"].split(" (")[0].split(" / ")
    assert all(part in next(iter(lit)) for part in model_algo), (lit, got["legendName"])
    lit, faint = highlighted(got["afterClick"])
    assert lit == {got["clicked"]} and len(faint) == 3, got["afterClick"]
    # the hover names the trial, the seeds' range and the hyperparameters
    _, _, files = two_studies
    study, data, model, algo = got["clicked"].split(" | ")
    best = Results.load(*files).best_trials()[(study, (data, model, algo))]
    assert f"trial {best.number}, n = 8" in got["hover"], got["hover"]
    assert "seeds:" in got["hover"] and "mom=" in got["hover"], got["hover"]
    # sorting: by score both ways (missing last), then by triplet
    def numbers(col):
        return [float(s) for s in col if s != "-"]

    assert numbers(got["ascending"]) == sorted(numbers(got["rowsBefore"]))
    assert numbers(got["descending"]) == sorted(numbers(got["rowsBefore"]), reverse=True)
    assert got["descending"][-2:] == ["-", "-"] and got["descending"] != got["ascending"]
    assert got["triplets"] == sorted(got["triplets"]), got["triplets"]


@pytest.mark.slow
@needs_chromium
def test_the_quickstarts_report_fits_1400_and_800_px(tmp_path):
    """The README's quickstart, run whole as a user would, then its report in Chromium at
    two widths: every figure drawn, nothing loaded from the network, no sideways scroll."""
    from test_cli import cli

    quickstart = tmp_path / "quickstart.toml"  # a copy: its journal goes beside it
    shutil.copy(Path(__file__).resolve().parents[1] / "studies" / "quickstart.toml", quickstart)
    res = cli("run", str(quickstart), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    res = cli("report", str(quickstart), "--out", str(tmp_path / "report"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    index = tmp_path / "report" / "index.html"
    print(f"quickstart report: {index.stat().st_size / 1e6:.1f} MB")
    for width in (1400, 800):
        got = body_data(chromium(index.as_uri(), tmp_path, width, "--dump-dom").stdout)
        assert got["figures"] == got["figures-drawn"] and int(got["figures"]) >= 3, got
        assert got["errors"] == "0" and got["remote"] == "0", got
        assert int(got["scroll-width"]) <= int(got["inner-width"]) == width, got
        png = tmp_path / f"quickstart-{width}.png"
        chromium(index.as_uri(), tmp_path, width, f"--screenshot={png}")
        assert png.stat().st_size > 10_000
        print(f"screenshot: {png}")
