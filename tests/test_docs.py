"""Every snippet of docs/analysis.md runs, in order, as a user would run it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_analysis_guide_runs(tmp_path, monkeypatch):
    text = (ROOT / "docs" / "analysis.md").read_text()
    blocks = re.findall(r"```(bash|python)\n(.*?)```", text, re.S)
    assert len(blocks) >= 8
    (tmp_path / "studies").mkdir()
    shutil.copy(ROOT / "studies" / "demo.toml", tmp_path / "studies")
    monkeypatch.chdir(tmp_path)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}"
                                f"{os.environ.get('PATH', '')}")
    namespace: dict = {}
    for lang, code in blocks:
        if lang == "bash":
            res = subprocess.run(code, shell=True, capture_output=True, text=True, env=env,
                                 timeout=600)
            assert res.returncode == 0, f"{code}\n{res.stdout}\n{res.stderr}"
        else:
            exec(compile(code, "docs/analysis.md", "exec"), namespace)  # noqa: S102
    for produced in ("curves.pdf", "heatmap.svg", "exponents.png", "report/index.html",
                     "report/curves.csv", "report/trials.csv"):
        assert (tmp_path / produced).stat().st_size > 0, produced
