"""docs/plugins.md: the reference covers every hook and base-class member with its current
signature; the tutorial's files are the example package's, which installs, passes its own
tests (the conformance kit) and runs a study."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from doc_reference import all_entries

from dmisearch import testing

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "plugins.md").read_text()
EXAMPLE = ROOT / "plugins" / "dmisearch-example"
#: Files of the example package the tutorial keeps as the scaffold wrote them.
NOT_SHOWN = {"README.md", "src/dmisearch_example/__init__.py"}
FILE_BLOCK = re.compile(r"\*\*`([^`]+)`\*\*\n\n```\w+\n(.*?)```", re.S)


def test_reference_documents_every_hook_and_member_with_its_signature():
    reference = DOC[DOC.index("## Reference"):]
    documented = set(re.findall(r"^#### `(.+)`$", reference, re.M))
    expected = set(all_entries())
    missing = sorted(expected - documented)
    stale = sorted(documented - expected)
    assert not missing, "undocumented (or signature changed):\n" + "\n".join(missing)
    assert not stale, "documented but no longer in the code:\n" + "\n".join(stale)


def test_every_check_of_the_kit_is_documented():
    contracts = [testing.ComponentContract, testing.DataGeneratorContract,
                 testing.TransformContract, testing.ArchitectureContract,
                 testing.AlgorithmContract]
    names = {n for c in contracts for n in vars(c) if n.startswith("test_")}
    table = DOC[DOC.index("### The conformance kit"):]
    assert names == set(re.findall(r"`(test_\w+)`", table))


def _example_files() -> dict[str, str]:
    return {str(p.relative_to(EXAMPLE)): p.read_text() for p in EXAMPLE.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and "build" not in p.parts
            and ".egg-info" not in str(p)}


def test_tutorial_shows_the_example_package_file_by_file():
    shown = dict(FILE_BLOCK.findall(DOC))
    files = _example_files()
    assert set(shown) == set(files) - NOT_SHOWN
    for rel, text in shown.items():
        assert text == files[rel], f"docs/plugins.md shows a different {rel}"


def _env(site: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                DMISEARCH_THREADS="1", OMP_NUM_THREADS="1")


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> str:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stdout}\n{res.stderr}"
    return res.stdout


def install(package: Path, site: Path) -> None:
    """``pip install`` into a folder put on PYTHONPATH: entry points included, and
    nothing changes in the environment running the tests."""
    run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--no-build-isolation", "--no-index", "--target", str(site), str(package)],
        package, dict(os.environ))


@pytest.mark.timeout(900)
def test_following_the_tutorial_gives_a_working_plugin(tmp_path):
    """The tutorial's steps: scaffold, replace the files it shows, install, list, test with
    the conformance kit, run a study."""
    env = _env(tmp_path / "site")
    run([sys.executable, "-m", "dmisearch", "new-plugin", "example"], tmp_path, env)
    pkg = tmp_path / "dmisearch-example"
    for rel, text in FILE_BLOCK.findall(DOC):
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    generated = {str(p.relative_to(pkg)) for p in pkg.rglob("*") if p.is_file()}
    assert generated == set(_example_files())  # the scaffold has every file the tutorial edits
    init = "src/dmisearch_example/__init__.py"
    assert (pkg / init).read_text() == (EXAMPLE / init).read_text()
    # the example package itself (what CI installs), identical by the test above
    shutil.rmtree(pkg)
    shutil.copytree(EXAMPLE, pkg, ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                                "__pycache__"))
    install(pkg, tmp_path / "site")

    listed = json.loads(run([sys.executable, "-m", "dmisearch", "plugins", "--json"], pkg,
                            env))
    ours = {c["name"]: c for c in listed["components"] if c["plugin"] == "example"}
    assert {(c["kind"], n) for n, c in ours.items()} == {
        ("data", "hidden_manifold"), ("transform", "patch_shuffle"),
        ("architecture", "resmlp"), ("algorithm", "rmsprop")}
    assert {(c["package"], c["version"]) for c in ours.values()} == {
        ("dmisearch-example", "0.1.0")}

    out = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], pkg, env)
    assert re.search(r"\b(4\d|[5-9]\d) passed", out), out

    out = run([sys.executable, "-m", "dmisearch", "run", "study.toml", "--n-trials", "3",
               "--no-progress", "--storage", f"journal:{tmp_path / 'j.log'}"], pkg, env)
    assert "hidden_manifold+patch_shuffle |" in out and "3 finished trials" in out
