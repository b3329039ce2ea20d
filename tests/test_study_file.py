"""Study files: every mistake is reported before any trial runs, naming its key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmisearch.errors import DmisearchError, StudyFileError
from dmisearch.study_file import build_spec, load_study

ROOT = Path(__file__).resolve().parents[1]


def problems(doc, registry, **kw) -> list[str]:
    with pytest.raises(StudyFileError) as info:
        build_spec(doc, registry, **kw)
    return info.value.problems


def one_problem(doc, registry, **kw) -> str:
    got = problems(doc, registry, **kw)
    assert len(got) == 1, got
    return got[0]


def test_shipped_studies_load(registry):
    paths = sorted((ROOT / "studies").glob("*.toml")) + sorted(
        (ROOT / "benchmarks" / "studies").glob("*.toml"))
    assert len(paths) >= 2
    for path in paths:
        spec = load_study(path, registry)
        assert spec.pairs, path


def test_quickstart_spec(registry):
    spec = load_study(ROOT / "studies" / "quickstart.toml", registry)
    assert spec.name == "quickstart" and spec.data.label == "digits"
    assert spec.info.input_shape == (1, 8, 8) and spec.metric == "error_rate"
    assert len(spec.pairs) == 8 and spec.excluded == ()
    assert type(spec.make_sampler()).__name__ == "TPESampler"
    assert type(spec.make_pruner()).__name__ == "MedianPruner" and spec.trials_per_batch == 4
    assert spec.prune_after == (50,)


def test_tiny_spec_and_overrides(tiny_doc, registry):
    spec = build_spec(tiny_doc, registry, n_trials=7, timeout=3, seed=5, storage="memory",
                      device="cpu")
    assert (spec.n_trials, spec.timeout, spec.seed, spec.storage) == (7, 3.0, 5, "memory")
    assert spec.pairs == (("fcn", "sgd"), ("cnn_gap", "sgd"))
    assert spec.grid.seeds == (0, 1)
    assert spec.make_sampler()._rng.rng.random() == spec.make_sampler()._rng.rng.random()


def test_log_spaced_sizes(tiny_doc, registry):
    tiny_doc["curve"]["sizes"] = {"min": 10, "max": 1000, "num": 3}
    assert build_spec(tiny_doc, registry).grid.sizes == (10, 100, 1000)


@pytest.mark.parametrize("mutate,key,text", [
    (lambda d: d.update(serach={}), "serach", "did you mean 'search'"),
    (lambda d: d["curve"].update(test_szie=5), "curve.test_szie", "did you mean 'test_size'"),
    (lambda d: d["data"].update(name="teachr"), "data.name", "did you mean 'teacher'"),
    (lambda d: d["data"].update(nosie=0.1), "data.nosie", "did you mean 'noise'"),
    (lambda d: d["data"].update(noise=-1.0), "data", "noise must be"),
    (lambda d: d["data"].update(shape="abc"), "data.shape", "must be a list"),
    (lambda d: d["data"].update(transforms=["rotat"]), "data.transforms[0].name",
     "did you mean 'rotate'"),
    (lambda d: d["data"].update(transforms=[{"name": "rotate", "sed": 1}]),
     "data.transforms[0].sed", "did you mean 'seed'"),
    (lambda d: d["curve"].update(sizes=[16, 8]), "curve.sizes", "strictly increasing"),
    (lambda d: d["curve"].pop("sizes"), "curve.sizes", "missing"),
    (lambda d: d["curve"].update(sizes={"min": 10, "max": 12, "num": 5}), "curve.sizes",
     "do not fit"),
    (lambda d: d["curve"].update(seeds=0), "curve.seeds", "must be >= 1"),
    (lambda d: d["curve"].update(seeds=[1, 1]), "curve.seeds", "repeats"),
    (lambda d: d["curve"].update(test_size=0), "curve.test_size", "positive integer"),
    (lambda d: d.update(objective={"name": "n_to_target"}), "objective.target",
     "needs a target"),
    (lambda d: d.update(objective={"name": "auc"}), "objective.name", "did you mean 'aulc'"),
    (lambda d: d.update(objective={"metric": "error_rate"}), "objective.metric",
     "does not apply to regression"),
    (lambda d: d["search"].update(n_trials=0), "search.n_trials", "must be >= 1"),
    (lambda d: d["search"].pop("n_trials"), "search", "set n_trials or timeout"),
    (lambda d: d["search"].update(models=[]), "search.models", "empty search"),
    (lambda d: d["search"].update(models=["fcn", "cnn"]), "search.models[1]",
     "unknown architecture 'cnn'"),
    (lambda d: d["search"].update(algorithms=["sdg"]), "search.algorithms[0]",
     "did you mean 'sgd'"),
    (lambda d: d["search"]["space"]["model"].update(lcn={"width": 4}), "search.space.model.lcn",
     "is not searched"),
    (lambda d: d["search"]["space"]["model"]["fcn"].update(width={"low": 64, "high": 8}),
     "search.space.model.fcn.width", "low=64 is above high=8"),
    (lambda d: d["search"]["space"]["algorithm"]["sgd"].update(lr={"low": -1, "high": 1}),
     "search.space.algorithm.sgd", "lr must be > 0"),
    (lambda d: d["search"]["space"]["model"]["cnn_gap"].update(filter_size=[3, 9]),
     "search.space.model.cnn_gap", "filter_size=9 exceeds the input's spatial size"),
    (lambda d: d["search"]["space"]["model"]["cnn_gap"].update(depth={"low": 0, "high": 2}),
     "search.space.model.cnn_gap", "depth must be >= 1"),
    (lambda d: d["search"].update(sampler="tpee"), "search.sampler.name", "did you mean 'tpe'"),
    (lambda d: d["search"].update(sampler={"name": "tpe", "n_startup": 3}),
     "search.sampler.n_startup", "did you mean 'n_startup_trials'"),
    (lambda d: d["search"].update(pruner={"name": "percentile", "percentile": 150.0}),
     "search.pruner", "failed"),
    (lambda d: d["search"].update(prune_after=[8]), "search.prune_after", "needs a pruner"),
    (lambda d: d["search"].update(pruner="median", prune_after=[12]), "search.prune_after",
     "[12] not among the curve's sizes before the largest [8]"),
    (lambda d: d["search"].update(pruner="median", prune_after=[16]), "search.prune_after",
     "[16] not among"),
    (lambda d: d["search"].update(pruner="median", prune_after=8), "search.prune_after",
     "must be a non-empty list of training sizes, got 8"),
    (lambda d: (d["curve"].update(sizes=[8, 16, 24]),
                d["search"].update(pruner="median", prune_after=[16, 8])),
     "search.prune_after", "strictly increasing"),
    (lambda d: d["study"].update(dtype="float16"), "study.dtype", "float32, float64"),
    (lambda d: d["study"].update(device="gpu"), "study.device", "auto, cpu, cuda or cuda:N"),
    (lambda d: d["study"].update(name=""), "study.name", "is empty"),
    (lambda d: d["study"].update(heartbeat_interval=float("inf")), "study.heartbeat_interval",
     "finite number of seconds > 0, got inf"),
    (lambda d: d["study"].update(grace_period=float("inf")), "study.grace_period",
     "trials of a worker that died would never be retried"),
    (lambda d: d["study"].update(heartbeat_interval=5, grace_period=10), "study.grace_period",
     "(15 s), got 10: a live worker would be taken for dead"),
    (lambda d: d["study"].update(storage="journal:x.log", heartbeat_interval=1,
                                 grace_period=4),
     "study.grace_period", "the journal lock's break time (5 s, after a process died"),
    (lambda d: d["confirm"].update(top="3") if "confirm" in d else d.update(confirm={"top": "3"}),
     "confirm.top", "must be a positive number"),
    (lambda d: d.update(confirm={"seeds": [[1], [2], [3]]}), "confirm.seeds",
     "got [[1], [2], [3]]"),
])
def test_each_mistake_is_reported_with_its_key(tiny_doc, registry, mutate, key, text):
    mutate(tiny_doc)
    msg = one_problem(tiny_doc, registry)
    assert msg.startswith(f"{key}:"), msg
    assert text in msg


def test_all_problems_are_reported_at_once(tiny_doc, registry):
    tiny_doc["data"]["noise"] = -1.0
    tiny_doc["curve"]["seeds"] = 0
    tiny_doc["search"]["algorithms"] = ["nope"]
    got = problems(tiny_doc, registry)
    assert [p.split(":")[0] for p in got] == ["data", "curve.seeds", "search.algorithms[0]"]


def test_finite_data_must_hold_the_largest_size_and_the_test_set(tiny_doc, registry):
    tiny_doc["data"] = {"name": "digits"}
    tiny_doc["curve"] = {"sizes": [100, 1000], "test_size": 900}
    msg = one_problem(tiny_doc, registry)
    assert msg.startswith("curve:") and "needs 1900 samples" in msg and "1797" in msg


def test_impossible_explicit_pair_is_an_error(tiny_doc, test_registry):
    tiny_doc["search"] = {"pairs": [["fcn", "sgd"], ["fcn", "kernel_test"]], "n_trials": 1}
    msg = one_problem(tiny_doc, test_registry)
    assert msg.startswith("search.pairs[1]: impossible pair ['fcn', 'kernel_test']")
    assert "needs ['kernel']" in msg


def test_impossible_pairs_of_a_product_are_skipped_with_reasons(tiny_doc, test_registry):
    tiny_doc["data"] = {"name": "flat_test"}  # no spatial axis: conv nets cannot take it
    tiny_doc["search"] = {"models": ["fcn", "cnn_gap"], "algorithms": ["sgd"], "n_trials": 1}
    spec = build_spec(tiny_doc, test_registry)
    assert spec.pairs == (("fcn", "sgd"),)
    (m, a, why), = spec.excluded
    assert (m, a) == ("cnn_gap", "sgd") and "takes 1-D or 2-D inputs" in why


def test_no_runnable_pair_is_an_empty_search(tiny_doc, test_registry):
    tiny_doc["data"] = {"name": "flat_test"}
    tiny_doc["search"] = {"models": ["lcn", "cnn_gap"], "algorithms": ["sgd"], "n_trials": 1}
    msg = one_problem(tiny_doc, test_registry)
    assert msg.startswith("search: empty search") and "lcn/sgd" in msg


def test_transform_that_cannot_act_on_the_data(tiny_doc, test_registry):
    tiny_doc["data"] = {"name": "flat_test", "transforms": ["shift"]}
    tiny_doc["search"] = {"models": ["fcn"], "algorithms": ["sgd"], "n_trials": 1}
    msg = one_problem(tiny_doc, test_registry)
    assert msg.startswith("data.transforms[0]: shift:") and "spatial axis" in msg


def test_toml_syntax_and_missing_file(tmp_path, registry):
    bad = tmp_path / "bad.toml"
    bad.write_text("[study\nname = 1\n")
    with pytest.raises(StudyFileError, match="not valid TOML"):
        load_study(bad, registry)
    with pytest.raises(DmisearchError, match="does not exist"):
        load_study(tmp_path / "missing.toml", registry)


def test_error_message_is_one_paragraph_naming_the_file(tiny_doc, registry):
    tiny_doc["curve"]["seeds"] = 0
    with pytest.raises(StudyFileError) as info:
        build_spec(tiny_doc, registry, source="studies/x.toml")
    assert str(info.value).startswith("studies/x.toml: 1 problem, nothing was run:")


def test_the_public_names_stay_in_study_file():
    """The study file's parts live in their own modules (schema, spec, study_curve,
    study_search, study_pluggables); what callers import from here stays here."""
    from dmisearch import schema, spec, study_file

    for name in ("Candidate", "Confirm", "Grid", "Pluggable", "StudySpec"):
        assert getattr(study_file, name) is getattr(spec, name)
    assert study_file.SECTIONS is schema.SECTIONS and study_file.DTYPES == ("float32", "float64")
    assert callable(study_file.plugin_files) and callable(study_file.read_toml)
