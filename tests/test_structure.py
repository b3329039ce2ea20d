"""The code's shape: no import cycles, a light ``import dmisearch`` and ``dmisearch --help``,
and modules short enough to read.

The import graph is read from the source with ``ast``, not by importing anything: every
``import`` and ``from ... import`` of a project module counts, at module level or inside a
function (an import deferred into a function to dodge a cycle is still a cycle), relative
ones included, and ``from dmisearch import engine`` is an edge to ``dmisearch.engine``. Not
counted: imports under ``if TYPE_CHECKING:`` (never executed: annotations only), and the
implicit import of a module's parent package that Python performs first.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The packages whose modules are checked, and the folder each lives in.
PACKAGES = {"dmisearch": ROOT / "dmisearch",
            "dmisearch_builtins": ROOT / "plugins" / "dmisearch_builtins"}
#: Modules longer than this are split by what they do.
MAX_LINES = 500
#: Never imported by ``import dmisearch`` (nor by ``dmisearch --help``: torch).
HEAVY = ("torch", "optuna")


def project_files() -> dict[str, Path]:
    """Every module of the checked packages: dotted name -> file."""
    out: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join((package, *parts))] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement of ``tree``, at any depth, except under ``if TYPE_CHECKING``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _resolve(name: str, modules: set[str]) -> str | None:
    """The project module ``import name`` executes last: ``name`` or its longest prefix."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return None


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported project module: line of the first such import}."""
    files = project_files()
    modules = set(files)
    graph: dict[str, dict[str, int]] = {}
    for module, path in files.items():
        edges: dict[str, int] = {}
        is_package = path.name == "__init__.py"
        for node in _imports(ast.parse(path.read_text(), str(path))):
            targets: list[str | None] = []
            if isinstance(node, ast.Import):
                targets = [_resolve(a.name, modules) for a in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative: from the module's package, up level - 1
                    package = module.split(".") if is_package else module.split(".")[:-1]
                    package = package[: len(package) - (node.level - 1)]
                    base = ".".join([*package, *([base] if base else [])])
                for alias in node.names:  # ``from pkg import submodule`` imports it
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else _resolve(base, modules))
            for target in targets:
                if target is not None and target != module:
                    edges.setdefault(target, node.lineno)
        graph[module] = edges
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def a_cycle(graph: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """One cycle through the component's first module, by breadth-first search."""
    start, members = component[0], set(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in graph[v]:
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w in members and w not in parents:
                    parents[w] = v
                    following.append(w)
        frontier = following
    return component  # unreachable for a strongly connected component


def describe_cycle(graph: dict[str, dict[str, int]], cycle: list[str]) -> str:
    files = project_files()
    steps = [f"{a} -> {b} ({files[a].relative_to(ROOT)}:{graph[a][b]})"
             for a, b in zip(cycle, cycle[1:], strict=False)]
    return "\n    ".join(steps)


def test_no_import_cycles():
    graph = import_graph()
    assert "dmisearch.engine" in graph and "dmisearch_builtins.kernels" in graph  # it reads
    cycles = strongly_connected(graph)
    report = [f"{' <-> '.join(c)}:\n    {describe_cycle(graph, a_cycle(graph, c))}"
              for c in cycles]
    assert not cycles, "modules importing each other (break the cycle by moving what " \
                       "they share to where it belongs):\n" + "\n".join(report)


def _importtime(*args: str) -> tuple[subprocess.CompletedProcess, list[tuple[int, str]]]:
    """Run ``python -X importtime *args``; its result and the (depth, module) it imported,
    in the order ``-X importtime`` prints them (a module after everything it imported)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", *args], cwd=ROOT,
                          env=dict(os.environ), capture_output=True, text=True, timeout=300)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        field = line.split("|", 2)[2]
        name = field.strip()
        rows.append(((len(field) - len(field.lstrip()) - 1) // 2, name))
    return proc, rows


def heavy_chains(rows: list[tuple[int, str]], heavy: tuple[str, ...]) -> list[str]:
    """For each of ``heavy`` imported, the chain of imports that first reached it."""
    out = []
    for package in heavy:
        found = [i for i, (_, name) in enumerate(rows) if name == package] or [
            i for i, (_, name) in enumerate(rows) if name.startswith(package + ".")]
        if not found:
            continue
        depth, name = rows[found[0]]
        chain = [name]
        for d, parent in rows[found[0] + 1:]:  # a module's importer is printed after it
            if d < depth:
                chain.append(parent)
                depth = d
        out.append(" -> ".join(reversed(chain)))
    return out


def test_import_dmisearch_imports_neither_torch_nor_optuna():
    proc, rows = _importtime("-c", "import dmisearch")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert any(name == "dmisearch" for _, name in rows), proc.stderr[-3000:]
    chains = heavy_chains(rows, HEAVY)
    assert not chains, "import dmisearch imported:\n  " + "\n  ".join(chains)


def test_dmisearch_help_does_not_import_torch():
    proc, rows = _importtime("-m", "dmisearch", "--help")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "usage: dmisearch" in proc.stdout
    chains = heavy_chains(rows, ("torch",))
    assert not chains, "dmisearch --help imported:\n  " + "\n  ".join(chains)


def test_no_module_is_longer_than_the_limit():
    long = {str(path.relative_to(ROOT)): n for path in project_files().values()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, (f"modules over {MAX_LINES} lines (split them by what they do): "
                      + ", ".join(f"{p} ({n})" for p, n in sorted(long.items())))


# --------------------------------------------------------------------------------------------
# the checks themselves, on made-up inputs
# --------------------------------------------------------------------------------------------


def test_the_cycle_finder_finds_a_cycle_and_only_cycles():
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3, "d": 4}, "d": {}, "e": {"d": 5}}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert a_cycle(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    assert strongly_connected({"a": {"b": 1}, "b": {}}) == []


@pytest.mark.parametrize("source, expected", [
    ("from dmisearch import engine", {"dmisearch.engine"}),
    ("from dmisearch import hookimpl", {"dmisearch"}),
    ("import dmisearch.training as t", {"dmisearch.training"}),
    ("def f():\n    from . import engine", {"dmisearch.engine"}),
    ("from .components import Job", {"dmisearch.components"}),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from dmisearch import engine\n"
     "else:\n    import dmisearch.optim", {"dmisearch.optim"}),
    ("import torch", set()),
])
def test_the_graph_reads_every_kind_of_import(source, expected, tmp_path, monkeypatch):
    folder = tmp_path / "dmisearch"
    folder.mkdir()
    for name in ("__init__", "engine", "training", "optim", "components"):
        (folder / f"{name}.py").write_text("")
    (folder / "probe.py").write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGES", {"dmisearch": folder})
    assert set(import_graph()["dmisearch.probe"]) == expected


def test_the_chain_of_a_heavy_import_is_named():
    rows = [(3, "torch._C"), (2, "torch"), (1, "dmisearch.training"), (1, "dmisearch.errors"),
            (0, "dmisearch")]
    assert heavy_chains(rows, HEAVY) == ["dmisearch -> dmisearch.training -> torch"]
    assert heavy_chains(rows[:1], HEAVY) == ["torch._C"]  # a submodule alone: itself
    assert heavy_chains([(0, "json")], HEAVY) == []


def test_contributing_maps_every_module():
    """CONTRIBUTING.md's map of the code names every module (a package by its folder), so a
    reader finds any of them: a new module that the map leaves out fails here."""
    text = (ROOT / "CONTRIBUTING.md").read_text()
    missing = []
    for path in project_files().values():
        name = f"{path.parent.name}/" if path.name == "__init__.py" else path.name
        if f"`{name}" not in text and f"{name}`" not in text:
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"CONTRIBUTING.md's map of the code leaves out: {missing}"
