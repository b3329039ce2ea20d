"""Before trial 0, each searched architecture runs once on two samples, forward and
backward (``dmisearch.preflight``): a wrong output shape or a parameter without gradient is
refused naming the architecture, its hyperparameters, what was found and the fix."""

from __future__ import annotations

import dataclasses
import time

import pytest
import torch
from testplugins import PlainMLP, TestPlugin

from dmisearch.errors import PreflightError, StudyFileError
from dmisearch.objective import make_context
from dmisearch.plugins import load_registry
from dmisearch.preflight import check_architectures
from dmisearch.study_file import build_spec
from dmisearch.testing import make_plugin

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclasses.dataclass(kw_only=True)
class BrokenForward(PlainMLP):
    """Its module expects twice the input size."""

    name = "broken_forward_test"

    def build(self, input_shape, out_dim):
        return super().build((2, *input_shape), out_dim)


@dataclasses.dataclass(kw_only=True)
class Dropping(PlainMLP):
    """Dropout in forward: draws from torch's global generator."""

    name = "dropping_test"

    def build(self, input_shape, out_dim):
        return torch.nn.Sequential(torch.nn.Dropout(0.5), super().build(input_shape, out_dim))


@pytest.fixture(scope="module")
def registry():
    return load_registry(plugins=[TestPlugin(), make_plugin(BrokenForward, Dropping)])


def _check(tiny_doc, registry, models, algorithms=("sgd",), **study):
    tiny_doc["study"].update(study)
    tiny_doc["search"].update(models=list(models), algorithms=list(algorithms))
    tiny_doc["search"]["space"] = {}
    spec = build_spec(tiny_doc, registry, storage="memory")
    check_architectures(spec, make_context(spec))


def test_builtin_architectures_pass_in_milliseconds(tiny_doc, registry):
    start = time.perf_counter()
    _check(tiny_doc, registry, ["fcn", "cnn_gap", "lcn", "cnn_vec"], ["sgd", "adam", "ntk"])
    assert time.perf_counter() - start < 2.0  # a build and two samples each, not a trial


def test_a_wrong_output_shape_is_refused_with_the_shape_and_the_fix(tiny_doc, registry):
    with pytest.raises(PreflightError) as info:
        _check(tiny_doc, registry, ["wrong_shape_test"])
    (problem,) = info.value.problems
    assert problem == (
        "architecture 'wrong_shape_test' (hidden=8): build() returned a module whose output "
        "is (2, 8), expected (2, 1) (2 samples, out_dim 1 of the data); make its last layer "
        "output out_dim values per sample")
    assert isinstance(info.value, StudyFileError)  # printed like any invalid study
    assert "nothing was run" in str(info.value)


def test_a_parameter_without_gradient_is_refused_by_name(tiny_doc, registry):
    with pytest.raises(PreflightError) as info:
        _check(tiny_doc, registry, ["unused_param_test"], ["adam"])
    (problem,) = info.value.problems
    assert problem.startswith("architecture 'unused_param_test' (hidden=8): parameters "
                              "readout.weight, readout.bias get no gradient from the output")
    assert problem.endswith("use them in forward() or remove them")


def test_every_problem_is_listed_at_the_hyperparameters_searched_first(tiny_doc, registry):
    tiny_doc["search"].update(models=["wrong_shape_test", "broken_forward_test",
                                      "unused_param_test", "fcn"], algorithms=["sgd"])
    tiny_doc["search"]["space"] = {"model": {"wrong_shape_test": {"hidden": [5, 7]},
                                             "fcn": {"width": 8}}}
    spec = build_spec(tiny_doc, registry, storage="memory")
    with pytest.raises(PreflightError) as info:
        check_architectures(spec, make_context(spec))
    problems = info.value.problems
    assert [p.split(" ", 2)[1] for p in problems] == [
        "'wrong_shape_test'", "'broken_forward_test'", "'unused_param_test'"]
    assert "(hidden=5): build() returned a module whose output is (2, 5)" in problems[0]
    assert ("built and run forward and backward on 2 samples of shape (1, 8), it raised "
            "RuntimeError: mat1 and mat2 shapes cannot be multiplied") in problems[1]
    assert problems[1].endswith("fix build() or the module's forward()")


def test_algorithms_that_do_not_train_the_module_need_no_gradient_or_module(tiny_doc,
                                                                          registry):
    _check(tiny_doc, registry, ["unused_param_test", "wrong_shape_test"], ["mean_test"])


def test_the_check_runs_in_the_study_dtype_and_leaves_the_rngs_alone(tiny_doc, registry):
    before = torch.get_rng_state()
    _check(tiny_doc, registry, ["dropping_test"], dtype="float64")
    assert torch.equal(torch.get_rng_state(), before)  # trials draw what they drew before
