"""The study file's schema (dmisearch/schema.py) is the one declaration of its sections and
keys: the reader follows it and docs/study-files.md's reference tables are rendered from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dmisearch import schema
from dmisearch.factory import Problems
from dmisearch.samplers import PRUNERS, SAMPLERS
from dmisearch.schema import SCHEMA, Section
from dmisearch.study_file import SECTIONS, build_spec

DOC = Path(__file__).resolve().parents[1] / "docs" / "study-files.md"
FIX = "run `python -m dmisearch.schema docs/study-files.md` to render the tables again"


def documented(text: str, section: Section) -> dict[str, tuple[str, str]]:
    """The rows of the section's reference table in the docs: key -> (type, default)."""
    heading = re.search(rf"^## `\[{section.name}\]`.*$", text, re.M)
    assert heading, f"docs/study-files.md has no '## `[{section.name}]`' heading"
    end = text.find("\n## ", heading.end())
    body = text[heading.end():end if end >= 0 else len(text)]
    table = re.search(r"^\| key \|.*\n\|[-|]+\|\n((?:\|.*\n)*)", body, re.M)
    assert table, f"[{section.name}] has no reference table in docs/study-files.md"
    rows = {}
    for line in table.group(1).splitlines():
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        rows[cells[0].strip("`")] = (cells[1], cells[2])
    return rows


@pytest.mark.parametrize("section", SCHEMA, ids=lambda s: s.name)
def test_the_docs_table_lists_exactly_the_schemas_keys_with_their_defaults(section):
    rows = documented(DOC.read_text(), section)
    missing = [k for k in section.keys() if k not in rows]
    extra = [k for k in rows if k not in section.keys()]
    assert not missing, f"[{section.name}] keys the docs leave out: {missing}; {FIX}"
    assert not extra, f"[{section.name}] keys the docs list but the schema lacks: {extra}"
    for field in section.fields:
        assert rows[field.key] == (field.type_text(), field.default_text()), (
            f"[{section.name}] {field.key}: the docs say {rows[field.key]}; {FIX}")


def test_the_docs_tables_are_the_rendered_ones():
    text = DOC.read_text()
    assert schema.update_doc(text) == text, FIX


def test_fixed_choices_are_documented():
    for section in SCHEMA:
        for field in section.fields:
            for choice in field.choices:
                assert f"`{choice}`" in field.doc, (section.name, field.key, choice)


def test_sections_are_the_schemas():
    assert list(SECTIONS) == [s.name for s in SCHEMA]
    for s in SCHEMA:
        assert SECTIONS[s.name] == (set() if s.open else set(s.keys()))


def test_unknown_sections_and_keys_come_from_the_schema():
    pb = Problems()
    doc = {s.name: {k: None for k in s.keys()} for s in SCHEMA}
    schema.tables(doc, pb)
    assert pb.items == []  # every declared key is accepted
    schema.tables({"serach": {}, "search": {"n_trial": 1}, "data": {"anything": 1}}, pb)
    assert pb.items[0].startswith("serach: unknown section (did you mean 'search'?)")
    assert pb.items[1].startswith("search.n_trial: unknown key (did you mean 'n_trials'?)")
    assert len(pb.items) == 2  # [data] takes any key: the generator's parameters


@pytest.mark.parametrize("section", SCHEMA, ids=lambda s: s.name)
def test_a_wrong_type_names_the_key_the_value_and_what_it_must_be(section):
    for field in section.fields:
        value = 1.5 if float not in field.types else {"a": 1}
        pb = Problems()
        assert section.read({field.key: value}, field.key, pb) == field.default
        (msg,) = pb.items
        assert msg.startswith(f"{section.name}.{field.key}: must be "), msg
        assert (f"got a {type(value).__name__}" if field.secret else repr(value)) in msg


def test_bounds_and_choices():
    pb = Problems()
    assert schema.SEARCH.read({"n_trials": 0}, "n_trials", pb) == 0
    assert schema.SEARCH.read({}, "timeout", pb, given=0) == 0
    assert schema.STUDY.read({"dtype": "float16"}, "dtype", pb) == "float16"
    assert schema.CURVE.read({"test_size": 0}, "test_size", pb) == 0
    assert pb.items == ["search.n_trials: must be >= 1, got 0",
                        "search.timeout: must be > 0 seconds, got 0",
                        "study.dtype: must be one of float32, float64, got 'float16'",
                        "curve.test_size: must be a positive integer, got 0"]


def test_a_study_gets_the_schemas_defaults(tiny_doc, registry):
    del tiny_doc["study"]["device"], tiny_doc["curve"]["seeds"], tiny_doc["curve"]["test_size"]
    del tiny_doc["search"]["pruner"], tiny_doc["search"]["seed"]
    tiny_doc["curve"]["sizes"] = [8, 16, 32]
    spec = build_spec(tiny_doc, registry)
    study = schema.STUDY
    for key in ("device", "dtype", "engine", "tf32", "cuda_graphs", "heartbeat_interval",
                "grace_period"):
        assert getattr(spec, key) == study.default(key), key
    assert len(spec.grid.seeds) == schema.CURVE.default("seeds")
    assert spec.grid.test_size == schema.CURVE.default("test_size")
    assert spec.objective.name == schema.OBJECTIVE.default("name")
    assert spec.sampler.cls_name == SAMPLERS[schema.SEARCH.default("sampler")]
    assert spec.pruner.cls_name == PRUNERS[schema.SEARCH.default("pruner")]
    assert spec.trials_per_batch is None and spec.seed is None and spec.timeout is None
    assert spec.prune_after == (8, 16)  # every size but the largest
