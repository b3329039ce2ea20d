"""dmisearch report: files, and the HTML page rendered in headless Chromium."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from conftest import TINY_STUDY, dump_toml

from dmisearch.analysis import Results
from dmisearch.report import write_report
from dmisearch.runner import run_study
from dmisearch.study_file import build_spec

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def two_studies(registry, tmp_path_factory):
    """digits-like comparison: one data set and its permuted copy, in a journal file."""
    tmp = tmp_path_factory.mktemp("report")
    storage = f"journal:{tmp / 'j.log'}"
    files = []
    for transforms in ([], ["permute"]):
        doc = copy.deepcopy(TINY_STUDY)
        doc["study"].update(name=f"tiny{len(transforms)}", storage=storage)
        doc["data"]["transforms"] = transforms
        doc["search"]["n_trials"] = 3
        run_study(build_spec(doc, registry))
        path = tmp / f"tiny{len(transforms)}.toml"
        path.write_text(dump_toml(doc))
        files.append(path)
    return tmp, storage, files


def test_report_files_hold_the_dataframes(two_studies, tmp_path):
    _, storage, files = two_studies
    res = Results.load(*files)
    index = write_report(res, tmp_path / "out")
    out = index.parent
    assert {p.name for p in out.iterdir()} >= {"index.html", "curves.csv", "curves.parquet",
                                               "trials.csv", "leaderboard.csv"}
    curves = pd.read_csv(out / "curves.csv")
    assert len(curves) == len(res.curves())
    assert pd.read_parquet(out / "curves.parquet")["test_error"].tolist() == pytest.approx(
        res.curves()["test_error"].tolist())
    trials = pd.read_csv(out / "trials.csv")
    assert sorted(trials["study"].unique()) == ["tiny0", "tiny1"] and len(trials) == 6
    page = index.read_text()
    assert "http://" not in page and "https://" not in page  # nothing to fetch
    for needle in ("Leaderboard", "Learning curves", "Data sets side by side",
                   "Scaling exponents", "Plugins", "Environment", "teacher+permute",
                   "builtin-architectures"):
        assert needle in page, needle
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,', page)) == 5


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run "
                                              "installs it)")
def test_report_renders_in_headless_chromium(two_studies, tmp_path):
    _, storage, files = two_studies
    res = subprocess.run([sys.executable, "-m", "dmisearch", "report", *map(str, files),
                          "--out", str(tmp_path / "rep")], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    index = tmp_path / "rep" / "index.html"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom",
           index.as_uri()]
    shown = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", shown.stdout).group(1)
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body))
    assert attrs["figures"] == "5" and attrs["figures-loaded"] == "5", attrs
    assert attrs["errors"] == "0", attrs
    console = [ln for ln in shown.stderr.splitlines() if "CONSOLE" in ln]
    assert not console, console
    assert shown.stdout.count("<table") >= 3  # leaderboard, plugins, environment
    assert "tiny0" in shown.stdout and "tiny1" in shown.stdout
