"""The set-up contract: README commands, CI script and docs stay true to each other."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(python -m pip install .*?)\n```", text)


def test_readme_starts_with_the_two_setup_commands():
    run, test = readme_commands()[:2]
    assert run.endswith("dmisearch run studies/quickstart.toml")
    # the everyday suite (pyproject's addopts leave out the slow tests), then the slow ones
    assert test.endswith("python -m pytest && python -m pytest -m slow")
    assert (ROOT / "studies" / "quickstart.toml").is_file()


def test_ci_runs_exactly_the_readme_test_command():
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci_lines
    # the suite runs on the versions it last passed with
    assert readme_commands()[1].startswith("python -m pip install -c constraints.txt ")
    # torch pinned before anything can ask for an unpinned one
    first_torch = next(i for i, line in enumerate(ci_lines) if "torch" in line and
                       "install" in line)
    assert '"torch==2.13.0"' in ci_lines[first_torch]


def test_ci_stops_when_a_readme_command_fails(tmp_path):
    """``set -e`` does not stop a script at a failure inside an ``&&`` list: each README
    command in .ci/run is followed by its own check, which exits with the failure's code."""
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    for command in readme_commands():
        i = ci_lines.index(command)
        guard = ci_lines[i + 1:i + 3]
        script = tmp_path / "guard.sh"
        script.write_text("set -euo pipefail\ntrue && (exit 3) && true\n"
                          + "\n".join(guard) + "\necho went-on\n")
        out = subprocess.run(["bash", str(script)], capture_output=True, text=True)
        assert out.returncode == 3 and "went-on" not in out.stdout, guard


def test_ci_also_runs_the_quickstart_command_unconstrained():
    """After the suite, CI runs the README's quickstart command as written, on a fresh
    install that constraints.txt does not hold back."""
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    quickstart = readme_commands()[0]
    assert "constraints" not in quickstart
    after = ci_lines[ci_lines.index(readme_commands()[1]) + 1:]
    assert quickstart in after
    fresh = after[:after.index(quickstart)]
    assert any(line.startswith("python3 -m venv ") and ".venv" not in line for line in fresh)


def test_constraints_pin_every_package_and_match_pyproject():
    """constraints.txt: one exact version per line for each package, torch the CPU-able
    2.13.0 that the README installs, each inside pyproject's ranges."""
    from packaging.requirements import Requirement

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version and " " not in line and "@" not in line, line
            pins[name.lower().replace("_", "-")] = version
    assert pins["torch"] == "2.13.0" and "dmisearch" not in pins
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [spec for group in project["optional-dependencies"].values() for spec in group]
    for spec in project["dependencies"] + extras:
        req = Requirement(spec)
        if req.name == "dmisearch" or (req.marker and not req.marker.evaluate()):
            continue
        pinned = pins.get(req.name.lower().replace("_", "-"))
        assert pinned is not None, f"{req.name} is not in constraints.txt"
        assert req.specifier.contains(pinned), (req, pinned)


def test_docs_name_every_study_file_section_and_key():
    from dmisearch.study_file import SECTIONS

    doc = (ROOT / "docs" / "study-files.md").read_text()
    for section, keys in SECTIONS.items():
        assert f"## `[{section}]`" in doc, section
        for key in keys:
            assert f"`{key}`" in doc, f"[{section}] {key} is undocumented"


@pytest.mark.slow  # about a minute: it runs four benchmark scripts
def test_benchmark_scripts_run():
    """Smoke test: the benchmarks stay runnable (their numbers live in RESULTS.md)."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_engine.py"),
                          "--ks", "2", "--steps", "3", "--repeat", "1", "--archs", "fcn,lcn"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "fcn" in res.stdout and "lcn" in res.stdout and "x " in res.stdout
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_study.py"),
                          str(ROOT / "studies" / "quickstart.toml"), "--n-trials", "1",
                          "--batch", "1"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "speed-up of fused over loop, 1 trial at a time" in res.stdout
    assert "speed-up of fused over loop, replayed fused trials" in res.stdout
    assert "replayed objective values differ" in res.stdout
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_conv.py"),
                          "--iters", "1", "--repeat", "1", "--batch", "2"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("fourier") >= 5 and res.stdout.count("direct") >= 5
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "profile_engine.py"),
                          "--k", "2", "--steps", "3", "--rows", "5"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "fcn, K = 2, 3 steps" in res.stdout and "aten::" in res.stdout
