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
    _dashboard_reads(tmp_path / "demo.log")
    for produced in ("curves.pdf", "heatmap.svg", "exponents.png", "predicted.png",
                     "spectra.png", "report/index.html", "report/curves.csv",
                     "report/trials.csv", "report/predictions.csv"):
        assert (tmp_path / produced).stat().st_size > 0, produced


def _dashboard_reads(journal: Path) -> None:
    """What section 9 says: optuna-dashboard opens the journal and names the objective
    (its WSGI app, asked what `optuna-dashboard demo.log` would serve)."""
    import json
    from wsgiref.util import setup_testing_defaults

    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna_dashboard import wsgi

    app = wsgi(JournalStorage(JournalFileBackend(str(journal))))

    def get(path: str) -> dict:
        environ = {"PATH_INFO": path}
        setup_testing_defaults(environ)
        return json.loads(b"".join(app(environ, lambda *a: None)))

    (summary,) = get("/api/studies")["study_summaries"]
    assert summary["study_name"] == "demo"
    assert get(f"/api/studies/{summary['study_id']}")["objective_names"] == ["aulc"]


def test_the_scale_out_recipes_parse_and_their_commands_pass_a_dry_run(tmp_path):
    """docs/examples: each recipe is valid (bash -n, YAML), and every dmisearch command in
    it, with its variables filled in, passes --dry-run against a real storage."""
    import yaml

    examples = ROOT / "docs" / "examples"
    files = sorted(examples.iterdir())
    assert {f.name for f in files} == {"slurm_array.sbatch", "kubernetes_job.yaml",
                                       "ssh_workers.sh"}
    (job,) = yaml.safe_load_all((examples / "kubernetes_job.yaml").read_text())
    assert job["kind"] == "Job" and job["spec"]["completionMode"] == "Indexed"
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    for f in files:
        text = f.read_text() if f.suffix != ".yaml" else script
        check = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
        assert check.returncode == 0, (f.name, check.stderr)
        commands = re.findall(r"dmisearch (?:run|worker) [^\n;]*?(?=\s*(?:\\|>|$|\n))", text)
        assert commands, f.name
        (tmp_path / "studies").mkdir(exist_ok=True)
        shutil.copy(ROOT / "studies" / "quickstart.toml", tmp_path / "studies")
        env = dict(os.environ, STUDY="studies/quickstart.toml",
                   DB_URL=f"journal:{tmp_path / 'journal.log'}", THREADS="1",
                   DIR=str(tmp_path),
                   PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        for cmd in commands:
            cmd = cmd.replace("'", "").rstrip('"')  # the ssh recipe quotes for the remote shell
            res = subprocess.run(f"{cmd} --dry-run", shell=True, cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=300)
            assert res.returncode == 0 and "dry run:" in res.stdout, (f.name, cmd, res.stderr)
