"""``dmisearch new-plugin``: the package installs and passes its own tests as generated."""

from __future__ import annotations

import json
import re
import sys

import pytest
from test_plugin_docs import _env, install, run

from dmisearch.cli import main


@pytest.mark.timeout(900)
def test_scaffold_with_every_kind_installs_lists_tests_and_runs(tmp_path):
    assert main(["new-plugin", "mylab", "--dir", str(tmp_path)]) == 0
    pkg = tmp_path / "dmisearch-mylab"
    site = tmp_path / "site"
    install(pkg, site)
    env = _env(site)
    listed = json.loads(run([sys.executable, "-m", "dmisearch", "plugins", "--json"], pkg,
                            env))
    ours = {(c["kind"], c["name"], c["package"]) for c in listed["components"]
            if c["plugin"] == "mylab"}
    assert ours == {("data", "mylab_linear", "dmisearch-mylab"),
                    ("transform", "mylab_negate", "dmisearch-mylab"),
                    ("architecture", "mylab_mlp", "dmisearch-mylab"),
                    ("algorithm", "mylab_rmsprop", "dmisearch-mylab")}
    out = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], pkg, env)
    assert re.search(r"\b\d\d passed", out) and "failed" not in out, out
    out = run([sys.executable, "-m", "dmisearch", "run", "study.toml", "--n-trials", "2",
               "--no-progress", "--storage", f"journal:{tmp_path / 'j.log'}"], pkg, env)
    assert "mylab_linear+mylab_negate |" in out


def test_scaffold_of_one_kind_passes_its_tests_before_it_is_installed(tmp_path, capsys):
    assert main(["new-plugin", "convnet", "--kind", "architecture", "--dir", str(tmp_path)]) == 0
    assert "pip install -e" in capsys.readouterr().out
    pkg = tmp_path / "dmisearch-convnet"
    src = pkg / "src" / "dmisearch_convnet"
    assert sorted(p.name for p in src.iterdir()) == ["__init__.py", "models.py", "plugin.py"]
    assert "register_architectures" in (src / "plugin.py").read_text()
    assert "register_algorithms" not in (src / "plugin.py").read_text()
    env = _env(pkg / "src")  # not installed: the kit registers the class for its study
    out = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], pkg, env)
    assert re.search(r"\b\d+ passed", out) and "failed" not in out, out


@pytest.mark.parametrize("args,expected", [
    (["new-plugin", "My-Plugin"], "plugin name 'My-Plugin' must be lowercase"),
    (["new-plugin", "class"], "plugin name 'class' must be"),
])
def test_bad_names_are_refused(args, expected, tmp_path, capsys):
    assert main([*args, "--dir", str(tmp_path)]) == 1
    assert expected in capsys.readouterr().err


def test_an_existing_folder_is_never_overwritten(tmp_path, capsys):
    (tmp_path / "dmisearch-mylab").mkdir()
    assert main(["new-plugin", "mylab", "--dir", str(tmp_path)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert list((tmp_path / "dmisearch-mylab").iterdir()) == []


def test_unknown_kind_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["new-plugin", "x", "--kind", "optimizer"])
    assert exc.value.code == 2
