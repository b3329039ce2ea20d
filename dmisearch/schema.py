"""The study file's schema, declared once as data: every section and key with its type,
default, allowed values and meaning.

Reading a study file (:mod:`dmisearch.study_file`) takes its sections, keys, types and
defaults from here, and the reference tables of docs/study-files.md are rendered from here
(``python -m dmisearch.schema docs/study-files.md`` rewrites them; tests/test_schema.py
checks that they agree). A key's top-level type, allowed values and lower bound are checked
by :meth:`Section.read`; what a structured value means beyond that (a list of sizes, a
component's range, a sampler's options) is checked by the builder that turns it into objects.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dmisearch.coordination import GRACE_PERIOD, HEARTBEAT_INTERVAL
from dmisearch.errors import did_you_mean
from dmisearch.factory import Problems
from dmisearch.metrics import OBJECTIVES

#: How the reference tables name a key's types.
TYPE_NAMES = {bool: "boolean", int: "integer", float: "float", str: "string", list: "list",
              dict: "table"}


@dataclasses.dataclass(frozen=True)
class Field:
    """One key of a section."""

    key: str
    types: tuple[type, ...]  # its top-level type(s); a bool is never an int here
    default: Any  # the value when the key is left out (None: none)
    doc: str  # what it means, one line: the reference table's "meaning" column
    shown_default: str = ""  # the docs' default where it is not the literal ``default``
    required: bool = False
    choices: tuple[str, ...] = ()  # the allowed values, where they are fixed
    minimum: float | None = None  # value >= minimum (value > minimum with ``exclusive``)
    exclusive: bool = False
    unit: str = ""  # of the bound, in its message ("seconds")
    #: What a wrong value is told it must be (default: the type names); where it is set,
    #: it states the bound too, and a value out of bounds gets this message.
    expected: str = ""
    secret: bool = False  # a wrong value is not shown (a storage URL may hold a password)

    def wrong(self, value: Any) -> str:
        """``must be <expected>, got <value>``."""
        expected = self.expected or " or ".join(t.__name__ for t in self.types)
        got = f"a {type(value).__name__}" if self.secret else repr(value)
        return f"must be {expected}, got {got}"

    def has_type(self, value: Any) -> bool:
        if isinstance(value, bool) and bool not in self.types:
            return False
        return isinstance(value, self.types)

    def problem(self, value: Any) -> str | None:
        """What is wrong with a value of the right type (choices, bound), or None."""
        if self.choices and value not in self.choices:
            return f"must be one of {', '.join(self.choices)}, got {value!r}"
        if self.minimum is not None and not (
                value > self.minimum if self.exclusive else value >= self.minimum):
            if self.expected:
                return self.wrong(value)
            unit = f" {self.unit}" if self.unit else ""
            return (f"must be {'>' if self.exclusive else '>='} {self.minimum:g}{unit}, "
                    f"got {value}")
        return None

    def type_text(self) -> str:
        if self.types == (int, float):
            return "number"
        return " or ".join(TYPE_NAMES[t] for t in self.types)

    def default_text(self) -> str:
        if self.shown_default:
            return self.shown_default
        if self.required:
            return "required"
        return "none" if self.default is None else f"`{toml_literal(self.default)}`"


@dataclasses.dataclass(frozen=True)
class Section:
    """A table of the study file (``[study]``, ...) and its keys."""

    name: str
    fields: tuple[Field, ...]
    #: Keys beyond ``fields`` are allowed: they are parameters (``[data]``: the generator's).
    open: bool = False

    def keys(self) -> tuple[str, ...]:
        return tuple(f.key for f in self.fields)

    def __getitem__(self, key: str) -> Field:
        for f in self.fields:
            if f.key == key:
                return f
        raise KeyError(f"[{self.name}] declares no key {key!r}")

    def default(self, key: str) -> Any:
        return self[key].default

    def get(self, table: Mapping[str, Any], key: str) -> Any:
        """The raw value of ``key``, or its default: for a builder that checks it."""
        return table.get(key, self[key].default)

    def read(self, table: Mapping[str, Any], key: str, pb: Problems, *, given: Any = None,
             check: bool = True) -> Any:
        """``given`` (a value from the command line) when not None, else the table's value
        of ``key`` if its type is right, else (the wrong type reported) the default; with
        ``check``, a value's allowed values and bound are checked as well (:meth:`check`)."""
        field = self[key]
        if given is not None:
            value = given
        elif key not in table:
            return field.default
        elif not field.has_type(table[key]):
            pb.add(f"{self.name}.{key}", field.wrong(table[key]))
            return field.default
        else:
            value = table[key]
        if check:
            self.check(key, value, pb)
        return value

    def check(self, key: str, value: Any, pb: Problems) -> bool:
        """Report a value outside ``key``'s choices or bound (None passes); True if fine."""
        why = None if value is None else self[key].problem(value)
        if why:
            pb.add(f"{self.name}.{key}", why)
        return why is None


STUDY = Section("study", (
    Field("name", (str,), None, "study name in the storage; rerunning resumes it",
          shown_default="the file name without `.toml`"),
    Field("storage", (str,), None,
          "where trials are stored, see [Storage](#storage); a relative path here is read "
          "from the study file's folder",
          shown_default="`$DMISEARCH_STORAGE`, else `.dmisearch/journal.log` beside the "
                        "study file",
          expected="a storage URL or path (a string)", secret=True),
    Field("device", (str,), "auto", "`auto` (CUDA if visible, else CPU), `cpu`, `cuda`, "
                                    "`cuda:N`"),
    Field("dtype", (str,), "float32", "`float32` or `float64`: parameters, inputs and "
                                      "training", choices=("float32", "float64")),
    Field("engine", (str,), "fused",
          "`fused`: train every network of a batch of trials side by side "
          "([engine](engine.md)); `loop`: one model at a time with a plain PyTorch loop (the "
          "reference; for debugging, or a module the fused path cannot run)",
          choices=("fused", "loop")),
    Field("heartbeat_interval", (int, float), HEARTBEAT_INTERVAL,
          "seconds between a worker's stamps on its running trials"),
    Field("grace_period", (int, float), GRACE_PERIOD,
          "seconds without a stamp after which a running trial counts as lost (its worker "
          "died): it is marked failed and retried with the same parameters, at most 3 "
          "times; at least 3 heartbeat intervals"),
    Field("plugins", (list, str), [],
          "local plugin files (`.py` files of `@dmisearch.hookimpl` functions) to load "
          "besides the installed plugins, relative to the study file's folder; workers load "
          "them too (see docs/plugins.md)",
          expected="a list of paths to .py files"),
    Field("tf32", (bool,), False,
          "allow TF32 matrix products and convolutions on CUDA: faster on Ampere and later, "
          "but float32 results change (about 1e-3 relative), so it is off by default and "
          "part of the study's identity"),
    Field("cuda_graphs", (bool,), True,
          "fused engine on CUDA: capture one training step as a CUDA graph and replay it for "
          "the remaining steps ([engine](engine.md#cuda-graphs)); the same kernels on the "
          "same memory, so results do not change. `false` trains eagerly (for profiling, or "
          "an architecture whose capture fails)"),
))

DATA = Section("data", (
    Field("name", (str,), None,
          "a registered data generator (`dmisearch plugins` lists them); every other key "
          "except `transforms` is one of its parameters", required=True),
    Field("transforms", (list,), [],
          "registered transforms applied in order to the inputs, each a name or a table "
          "with `name` and the transform's parameters", expected="a list"),
), open=True)

CURVE = Section("curve", (
    Field("sizes", (list, dict), None,
          "strictly increasing training sizes, e.g. `[32, 64, 128]`, or `{min = 32, max = "
          "512, num = 5}` for log-spaced integers", required=True,
          expected="a non-empty list of integers or {min, max, num}"),
    Field("seeds", (int, list), 3,
          "number of seeds (`0..k-1`) or an explicit list of distinct non-negative seeds; "
          "intervals need at least 3 (docs/analysis.md)",
          expected="a count or a list of distinct non-negative integers"),
    Field("test_size", (int,), 1000, "test samples per seed", minimum=1,
          expected="a positive integer"),
))

OBJECTIVE = Section("objective", (
    Field("name", (str,), "aulc", "`aulc`, `n_to_target` or `final_error`; always minimised",
          choices=OBJECTIVES),
    Field("target", (int, float), None,
          "`n_to_target` only (required there): the test error to reach",
          expected="a number"),
    Field("metric", (str,), "auto",
          "test error: `mse` for regression; `error_rate` (default) or `cross_entropy` for "
          "classification"),
))

SEARCH = Section("search", (
    Field("models", (list,), None, "architectures to search",
          shown_default="every registered architecture",
          expected="a list of architecture names"),
    Field("algorithms", (list,), None,
          "algorithms to search; `name+transform` (e.g. `sgd+shift`, `ntk+flip`) trains on "
          "the orbit of the training set under that transform, see "
          "[Augmentation](#augmentation)",
          shown_default="every registered algorithm", expected="a list of algorithm names"),
    Field("pairs", (list,), None,
          "instead of `models`/`algorithms`: an explicit list of `[model, algorithm]`",
          expected="a non-empty list of [model, algorithm]"),
    Field("n_trials", (int,), None,
          "finished (complete or pruned) trials the study should have in all, each a "
          "configuration no other trial trained",
          shown_default="none (an exhaustive design: every configuration)", minimum=1),
    Field("timeout", (int, float), None,
          "seconds after which this run starts no new trial",
          minimum=0, exclusive=True, unit="seconds"),
    Field("seed", (int,), None, "seed of the sampler", minimum=0),
    Field("sampler", (str, dict), "tpe",
          "a name or `{ name = ..., option = ... }`: `tpe`, `random`, `gp`, `cmaes`, `qmc`, "
          "and the exhaustive designs `brute_force` and `grid` (or the Optuna class name, "
          "e.g. `BruteForceSampler`); options are the class's keyword arguments",
          expected="a name or a table with 'name'"),
    Field("pruner", (str, dict), "median",
          "likewise: `median`, `percentile`, `hyperband`, `successive_halving`, "
          "`threshold`, `none`, and `curve` (extrapolates each trial's learning curve; "
          "options `threshold`, `k`, `family`, `min_sizes`, `bootstrap`, `calibrate`, see "
          "Pruning above)",
          expected="a name or a table with 'name'"),
    Field("prune_after", (list,), None,
          "curve sizes after which the pruner is asked; the sizes up to each train together "
          "(see Pruning above); needs a pruner",
          shown_default="every size but the largest",
          expected="a non-empty list of training sizes"),
    Field("prior", (str, dict), "none",
          "`theory`: predict the kernel learners' learning curves before trial 0, start "
          "with the predicted-best pairs and give pairs predicted far behind a smaller "
          "share; or `{ name = \"theory\", margin = ..., share = ..., pool = ... }`, see "
          "[Theory prior](#theory-prior)",
          expected='"none", "theory" or a table with name = "theory"'),
    Field("space", (dict,), {}, "per-component search-space overrides, see below",
          shown_default="each component's default space", expected="a table"),
    Field("trial_timeout", (int, float), None,
          "seconds a trial may train; past it the trial fails with `TrialTimeout` (trials "
          "trained together in one batch share the clock)",
          minimum=0, exclusive=True, unit="seconds"),
    Field("trials_per_batch", (int, str), "auto",
          "trials asked for at once and trained together (ask-and-tell), so that trials "
          "sharing an architecture shape fuse into one program; `auto` is 16 on CUDA and 1 "
          "on the CPU (where fusing a trial's own networks already keeps the cores busy)",
          expected='a positive integer or "auto"'),
))

CONFIRM = Section("confirm", (
    Field("top", (int,), 3,
          "the best triplets of the search whose best configuration is retrained",
          minimum=1, expected="a positive number of triplets"),
    Field("seeds", (int, list), None,
          "a count (at least 3) of fresh seeds, those after the curve's largest, or a list of "
          "at least 3 distinct seeds the curve does not use",
          shown_default="the curve's number of seeds, at least 5",
          expected="a count >= 3 or a list of at least 3 distinct non-negative integers"),
))

#: Every section, in the order the docs present them and error messages list them.
SCHEMA: tuple[Section, ...] = (STUDY, DATA, CURVE, OBJECTIVE, SEARCH, CONFIRM)
BY_NAME: dict[str, Section] = {s.name: s for s in SCHEMA}
#: Each section's keys (empty: any key, a parameter).
SECTIONS: dict[str, set[str]] = {s.name: set() if s.open else set(s.keys()) for s in SCHEMA}
DTYPES = STUDY["dtype"].choices
ENGINES = STUDY["engine"].choices


def tables(doc: Mapping[str, Any], pb: Problems) -> dict[str, dict[str, Any]]:
    """Each section's table (empty when left out); unknown sections and keys, and sections
    that are not tables, reported."""
    for key in doc:
        if key not in BY_NAME:
            pb.add(key, f"unknown section{did_you_mean(key, BY_NAME)}; "
                        f"sections are {', '.join(BY_NAME)}")
    out = {s.name: _table(doc, s.name, pb) for s in SCHEMA}
    for s in SCHEMA:
        if s.open:
            continue
        for key in out[s.name]:
            if key not in s.keys():
                pb.add(f"{s.name}.{key}", f"unknown key{did_you_mean(key, s.keys())}; "
                                          f"keys of [{s.name}] are {', '.join(sorted(s.keys()))}")
    return out


def _table(doc: Mapping[str, Any], key: str, pb: Problems) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        pb.add(key, f"must be a table ([{key}]), got {value!r}")
        return {}
    return value


# --------------------------------------------------------------------------------------------
# the reference tables of docs/study-files.md
# --------------------------------------------------------------------------------------------


def toml_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return f"[{', '.join(toml_literal(v) for v in value)}]"
    return str(value)


def reference_table(section: Section) -> str:
    """The section's reference table in markdown: key, type, default, meaning."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    rows += [f"| `{f.key}` | {f.type_text()} | {f.default_text()} | {f.doc} |"
             for f in section.fields]
    return "\n".join(rows) + "\n"


def update_doc(text: str) -> str:
    """``text`` (docs/study-files.md) with the first table under each section's heading
    (``## `[name]` ...``) replaced by the one the schema renders."""
    for section in SCHEMA:
        heading = re.search(rf"^## `\[{section.name}\]`.*$", text, re.M)
        if heading is None:
            raise ValueError(f"no '## `[{section.name}]`' heading")
        end = text.find("\n## ", heading.end())
        end = len(text) if end < 0 else end
        table = re.compile(r"^\|.*\n(?:\|.*\n)*", re.M).search(text, heading.end(), end)
        if table is None:
            raise ValueError(f"no table under '## `[{section.name}]`'")
        text = text[:table.start()] + reference_table(section) + text[table.end():]
    return text


def main(argv: list[str]) -> int:
    """``python -m dmisearch.schema FILE``: rewrite FILE's reference tables."""
    if len(argv) != 1:
        print("usage: python -m dmisearch.schema docs/study-files.md", file=sys.stderr)
        return 2
    path = Path(argv[0])
    text = path.read_text(encoding="utf-8")
    new = update_doc(text)
    if new != text:
        path.write_text(new, encoding="utf-8")
    print(f"{path}: {'updated' if new != text else 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
