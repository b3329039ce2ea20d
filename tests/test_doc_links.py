"""The documentation stands alone: every file it points to is in the repository, and it
cites nothing outside it.

Scanned: README.md, CONTRIBUTING.md (if there is one), docs/**/*.md, benchmarks/RESULTS.md
and the plugin packages' .md files; the docstrings and comments of the Python files of
dmisearch/, benchmarks/, plugins/ and studies/. Checked: markdown links (relative to the
linking file's folder, anchors ignored) and backticked file paths (relative to the
repository root or to the file's folder) resolve, and no text, code included, refers to
files outside the repository (``FOREIGN``).
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: References to files outside the repository, which the project must never cite (its own
#: science page is docs/science.md, in lower case).
FOREIGN = re.compile(r"\.\./shared|SCIENCE\.md|DESIGN\.md|STYLE\.md|(?<![\w.-])anchors/"
                     r"|(?<![\w.-])seeds/")
#: ``[text](target)``, an image's ``![alt](target)`` included.
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
#: A backticked span, single-line.
SPAN = re.compile(r"`([^`\n]+)`")
#: What a backticked span must look like to count as a file path: path characters only,
#: a folder part or a file extension, no placeholders.
PATHLIKE = re.compile(r"^(?:\.{0,2}/)?[\w.-]+(?:/[\w.-]+)*/?$")
EXTENSIONS = {".md", ".py", ".toml", ".txt", ".sh", ".yaml", ".yml", ".json", ".csv", ".log",
              ".sbatch", ".html", ".png", ".svg", ".pdf", ".parquet", ".cfg", ".ini"}
#: Top-level folders of the repository: a span starting with one of them names a file here.
TOP = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")} | {".ci"}
#: Paths that exist only once a command has run: the default storage's folder beside a
#: study file, the output folder of benchmarks/gpu_check.sh, and the page `dmisearch report`
#: writes (the findings' own are not kept in the repository: 5 MB each).
WRITTEN = re.compile(r"(^|/)\.dmisearch(/|$)|^(\./)?gpu-out/?$|^index\.html$")
#: Folders a document's paths are relative to, besides the repository root and its own
#: folder: the plugin tutorial shows the files of the example package it builds.
BASES = {"docs/plugins.md": ["plugins/dmisearch-example"]}


def doc_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "benchmarks" / "RESULTS.md",
             *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "plugins").rglob("*.md"))]
    return [f for f in files if f.is_file() and "build" not in f.relative_to(ROOT).parts]


def source_files() -> list[Path]:
    files = [f for top in ("dmisearch", "benchmarks", "plugins", "studies")
             for f in (ROOT / top).rglob("*.py")]
    return sorted(f for f in files if "build" not in f.relative_to(ROOT).parts)


def docstrings_and_comments(path: Path) -> str:
    """The docstrings (module, classes, functions) and ``#`` comments of a Python file."""
    text = path.read_text()
    parts = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                parts.append(doc)
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            parts.append(tok.string)
    return "\n".join(parts)


def unresolved_links(text: str, folder: Path) -> list[str]:
    bad = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL (https:, mailto:) or an anchor of the same page
        path = target.split("#", 1)[0]
        if not (folder / path).exists():
            bad.append(f"link ({target})")
    return bad


def unresolved_spans(text: str, where: Path) -> list[str]:
    bad = []
    folder = where.parent
    bases = [ROOT / b for b in BASES.get(str(where.relative_to(ROOT)), [])]
    for span in SPAN.findall(text):
        span = span.strip()
        if not PATHLIKE.match(span) or "//" in span or WRITTEN.search(span):
            continue
        first = span.lstrip("./").split("/", 1)[0]
        in_repo = "/" in span.strip("/") and first in TOP
        named_file = "/" not in span.strip("/") and Path(span).suffix in EXTENSIONS
        if not (in_repo or named_file or span.startswith(("./", "../"))):
            continue  # a module name, a command, a value: not a path
        if any((base / span).exists() for base in (ROOT, folder, *bases)):
            continue
        if named_file and not span.startswith(("./", "../")) and any(
                ROOT.glob(f"[!.]*/**/{span}")):
            continue  # a file named without its folder (`findings.py`, `curves.csv`)
        bad.append(f"`{span}`")
    return bad


def foreign(text: str) -> list[str]:
    return [f"cites {m.group(0)!r} outside the repository" for m in FOREIGN.finditer(text)]


def problems(text: str, where: Path, markdown: bool) -> list[str]:
    """What is wrong with the references of ``text``, found in the file ``where``."""
    found = foreign(text) if markdown else []
    if markdown:
        found += unresolved_links(text, where.parent)
    return found + unresolved_spans(text, where)


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_reference_of_a_document_resolves(doc):
    found = problems(doc.read_text(), doc, markdown=True)
    assert not found, f"{doc.relative_to(ROOT)}: {found}"


def test_docstrings_and_comments_reference_only_files_of_the_repository():
    found = {}
    for src in source_files():
        bad = foreign(src.read_text()) + problems(docstrings_and_comments(src), src,
                                                  markdown=False)
        if bad:
            found[str(src.relative_to(ROOT))] = bad
    assert not found, found


def test_the_check_catches_what_it_should(tmp_path):
    """A broken link, a backticked path that is not here and each foreign reference fail."""
    doc = ROOT / "docs" / "example.md"  # as if it were in docs/
    assert problems("[the engine](engine.md#fused) and `docs/study-files.md`", doc, True) == []
    assert problems("[gone](nowhere.md) and [ok](../README.md)", doc, True) == [
        "link (nowhere.md)"]
    assert problems("see `studies/missing.toml`", doc, True) == ["`studies/missing.toml`"]
    for ref in ("../shared/notes.txt", "SCIENCE.md", "DESIGN.md", "STYLE.md",
                "anchors/h200.json", "seeds/paper.toml"):
        assert problems(f"as {ref} says", doc, True), ref
    assert problems("[the science](science.md)", doc, True) == []
