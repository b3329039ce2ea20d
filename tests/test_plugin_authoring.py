"""Plugin authoring: the conformance kit catches broken components; local plugin files,
temporary registration, tracing and their command-line forms."""

from __future__ import annotations

import dataclasses
import json
import textwrap

import pytest
import torch
from conftest import dump_toml
from testplugins import NesterovSGD

from dmisearch import (
    Algorithm,
    DataGenerator,
    DataInfo,
    MinibatchAlgorithm,
    Predictions,
    Split,
)
from dmisearch.cli import main
from dmisearch.plugins import load_registry, registered
from dmisearch.space import Float
from dmisearch.testing import (  # noqa: F401 (register_plugin: a fixture)
    AlgorithmContract,
    ArchitectureContract,
    DataGeneratorContract,
    TransformContract,
    make_plugin,
    register_plugin,
)
from dmisearch_builtins.architectures import FCN
from dmisearch_builtins.transforms import Permute

pytestmark = pytest.mark.usefixtures("one_thread")

# ---------------------------------------------------------------- broken components --------


@dataclasses.dataclass(kw_only=True)
class GlobalRNGData(DataGenerator):
    """Draws from torch's global RNG instead of a generator seeded by `seed`."""

    name = "global_rng"

    def describe(self) -> DataInfo:
        return DataInfo((1, 4), "regression", 1)

    def sample(self, n_train: int, n_test: int, seed: int) -> Split:
        x = torch.randn(n_train + n_test, 1, 4)
        y = x.sum((1, 2)).unsqueeze(1)
        return Split(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


@dataclasses.dataclass(kw_only=True)
class WrongShapeData(GlobalRNGData):
    """Promises (1, 4) inputs, returns (4,)."""

    name = "wrong_shape"

    def sample(self, n_train: int, n_test: int, seed: int) -> Split:
        s = super().sample(n_train, n_test, seed)
        return Split(s.x_train.flatten(1), s.y_train, s.x_test.flatten(1), s.y_test)


@dataclasses.dataclass(kw_only=True)
class InPlace(Permute):
    """Negates its input in place."""

    name = "in_place"

    def apply(self, x, generator):
        return x.neg_()


@dataclasses.dataclass(kw_only=True)
class BadBatched(FCN):
    """A batched forward that forgets the last job's parameters."""

    name = "bad_batched"

    def forward_batched(self, module):
        f = super().forward_batched(module)

        def g(params, buffers, x):
            out = f(params, buffers, x)
            return torch.cat([out[:-1], out[:1]])

        return g


@dataclasses.dataclass(kw_only=True)
class LeakySpace(FCN):
    """Its space reaches a width that check() rejects."""

    name = "leaky_space"
    space = {"width": Float(0.5, 4.0)}

    def check(self) -> None:
        if self.width < 1:
            raise ValueError(f"width must be >= 1, got {self.width}")


@dataclasses.dataclass(kw_only=True)
class Interfering(Algorithm):
    """Predicts the mean of all jobs' targets: jobs depend on each other."""

    name = "interfering"
    scale: float = 1.0

    def fit_predict(self, model, jobs, ctx):
        mean = torch.cat([j.y_train for j in jobs]).mean(0)
        return [Predictions(test=mean.expand(len(j.x_test), -1) * self.scale,
                            train=mean.expand(len(j.x_train), -1).clone())
                for j in jobs]


@dataclasses.dataclass(kw_only=True)
class MeanOfOwn(Interfering):
    """Predicts the mean of its own job's targets: a correct (if dull) algorithm."""

    name = "mean_of_own"

    def fit_predict(self, model, jobs, ctx):
        return [Predictions(test=j.y_train.mean(0).expand(len(j.x_test), -1).clone(),
                            train=j.y_train.mean(0).expand(len(j.x_train), -1).clone())
                for j in jobs]


def test_kit_catches_data_drawn_from_the_global_rng():
    kit = DataGeneratorContract()
    kit.test_samples_match_the_description(GlobalRNGData())  # shapes are fine
    with pytest.raises(AssertionError, match="global RNG"):
        kit.test_samples_are_determined_by_the_seed(GlobalRNGData())
    with pytest.raises(AssertionError, match="describe\\(\\) promised"):
        kit.test_samples_match_the_description(WrongShapeData())


def test_kit_catches_a_transform_that_modifies_its_input():
    with pytest.raises(AssertionError, match="in place"):
        TransformContract().test_keeps_shape_and_dtype_and_is_seeded(
            InPlace(), (1, 4), "apply", torch.float64)


def test_kit_catches_a_wrong_batched_forward_and_a_space_check_rejects():
    kit = ArchitectureContract()
    kit.test_forward_batched_equals_the_module(FCN(width=8, depth=1), (1, 6), 2)
    with pytest.raises(AssertionError, match="job 2 differs"):
        kit.test_forward_batched_equals_the_module(BadBatched(width=8, depth=1), (1, 6), 2)
    with pytest.raises(AssertionError, match="fused test differ|fused losses differ"):
        kit.test_fused_training_equals_the_loop(BadBatched(width=8, depth=1), (1, 6), 2,
                                                "regression")
    with pytest.raises(AssertionError, match="check\\(\\) rejects"):
        kit.test_search_space_round_trips(LeakySpace(width=2, depth=1))


def test_kit_catches_jobs_that_depend_on_each_other():
    kit = AlgorithmContract()
    kit.test_is_deterministic_and_jobs_are_independent(MeanOfOwn(), FCN(), "regression")
    with pytest.raises(AssertionError, match="other jobs ran beside it"):
        kit.test_is_deterministic_and_jobs_are_independent(Interfering(), FCN(), "regression")


@dataclasses.dataclass(kw_only=True)
class SharedLR(MinibatchAlgorithm):
    """Declares lr per job but keeps the default fused_optimizer: one lr for the stack."""

    name = "shared_lr"
    per_job = frozenset({"lr"})

    def make_optimizer(self, params):
        return torch.optim.SGD(params, lr=self.lr)


def test_kit_catches_a_fused_optimiser_that_is_not_make_optimizer(monkeypatch):
    from dmisearch import engine

    kit = AlgorithmContract()
    with pytest.raises(AssertionError, match=r"shared_lr \(lr=0.005\), job of size 8: "
                                             r"fused losses differ"):
        kit.test_fused_training_equals_the_loop(SharedLR(steps=6, batch_size=4), FCN(width=8),
                                                "regression")
    monkeypatch.setattr(engine, "_UNFUSED_WARNED", set())
    with pytest.warns(RuntimeWarning, match="nesterov_sgd_test"):  # the loop: it passes
        kit.test_fused_training_equals_the_loop(NesterovSGD(steps=6, batch_size=4),
                                                FCN(width=8), "regression")


def test_kit_smoke_study_runs_an_unregistered_algorithm():
    from dmisearch.testing import _study_doc

    kit = AlgorithmContract()
    kit.test_one_trial_study_completes_on_the_cpu(
        MeanOfOwn(), _study_doc(MeanOfOwn(), data=None, model=FCN(width=8, depth=1),
                                algorithm=None), [MeanOfOwn, FCN])


def test_kit_without_pytest_says_how_to_install_it():
    """pytest is in the [test] extras only: importing the kit without it names the fix."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['pytest'] = None\n"  # as if pytest were not installed
            "import dmisearch, dmisearch.plugins\n"  # the rest of dmisearch does not need it
            "import dmisearch.testing\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode != 0
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: dmisearch.testing (the conformance kit) runs under "
                           "pytest, which is not installed: pip install pytest"), last
    assert 'pip install "dmisearch[test]"' in last


def test_trials_of_an_sgd_subclass_run_its_own_make_optimizer(tiny_doc, monkeypatch):
    """Fused, sgd's optimiser would train the subclass and its trials would complete."""
    import optuna
    from testplugins import RaisingSGD

    from dmisearch import engine
    from dmisearch.errors import DmisearchError
    from dmisearch.runner import run_study
    from dmisearch.study_file import build_spec

    monkeypatch.setattr(engine, "_UNFUSED_WARNED", set())
    tiny_doc["search"].update(models=["fcn"], algorithms=["raising_sgd_test"], n_trials=2)
    tiny_doc["search"]["space"] = {"model": {"fcn": {"width": 8, "depth": 1}},
                                   "algorithm": {"raising_sgd_test": {"steps": 5}}}
    with registered(make_plugin(RaisingSGD)):
        spec = build_spec(tiny_doc, load_registry(), storage="memory")
    told: list[optuna.trial.FrozenTrial] = []
    with pytest.warns(RuntimeWarning, match="raising_sgd_test"), pytest.raises(
            DmisearchError, match="RaisingSGD.make_optimizer was called"):
        run_study(spec, on_trial=told.append)  # every trial fails: the run stops
    assert told and {t.state for t in told} == {optuna.trial.TrialState.FAIL}
    assert {t.user_attrs["error"] for t in told} == {
        "RuntimeError: RaisingSGD.make_optimizer was called"}


# ---------------------------------------------------------------- registration -------------


def test_registered_plugins_last_for_the_block_only(capsys):
    plugin = make_plugin(MeanOfOwn, GlobalRNGData, name="temporary")
    assert "mean_of_own" not in load_registry().names("algorithm")
    with registered(plugin):
        reg = load_registry()
        assert reg.entry("algorithm", "mean_of_own").plugin.name == "temporary"
        assert "global_rng" in reg.names("data")
        assert main(["plugins", "--json"]) == 0  # commands run in-process see it too
        listed = json.loads(capsys.readouterr().out)
        assert {"mean_of_own", "global_rng"} <= {c["name"] for c in listed["components"]}
    assert "mean_of_own" not in load_registry().names("algorithm")


def test_register_plugin_fixture(register_plugin):  # noqa: F811
    register_plugin(make_plugin(MeanOfOwn))
    assert "mean_of_own" in load_registry().names("algorithm")


# ---------------------------------------------------------------- local plugin files -------

PLUGIN_FILE = '''
import dataclasses

import torch

import dmisearch


@dataclasses.dataclass(kw_only=True)
class Ridge(dmisearch.Algorithm):
    """Linear ridge regression on the flattened inputs (closed form)."""

    name = "ridge_local"
    requires = frozenset()
    tasks = frozenset({"regression"})
    alpha: float = 1e-3

    def fit_predict(self, model, jobs, ctx):
        out = []
        for j in jobs:
            x, xt = j.x_train.flatten(1), j.x_test.flatten(1)
            a = x.T @ x + self.alpha * torch.eye(x.shape[1], dtype=x.dtype)
            w = torch.linalg.solve(a, x.T @ j.y_train)
            out.append(dmisearch.Predictions(test=xt @ w, train=x @ w))
        return out


@dmisearch.hookimpl
def register_algorithms(register):
    register(Ridge)
'''


def _study(tmp_path, tiny_doc, **study):
    tiny_doc["study"].update(study, storage=f"journal:{tmp_path / 'j.log'}")
    tiny_doc["data"] = {"name": "teacher", "family": "fcn", "shape": [1, 8], "width": 8,
                        "depth": 1}
    tiny_doc["search"].update(models=["fcn"], algorithms=["ridge_local"], n_trials=1)
    tiny_doc["search"]["space"] = {"model": {"fcn": {"width": 8, "depth": 1}}}
    path = tmp_path / "study.toml"
    path.write_text(dump_toml(tiny_doc))
    return path


def test_plugin_file_from_the_command_line(tmp_path, tiny_doc, capsys):
    (tmp_path / "ridge.py").write_text(PLUGIN_FILE)
    study = _study(tmp_path, tiny_doc)
    assert main(["run", str(study), "--no-progress"]) == 1  # not loaded: unknown algorithm
    assert "unknown algorithm 'ridge_local'" in capsys.readouterr().err
    assert main(["run", str(study), "--no-progress", "--plugin",
                 str(tmp_path / "ridge.py")]) == 0
    out = capsys.readouterr().out
    assert "teacher | fcn | ridge_local" in out


def test_plugin_file_named_by_the_study_file(tmp_path, tiny_doc, capsys, monkeypatch):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "ridge.py").write_text(PLUGIN_FILE)
    study = _study(tmp_path, tiny_doc, plugins=["plugins/ridge.py"])
    monkeypatch.chdir("/")  # relative to the study file, not the working directory
    assert main(["run", str(study), "--no-progress"]) == 0
    assert "ridge_local" in capsys.readouterr().out
    from dmisearch.study_file import load_study

    spec = load_study(study)  # the Python API loads the file's plugins as well
    assert list(spec.pairs) == [("fcn", "ridge_local")]


def test_missing_plugin_files_are_named(tmp_path, tiny_doc, capsys):
    study = _study(tmp_path, tiny_doc, plugins=["nowhere.py", "notes.txt"])
    assert main(["run", str(study)]) == 1
    err = capsys.readouterr().err
    assert "study.plugins: 'nowhere.py' does not exist" in err
    assert "'notes.txt' is not a Python file" in err
    assert main(["plugins", "--plugin", str(tmp_path / "gone.py")]) == 1
    assert "plugin file" in capsys.readouterr().err


def test_broken_plugin_file_is_shown_and_others_work(tmp_path, capsys):
    (tmp_path / "broken.py").write_text("import no_such_module_anywhere\n")
    (tmp_path / "mismatch.py").write_text(textwrap.dedent('''
        import dmisearch

        @dmisearch.hookimpl
        def register_algorithms(register, registry):
            pass
    '''))
    (tmp_path / "ridge.py").write_text(PLUGIN_FILE)
    assert main(["plugins", "--json", "--plugin", str(tmp_path / "broken.py"),
                 "--plugin", str(tmp_path / "mismatch.py"),
                 "--plugin", str(tmp_path / "ridge.py")]) == 0
    listed = json.loads(capsys.readouterr().out)
    plugins = {p["name"]: p for p in listed["plugins"]}
    assert plugins["broken"]["status"] == "broken"
    assert "No module named 'no_such_module_anywhere'" in plugins["broken"]["error"]
    assert str(tmp_path / "broken.py") in plugins["broken"]["origin"]
    assert plugins["mismatch"]["status"] == "broken" and "registry" in plugins["mismatch"][
        "error"]
    assert plugins["ridge"]["status"] == "loaded"
    assert "ridge_local" in {c["name"] for c in listed["components"]}
    assert main(["plugins", "--plugin", str(tmp_path / "broken.py")]) == 0
    text = capsys.readouterr().out
    assert "broken: broken, (not packaged), file" in text and "no_such_module" in text


def test_trace_reports_loads_and_hook_calls(tmp_path, capsys, monkeypatch):
    (tmp_path / "ridge.py").write_text(PLUGIN_FILE)
    assert main(["plugins", "--trace", "--plugin", str(tmp_path / "ridge.py")]) == 0
    err = capsys.readouterr().err
    assert "[dmisearch trace] plugin 'ridge' (file " in err
    assert "register_algorithms(register) by plugin 'ridge': registered ridge_local" in err
    assert "register_architectures(register) by plugin 'builtin-architectures': registered " \
           "fcn, lcn, cnn_vec, cnn_gap" in err
    import os

    assert "DMISEARCH_TRACE" not in os.environ  # --trace lasts for the command only
    lines: list[str] = []
    load_registry(trace=lines.append)
    assert any("builtin-data" in line for line in lines)
    monkeypatch.setenv("DMISEARCH_TRACE", "1")
    load_registry()
    assert "[dmisearch trace]" in capsys.readouterr().err


def test_workers_get_the_plugin_files():
    import argparse
    import os

    from dmisearch.workers import worker_command

    args = argparse.Namespace(study="s.toml", storage=None, n_trials=None, timeout=None,
                              seed=None, gpus=None, device=None, plugin=["a.py"])
    cmd = worker_command(args, 0, session=5)
    assert cmd[cmd.index("--plugin") + 1] == os.path.abspath("a.py")
    assert cmd[cmd.index("--session") + 1] == "5"


def test_only_and_block_lists_reach_plugin_files_too(tmp_path, monkeypatch):
    (tmp_path / "ridge.py").write_text(PLUGIN_FILE)
    monkeypatch.setenv("DMISEARCH_PLUGINS", "")  # no installed plugin at all
    reg = load_registry(files=[tmp_path / "ridge.py"])
    assert reg.names("algorithm") == ["ridge_local"]  # files are asked for explicitly
    assert reg.names("architecture") == []


def test_refused_classes_are_listed_under_their_plugin(tmp_path, capsys):
    (tmp_path / "nodefault.py").write_text(textwrap.dedent('''
        import dmisearch

        class NoDefault(dmisearch.Architecture):
            """Width has no default."""
            name = "no_default"

            def __init__(self, width):
                self.width = width

            def build(self, input_shape, out_dim):
                raise NotImplementedError

        @dmisearch.hookimpl
        def register_architectures(register):
            register(NoDefault)
    '''))
    assert main(["plugins", "--plugin", str(tmp_path / "nodefault.py")]) == 0
    out = capsys.readouterr().out
    assert "nodefault: loaded (1 class refused), (not packaged), file" in out
    assert "refused: " in out and "hyperparameter 'width' needs a default value" in out
    assert main(["plugins", "--json", "--plugin", str(tmp_path / "nodefault.py")]) == 0
    info = {p["name"]: p for p in json.loads(capsys.readouterr().out)["plugins"]}
    assert "'width' needs a default value" in info["nodefault"]["refused"][0]


def test_probe_loads_plugin_files_too(tmp_path, capsys):
    (tmp_path / "linear.py").write_text(textwrap.dedent('''
        import dataclasses, math
        from torch import nn
        import dmisearch

        @dataclasses.dataclass(kw_only=True)
        class Linear(dmisearch.Architecture):
            """A linear readout of the flattened input."""
            name = "linear_local"

            def build(self, input_shape, out_dim):
                return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), out_dim))

        @dmisearch.hookimpl
        def register_architectures(register):
            register(Linear)
    '''))
    assert main(["probe", "--plugin", str(tmp_path / "linear.py"), "--model", "linear_local",
                 "--algorithm", "sgd", "--group", "permute", "--seeds", "4"]) == 0
    out = capsys.readouterr().out
    assert "linear_local / sgd under permute" in out and "verdict:" in out


def test_components_of_a_plugin_file_pickle(tmp_path):
    import pickle

    (tmp_path / "ridge.py").write_text(PLUGIN_FILE)
    cls = load_registry(files=[tmp_path / "ridge.py"]).get("algorithm", "ridge_local")
    again = pickle.loads(pickle.dumps(cls(alpha=0.5)))
    assert type(again) is cls and again.alpha == 0.5
