"""The dmisearch command: help, plugin listing, running and resuming, errors and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pytest
from conftest import dump_toml

from dmisearch.analysis import Results
from dmisearch.cli import main
from dmisearch.storage import open_storage

BUILTIN_NAMES = {"fcn", "lcn", "cnn_vec", "cnn_gap", "sgd", "adam", "teacher", "digits",
                 "rotate", "permute", "shift"}


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dmisearch", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize("args", [[], ["run"], ["plugins"], ["worker"], ["rerun"], ["report"],
                                  ["new-plugin"], ["probe"]])
def test_every_command_has_help(args, capsys):
    with pytest.raises(SystemExit) as info:
        main([*args, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: dmisearch" in out and "exit codes" in out


def test_run_help_lists_the_overrides(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    for opt in ("--n-trials", "--timeout", "--storage", "--device", "--seed", "--debug"):
        assert opt in out


def test_plugins_json_lists_every_builtin_with_its_package():
    res = cli("plugins", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    names = {c["name"]: c for c in doc["components"]}
    assert BUILTIN_NAMES <= set(names)
    assert all(names[n]["package"] == "dmisearch" and names[n]["version"] for n in BUILTIN_NAMES)
    assert names["fcn"]["kind"] == "architecture" and names["digits"]["kind"] == "data"
    assert names["sgd"]["params"]["lr"] == 0.05
    assert doc["problems"] == []
    assert {p["name"] for p in doc["plugins"]} >= {"builtin-architectures", "builtin-data"}


def test_plugins_text(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    for title in ("data generators:", "transforms:", "architectures:", "algorithms:"):
        assert title in out
    assert "cnn_gap" in out and "builtin-architectures: loaded" in out


def test_run_prints_leaderboard_and_resumes(tmp_path, tiny_doc):
    study = tmp_path / "tiny.toml"
    study.write_text(dump_toml(tiny_doc))
    storage = f"journal:{tmp_path / 'j.log'}"
    res = cli("run", str(study), "--storage", storage, "--n-trials", "2")
    assert res.returncode == 0, res.stderr
    assert "Leaderboard of study 'tiny'" in res.stdout
    assert "teacher |" in res.stdout and "2 finished trials stored in journal file" in res.stdout
    assert "trial    0" in res.stderr and "Traceback" not in res.stderr
    res = cli("run", str(study), "--storage", storage, "--n-trials", "3", "--seed", "1")
    assert res.returncode == 0, res.stderr
    assert "3 finished trials" in res.stdout and "trial    2" in res.stderr
    assert "trial    0" not in res.stderr  # resumed, not restarted
    # complete: it says so and how to extend it; the same command then trains nothing
    assert "The study is complete; to extend it, run the same command with --n-trials 6" \
        in res.stdout
    res = cli("run", str(study), "--storage", storage, "--n-trials", "3", "--seed", "1")
    assert "trial " not in res.stderr and "The study is complete" in res.stdout


def test_default_storage_follows_the_study_file(tmp_path, tiny_doc, monkeypatch):
    """The embedded journal lives beside the study file: run, resume and report it from
    any folder and reach the same study."""
    monkeypatch.delenv("DMISEARCH_STORAGE", raising=False)
    (tmp_path / "studies").mkdir()
    (tmp_path / "elsewhere").mkdir()
    study = tmp_path / "studies" / "tiny.toml"
    tiny_doc["search"]["n_trials"] = 1
    study.write_text(dump_toml(tiny_doc))
    journal = tmp_path / "studies" / ".dmisearch" / "journal.log"
    res = cli("run", "studies/tiny.toml", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert journal.stat().st_size > 0 and f"journal file {journal}" in res.stdout
    res = cli("run", "../studies/tiny.toml", "--n-trials", "2", cwd=tmp_path / "elsewhere")
    assert res.returncode == 0, res.stderr
    assert "2 finished trials" in res.stdout and "trial    0" not in res.stderr  # resumed
    assert not (tmp_path / "elsewhere" / ".dmisearch").exists()
    res = cli("report", str(study), "--out", "rep", cwd=tmp_path / "elsewhere")
    assert res.returncode == 0, res.stderr
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert len(Results.load("../studies/tiny.toml").trials()) >= 2


def test_a_study_file_storage_path_is_read_from_its_folder(tmp_path, tiny_doc):
    (tmp_path / "s").mkdir()
    tiny_doc["study"]["storage"] = "journal:runs/tiny.log"  # relative to the study file
    tiny_doc["search"]["n_trials"] = 1
    (tmp_path / "s" / "tiny.toml").write_text(dump_toml(tiny_doc))
    res = cli("run", "s/tiny.toml", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "s" / "runs" / "tiny.log").stat().st_size > 0


def test_a_missing_study_names_the_flag_on_the_command_line_and_the_keyword_in_python(
        tmp_path, tiny_doc):
    from dmisearch.errors import StudyNotFoundError

    study = tmp_path / "tiny.toml"
    study.write_text(dump_toml(tiny_doc))
    empty = f"journal:{tmp_path / 'empty.log'}"
    res = cli("report", str(study), "--storage", empty, "--out", str(tmp_path / "r"))
    assert res.returncode == 1
    assert "no study 'tiny'" in res.stderr and "--storage URL" in res.stderr
    assert "storage=" not in res.stderr
    with pytest.raises(StudyNotFoundError, match=r"storage='URL'") as info:
        Results.load(study, storage=empty)
    assert "--storage" not in str(info.value)


def test_bad_study_exits_1_with_one_paragraph_and_no_traceback(tmp_path, tiny_doc, capsys):
    tiny_doc["search"]["models"] = ["fcnn"]
    study = tmp_path / "bad.toml"
    study.write_text(dump_toml(tiny_doc))
    assert main(["run", str(study), "--storage", "memory"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"dmisearch: error: {study}: 1 problem, nothing was run:")
    assert "search.models[0]: unknown architecture 'fcnn' (did you mean 'fcn'?)" in err
    assert "Traceback" not in err
    assert main(["run", str(study), "--storage", "memory", "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "x.toml", "--n-trials", "0"])
    assert info.value.code == 2
    assert "must be >= 1" in capsys.readouterr().err


def test_storage_passwords_are_never_printed(tmp_path, tiny_doc, capsys):
    study = tmp_path / "tiny.toml"
    study.write_text(dump_toml(tiny_doc))
    url = "postgresql://bob:hunter2@127.0.0.1:1/nodb"
    assert main(["run", str(study), "--storage", url]) == 1
    err = capsys.readouterr().err
    assert "hunter2" not in err and "bob:***@127.0.0.1:1" in err


def test_the_shipped_quickstart_runs(tmp_path):
    """The README's first command, shortened to 3 trials, on the default embedded storage."""
    import shutil
    from pathlib import Path

    quickstart = tmp_path / "quickstart.toml"  # a copy: its journal goes beside it
    shutil.copy(Path(__file__).resolve().parents[1] / "studies" / "quickstart.toml", quickstart)
    res = cli("run", str(quickstart), "--n-trials", "3", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "Leaderboard of study 'quickstart'" in res.stdout and "digits |" in res.stdout
    assert "3 finished trials stored in journal file" in res.stdout


def test_plugins_shows_why_a_pairing_is_excluded(test_registry):
    from dmisearch.cli import _excluded_pairings

    excluded = {(m, a): why for m, a, why in _excluded_pairings(test_registry)}
    why = excluded[("plain_mlp_test", "nngp")]
    assert "needs ['nngp']" in why and "provides ['module']" in why
    assert ("plain_mlp_test", "sgd") not in excluded
    assert ("fcn", "ntk") not in excluded and ("fcn", "kernel_test") in excluded


def test_a_closed_pipe_is_a_normal_end():
    """`dmisearch plugins --json | head`: the reader leaves before the output is written."""
    proc = subprocess.Popen([sys.executable, "-m", "dmisearch", "plugins", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # gone before dmisearch writes a byte
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert "Error" not in err and "error" not in err, err


def test_numbers_are_refused_with_their_real_bound(capsys):
    for args, words in ((["run", "x.toml", "--n-trials", "-1"], "must be >= 1, got -1"),
                        (["worker", "x.toml", "--wait", "inf"], "finite number >= 0"),
                        (["run", "x.toml", "--threads", "0"], "must be >= 1, got 0")):
        with pytest.raises(SystemExit) as info:
            main(args)
        assert info.value.code == 2 and words in capsys.readouterr().err, args


def test_report_on_a_study_file_whose_storage_is_not_a_string(tmp_path, tiny_doc):
    tiny_doc["study"]["storage"] = ["postgresql://u:hunter2@h/db"]
    study = tmp_path / "tiny.toml"
    study.write_text(dump_toml(tiny_doc))
    res = cli("report", str(study), "--out", str(tmp_path / "r"))
    assert res.returncode == 1 and "study.storage: must be a storage URL" in res.stderr
    assert "internal error" not in res.stderr and "hunter2" not in res.stderr


def test_a_worker_joins_but_never_creates_a_study(tmp_path, tiny_doc):
    study = tmp_path / "tiny.toml"
    study.write_text(dump_toml(tiny_doc))
    res = cli("worker", str(study), "--storage", f"journal:{tmp_path / 'j.log'}", "--wait", "1")
    assert res.returncode == 1 and "no study 'tiny'" in res.stderr
    assert "waiting up to 1 s for study 'tiny'" in res.stderr and "--storage URL" in res.stderr
    assert not optuna.get_all_study_summaries(open_storage(f"journal:{tmp_path / 'j.log'}"))
