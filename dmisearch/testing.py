"""A conformance kit for plugin authors: pytest contract classes and fixtures.

Subclass the contract of your component's kind and override one fixture, ``component``,
returning an instance (with small hyperparameters, so the checks take seconds)::

    from dmisearch.testing import ArchitectureContract

    class TestMyNet(ArchitectureContract):
        @pytest.fixture
        def component(self):
            return MyNet(width=8)

Every ``test_*`` method of the contract then runs against it. What each contract checks:

``ComponentContract`` (every kind)
    the class registers cleanly (name, keyword hyperparameters with defaults, search space
    naming constructor keywords); it has a one-line summary; ``get_params`` rebuilds an
    equal component; every corner of the search space and a few random points round-trip
    through Optuna (suggested, constructed, read back, ``check()`` passes); a one-trial
    study using the component completes on the CPU.
``DataGeneratorContract``
    ``describe()`` is well-formed; ``sample()`` matches it (shapes, dtypes, label range,
    finite values); the same seed gives the same samples whatever torch's global RNG holds,
    another seed other samples.
``TransformContract``
    accepts ``input_shape``; ``apply`` and ``augment`` keep shape and dtype, do not modify
    their input and are deterministic in the generator; a finite ``orbit`` starts with the
    identity and contains every augmented sample.
``ArchitectureContract``
    ``build`` maps ``(n, *input_shape)`` to ``(n, out_dim)``, on the CPU in the default
    dtype, deterministically in torch's seed; ``forward_batched`` equals the module run job
    by job; the fused engine trains it exactly like the one-model-at-a-time loop with SGD
    (momentum, weight decay) and Adam (float64, relative ``fused_tolerance``); analytic
    kernels it provides are symmetric, positive semi-definite and consistent by blocks.
``AlgorithmContract``
    ``fit_predict`` returns one finite prediction of the right shape per job, the same on a
    second call, and the same for a job whether it runs alone or with others; for a
    ``MinibatchAlgorithm``, the fused engine trains it exactly like the loop with its
    ``make_optimizer``, jobs with other values of its ``per_job`` hyperparameters in the
    same program (float64, relative ``fused_tolerance``).

Fixtures you may override besides ``component``: ``input_shape`` and ``out_dim``
(architectures, transforms), ``model`` and ``task`` (algorithms), ``study_doc`` (the
one-trial study, as a dict shaped like a study file).

Module-level fixtures, for ``pytest_plugins = ["dmisearch.testing"]`` in a ``conftest.py``:
``register_plugin`` (register plugin objects until the test ends) and ``plugin_registry``.
:func:`make_plugin` turns component classes into a plugin object.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any, ClassVar

import optuna
import pytest
import torch

from dmisearch import factory
from dmisearch.components import (
    TASKS,
    Algorithm,
    Architecture,
    Component,
    DataGenerator,
    DataInfo,
    Job,
    RunContext,
    Transform,
)
from dmisearch.data import check_split, jsonable
from dmisearch.errors import DmisearchError
from dmisearch.hookspecs import REGISTER_HOOKS, hookimpl
from dmisearch.plugins import Registry, class_problem, load_registry, registered
from dmisearch.space import corners, suggest

__all__ = [
    "AlgorithmContract",
    "ArchitectureContract",
    "ComponentContract",
    "DataGeneratorContract",
    "TransformContract",
    "make_plugin",
    "plugin_registry",
    "register_plugin",
    "registry_with",
]

#: Random points of a search space tried by ``test_search_space_round_trips``.
SPACE_SAMPLES = 5


# --------------------------------------------------------------------------------------------
# plugins for a test
# --------------------------------------------------------------------------------------------


def make_plugin(*classes: type[Component], name: str = "test_plugin") -> object:
    """A plugin object registering ``classes`` (each under the hook of its kind)."""

    def hook(kind: str) -> Any:
        def register_kind(register: Any) -> None:
            for cls in classes:
                if cls.kind == kind:
                    register(cls)

        return hookimpl(register_kind)

    attrs: dict[str, Any] = {"__name__": name}
    for kind, hook_name in REGISTER_HOOKS.items():
        if any(getattr(c, "kind", None) == kind for c in classes):
            attrs[hook_name] = staticmethod(hook(kind))
    return type(name, (), attrs)()


def registry_with(*classes: type[Component]) -> Registry:
    """The installed plugins plus ``classes`` (those not already registered as themselves)."""
    base = load_registry()
    extra = []
    for cls in classes:
        try:
            if base.get(cls.kind, cls.name) is cls:
                continue
        except Exception:  # unknown, or claimed twice: registering it says which
            pass
        extra.append(cls)
    if not extra:
        return base
    return load_registry(plugins=[make_plugin(*extra, name="dmisearch_testing_plugin")])


@pytest.fixture
def register_plugin() -> Iterator[Any]:
    """``register_plugin(obj, ...)``: every registry built until the test ends (including
    by commands run in-process with ``dmisearch.cli.main``) also loads these plugins."""
    with contextlib.ExitStack() as stack:
        yield lambda *plugins: stack.enter_context(registered(*plugins))


@pytest.fixture
def plugin_registry() -> Registry:
    """A registry of the installed plugins (plus any registered with ``register_plugin``
    earlier in the test)."""
    return load_registry()


# --------------------------------------------------------------------------------------------
# contracts
# --------------------------------------------------------------------------------------------


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _ctx(task: str, out_dim: int, input_shape: tuple[int, ...],
         dtype: torch.dtype = torch.float64) -> RunContext:
    return RunContext(torch.device("cpu"), dtype, task, out_dim, tuple(input_shape))


def _problem(task: str, shape: tuple[int, ...], out_dim: int, n: int, n_test: int,
             seed: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g, dtype=dtype)
    y = (torch.randn(n, out_dim, generator=g, dtype=dtype) if task == "regression"
         else torch.randint(0, out_dim, (n,), generator=g))
    return x, y, torch.randn(n_test, *shape, generator=g, dtype=dtype)


def _default_model() -> Architecture:
    from dmisearch_builtins.architectures import FCN

    return FCN(width=16, depth=1)


def _default_algorithm(model: type[Architecture]) -> Algorithm:
    from dmisearch_builtins.algorithms import SGD
    from dmisearch_builtins.kernel_algorithms import NTK

    if "module" in model.provides:
        return SGD(lr=0.05, steps=5, batch_size=8)
    if "ntk" in model.provides:
        return NTK()
    raise AssertionError(
        f"architecture '{model.name}' provides {sorted(model.provides)}; override the "
        "`study_doc` fixture to pair it with an algorithm that can use it")


class ComponentContract:
    """Checks every component must pass; subclass a kind's contract, not this one."""

    kind: ClassVar[str] = ""

    @pytest.fixture
    def component(self) -> Component:
        """Override: return an instance of your component with small hyperparameters."""
        pytest.fail(f"{type(self).__name__}: override the `component` fixture to return an "
                    "instance of the component under test")

    # ---- the study used by the smoke run -----------------------------------------------

    @pytest.fixture
    def study_doc(self, component: Component) -> dict[str, Any]:
        """A one-trial study using ``component``, as a parsed study file."""
        return _study_doc(component, data=None, model=None, algorithm=None)

    @pytest.fixture
    def classes_under_test(self, component: Component) -> list[type[Component]]:
        """Classes the smoke study registers if they are not installed."""
        return [type(component)]

    # ---- checks ------------------------------------------------------------------------

    def test_class_registers_cleanly(self, component: Component) -> None:
        cls = type(component)
        assert cls.kind == self.kind, f"{cls.__qualname__} is a {cls.kind}, not a {self.kind}"
        why = class_problem(self.kind, cls)
        assert why is None, why

    def test_has_a_summary(self, component: Component) -> None:
        assert type(component).summary(), (
            f"{type(component).__qualname__} needs a docstring: its first line is what "
            "`dmisearch plugins` shows")

    def test_params_rebuild_an_equal_component(self, component: Component) -> None:
        params = component.get_params()
        again = factory.instantiate(type(component), params, component.name,
                                    factory.Problems(raising=True))
        assert again is not None and again.get_params() == params

    def test_search_space_round_trips(self, component: Component) -> None:
        cls = type(component)
        base = component.get_params()
        points = list(corners(cls.space)) if cls.space else []
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(SPACE_SAMPLES if cls.space else 0):
            points.append(suggest(study.ask(), cls.name, cls.space))
        for values in points:
            try:  # as a study builds it
                obj = factory.instantiate(cls, {**base, **values}, cls.name,
                                          factory.Problems(raising=True))
            except DmisearchError as exc:
                raise AssertionError(
                    f"{cls.name}: the search space reaches {values}, which check() rejects "
                    f"({exc}); narrow `space` or accept the value") from exc
            assert obj is not None
            got = obj.get_params()
            for key, value in values.items():
                assert got[key] == value, (
                    f"{cls.name}: hyperparameter '{key}' was set to {value!r} but "
                    f"get_params() reads {got[key]!r}: store it as an attribute of that name")

    def test_one_trial_study_completes_on_the_cpu(
        self, component: Component, study_doc: dict[str, Any],
        classes_under_test: list[type[Component]],
    ) -> None:
        from dmisearch.runner import run_study
        from dmisearch.study_file import build_spec

        registry = registry_with(*classes_under_test)
        spec = build_spec(study_doc, registry, source=f"<{component.name} smoke study>")
        study = run_study(spec)
        trials = study.get_trials(deepcopy=False)
        assert len(trials) == 1
        t = trials[0]
        assert t.state == optuna.trial.TrialState.COMPLETE, (
            f"trial {t.state.name}: "
            f"{t.user_attrs.get('error') or t.user_attrs.get('pruned_reason')}")
        assert math.isfinite(t.value)
        assert list(t.user_attrs["curve"]["size"]) == [
            n for n in spec.grid.sizes for _ in spec.grid.seeds]


class DataGeneratorContract(ComponentContract):
    """Contract of a ``DataGenerator``."""

    kind = "data"

    @pytest.fixture
    def study_doc(self, component: DataGenerator) -> dict[str, Any]:
        return _study_doc(None, data=component, model=None, algorithm=None)

    def _sizes(self, info: DataInfo) -> tuple[int, int]:
        n_train, n_test = 16, 8
        if info.n_available is not None:
            spare = info.n_available - (0 if info.n_test_available else n_test)
            n_train = min(n_train, spare)
        if info.n_test_available is not None:
            n_test = min(n_test, info.n_test_available)
        return n_train, n_test

    def test_describe_is_well_formed(self, component: DataGenerator) -> None:
        info = component.describe()
        assert isinstance(info, DataInfo)
        assert len(info.input_shape) >= 1 and all(
            isinstance(s, int) and s > 0 for s in info.input_shape), info.input_shape
        assert info.task in TASKS
        assert isinstance(info.out_dim, int) and info.out_dim >= 1
        if info.task == "classification":
            assert info.out_dim >= 2, "classification needs at least two classes"
        assert info.n_available is None or info.n_available >= 1

    def test_samples_match_the_description(self, component: DataGenerator) -> None:
        info = component.describe()
        n_train, n_test = self._sizes(info)
        why = check_split(component.sample(n_train, n_test, 0), info, n_train, n_test)
        assert why is None, why

    def test_samples_are_determined_by_the_seed(self, component: DataGenerator) -> None:
        n_train, n_test = self._sizes(component.describe())
        torch.manual_seed(123)
        a = component.sample(n_train, n_test, 5)
        torch.manual_seed(456)  # the global RNG must not matter
        b = component.sample(n_train, n_test, 5)
        for name in ("x_train", "y_train", "x_test", "y_test"):
            assert torch.equal(getattr(a, name), getattr(b, name)), (
                f"sample(seed=5) returned different {name} on two calls: draw from a "
                "torch.Generator seeded by `seed`, not from the global RNG")
        c = component.sample(n_train, n_test, 6)
        assert not torch.equal(a.x_train, c.x_train), "seeds 5 and 6 drew the same samples"


class TransformContract(ComponentContract):
    """Contract of a ``Transform``."""

    kind = "transform"

    @pytest.fixture
    def input_shape(self) -> tuple[int, ...]:
        """One input's shape, ``(channels, *spatial)``: override for 2-D-only transforms."""
        return (1, 8)

    @pytest.fixture
    def study_doc(self, component: Transform, input_shape: tuple[int, ...]) -> dict[str, Any]:
        return _study_doc(component, data=None, model=None, algorithm=None,
                          input_shape=input_shape)

    def test_accepts_the_input_shape(self, component: Transform,
                                     input_shape: tuple[int, ...]) -> None:
        assert component.check_input(tuple(input_shape)) is None

    @pytest.mark.parametrize("method", ["apply", "augment"])
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_keeps_shape_and_dtype_and_is_seeded(
        self, component: Transform, input_shape: tuple[int, ...], method: str,
        dtype: torch.dtype,
    ) -> None:
        x = torch.randn(6, *input_shape, generator=torch.Generator().manual_seed(0),
                        dtype=dtype)
        before = x.clone()
        fn = getattr(component, method)
        y1 = fn(x, torch.Generator().manual_seed(1))
        assert torch.equal(x, before), f"{method}() modified its input in place"
        assert y1.shape == x.shape and y1.dtype == dtype, (y1.shape, y1.dtype)
        y2 = fn(x, torch.Generator().manual_seed(1))
        assert torch.equal(y1, y2), f"{method}() is not determined by its generator"

    def test_orbit_starts_at_the_identity_and_holds_every_augmentation(
        self, component: Transform, input_shape: tuple[int, ...]
    ) -> None:
        x = torch.randn(5, *input_shape, generator=torch.Generator().manual_seed(0),
                        dtype=torch.float64)
        orbit = component.orbit(x)
        if orbit is None:
            pytest.skip(f"'{component.name}' does not enumerate its group (orbit is None)")
        assert orbit.shape[1:] == x.shape and orbit.shape[0] >= 1
        assert torch.equal(orbit[0], x), "orbit()[0] must be x itself (the identity)"
        aug = component.augment(x, torch.Generator().manual_seed(3))
        for i in range(len(x)):
            gaps = (orbit[:, i] - aug[i]).flatten(1).abs().amax(1)
            assert float(gaps.min()) < 1e-12, (
                f"augment() moved sample {i} outside its orbit: the group of augment() and "
                "orbit() must agree")


class ArchitectureContract(ComponentContract):
    """Contract of an ``Architecture``."""

    kind = "architecture"
    #: Relative tolerance of fused training against the loop, float64. Raise it (and say
    #: why in your docs) only for modules with random layers such as dropout.
    fused_tolerance: ClassVar[float] = 1e-10

    @pytest.fixture
    def input_shape(self, component: Architecture) -> tuple[int, ...]:
        """A small input shape the architecture accepts (override for other shapes)."""
        for shape in ((2, 8), (1, 6, 6), (1, 4, 4, 4)):
            if component.check_input(shape) is None:
                return shape
        pytest.fail(f"override `input_shape`: '{component.name}' takes none of the "
                    "default shapes")

    @pytest.fixture
    def out_dim(self) -> int:
        return 3

    @pytest.fixture
    def study_doc(self, component: Architecture, input_shape: tuple[int, ...]
                  ) -> dict[str, Any]:
        return _study_doc(component, data=None, model=None, algorithm=None,
                          input_shape=input_shape)

    def _build(self, component: Architecture, shape: tuple[int, ...], out_dim: int,
               seed: int) -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return component.build(tuple(shape), out_dim)

    def test_build_maps_inputs_to_outputs(self, component: Architecture,
                                          input_shape: tuple[int, ...], out_dim: int) -> None:
        if "module" not in component.provides:
            pytest.skip(f"'{component.name}' provides no trainable module")
        module = self._build(component, input_shape, out_dim, 0)
        assert isinstance(module, torch.nn.Module)
        for p in module.parameters():
            assert p.device.type == "cpu" and p.dtype == torch.get_default_dtype(), (
                "build() must leave the module on the CPU in the default dtype: "
                "the engine places it")
        out = module(torch.randn(5, *input_shape))
        assert out.shape == (5, out_dim), f"expected (5, {out_dim}), got {tuple(out.shape)}"

    def test_build_is_determined_by_torch_seed(self, component: Architecture,
                                               input_shape: tuple[int, ...],
                                               out_dim: int) -> None:
        if "module" not in component.provides:
            pytest.skip(f"'{component.name}' provides no trainable module")
        a = self._build(component, input_shape, out_dim, 0).state_dict()
        b = self._build(component, input_shape, out_dim, 0).state_dict()
        c = self._build(component, input_shape, out_dim, 1).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), "same seed, different weights"
        assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point()), (
            "seeds 0 and 1 gave the same weights: draw them from torch's global RNG")

    def test_forward_batched_equals_the_module(self, component: Architecture,
                                               input_shape: tuple[int, ...],
                                               out_dim: int) -> None:
        if "module" not in component.provides:
            pytest.skip(f"'{component.name}' provides no trainable module")
        from torch.func import stack_module_state

        mods = [self._build(component, input_shape, out_dim, s).double() for s in range(3)]
        params, buffers = stack_module_state(mods)
        x = torch.randn(3, 4, *input_shape, dtype=torch.float64)
        out = component.forward_batched(mods[0])(params, buffers, x)
        assert out.shape == (3, 4, out_dim)
        for k, m in enumerate(mods):
            assert _rel(out[k], m(x[k])) < 1e-12, f"job {k} differs from its module"

    @pytest.mark.parametrize("task", ["regression", "classification"])
    def test_fused_training_equals_the_loop(self, component: Architecture,
                                            input_shape: tuple[int, ...], out_dim: int,
                                            task: str) -> None:
        if "module" not in component.provides:
            pytest.skip(f"'{component.name}' provides no trainable module")
        from dmisearch import engine
        from dmisearch.training import train_one
        from dmisearch_builtins.algorithms import SGD, Adam

        ctx = _ctx(task, out_dim, input_shape)
        members = []
        for algo in (SGD(lr=0.05, momentum=0.9, weight_decay=1e-3, steps=6, batch_size=4),
                     Adam(lr=0.01, weight_decay=1e-3, steps=6, batch_size=4)):
            for seed, n in ((0, 8), (1, 12)):
                x, y, xt = _problem(task, input_shape, out_dim, n, 5, seed)
                members.append(engine.Member(component, algo, Job(x, y, xt, seed)))
        fused = engine.train(members, ctx)
        for m, f in zip(members, fused, strict=True):
            ref = train_one(m.algo, m.model, m.job, ctx)
            for what, a, b in (("losses", f.losses, ref.losses), ("test", f.test, ref.test),
                               ("train", f.train, ref.train)):
                gap = _rel(a, b)
                assert gap < self.fused_tolerance, (
                    f"{type(m.algo).__name__}, job of size {m.job.size}: fused {what} differ "
                    f"from the loop by {gap:.2e} (relative)")

    @pytest.mark.parametrize("kernel", ["nngp", "ntk"])
    def test_kernels_are_symmetric_psd_and_consistent(
        self, component: Architecture, input_shape: tuple[int, ...], kernel: str
    ) -> None:
        if kernel not in component.provides or component.capability_problem(kernel):
            pytest.skip(f"'{component.name}' provides no {kernel} kernel with these "
                        "hyperparameters")
        g = torch.Generator().manual_seed(0)
        x1 = torch.randn(6, *input_shape, generator=g, dtype=torch.float64)
        x2 = torch.randn(4, *input_shape, generator=g, dtype=torch.float64)
        k11 = component.kernel(x1, None, kernel)
        k12 = component.kernel(x1, x2, kernel)
        assert k11.dtype == torch.float64 and k11.shape == (6, 6) and k12.shape == (6, 4)
        assert _rel(k11, k11.T) < 1e-12, "k(x, x) is not symmetric"
        eig = torch.linalg.eigvalsh(k11)
        assert float(eig.min()) > -1e-9 * float(eig.abs().max()), "k(x, x) is not PSD"
        both = component.kernel(torch.cat([x1, x2]), None, kernel)
        assert _rel(both[:6, 6:], k12) < 1e-10, "k(x1, x2) disagrees with k([x1, x2])"


class AlgorithmContract(ComponentContract):
    """Contract of an ``Algorithm``."""

    kind = "algorithm"
    #: Relative tolerance of fused training against the loop, float64 (a
    #: ``MinibatchAlgorithm``'s): as ``ArchitectureContract.fused_tolerance``.
    fused_tolerance: ClassVar[float] = 1e-10

    @pytest.fixture
    def model(self) -> Architecture:
        """The architecture the algorithm is checked with (default: a small fcn)."""
        return _default_model()

    @pytest.fixture
    def classes_under_test(self, component: Algorithm, model: Architecture
                           ) -> list[type[Component]]:
        return [type(component), type(model)]

    @pytest.fixture
    def task(self, component: Algorithm) -> str:
        return "regression" if "regression" in component.tasks else "classification"

    @pytest.fixture
    def study_doc(self, component: Algorithm, model: Architecture, task: str
                  ) -> dict[str, Any]:
        data = None
        if task == "classification":
            from dmisearch_builtins.data import Digits

            data = Digits()
        return _study_doc(component, data=data, model=model, algorithm=None)

    def _run(self, component: Algorithm, model: Architecture, task: str,
             specs: list[tuple[int, int]]) -> list[Any]:
        shape, out_dim = (1, 8), (1 if task == "regression" else 3)
        ctx = _ctx(task, out_dim, shape)
        jobs = []
        for seed, n in specs:
            x, y, xt = _problem(task, shape, out_dim, n, 7, 100 + seed)
            jobs.append(Job(x, y, xt, seed))
        return component.fit_predict(model, jobs, ctx)

    def test_can_use_the_model(self, component: Algorithm, model: Architecture) -> None:
        why = component.model_problem(model)
        assert why is None, f"override the `model` fixture: {why}"

    def test_predictions_have_the_right_shapes(self, component: Algorithm,
                                               model: Architecture, task: str) -> None:
        specs = [(0, 8), (1, 8), (0, 16)]
        preds = self._run(component, model, task, specs)
        assert len(preds) == len(specs), "one Predictions per job, in order"
        out_dim = 1 if task == "regression" else 3
        for (_, n), p in zip(specs, preds, strict=True):
            assert p.test.shape == (7, out_dim) and p.train.shape == (n, out_dim)
            assert p.test.dtype == torch.float64, "predictions must keep ctx.dtype"
            assert not p.diverged and torch.isfinite(p.test).all()

    def test_is_deterministic_and_jobs_are_independent(
        self, component: Algorithm, model: Architecture, task: str
    ) -> None:
        together = self._run(component, model, task, [(0, 8), (1, 16), (2, 12)])
        again = self._run(component, model, task, [(0, 8), (1, 16), (2, 12)])
        alone = self._run(component, model, task, [(1, 16)])
        for a, b in zip(together, again, strict=True):
            assert _rel(a.test, b.test) < 1e-12, "two identical calls predicted differently"
        assert _rel(together[1].test, alone[0].test) < 1e-10, (
            "a job's predictions changed when other jobs ran beside it")

    def test_fused_training_equals_the_loop(self, component: Algorithm, model: Architecture,
                                            task: str) -> None:
        from dmisearch import engine
        from dmisearch.training import MinibatchAlgorithm, train_one

        if not isinstance(component, MinibatchAlgorithm):
            pytest.skip(f"'{component.name}' is no MinibatchAlgorithm: the engine never "
                        "trains it")
        shape, out_dim = (1, 8), (1 if task == "regression" else 3)
        ctx = _ctx(task, out_dim, shape)
        other = _per_job_variant(component)
        members = []  # the variant beside the component's first job: one fused program
        for algo, seed, n in ((component, 0, 8), (component, 1, 12), (other, 2, 8)):
            x, y, xt = _problem(task, shape, out_dim, n, 5, 100 + seed)
            members.append(engine.Member(model, algo, Job(x, y, xt, seed)))
        fused = engine.train(members, ctx)
        for m, f in zip(members, fused, strict=True):
            ref = train_one(m.algo, m.model, m.job, ctx)
            for what, a, b in (("losses", f.losses, ref.losses), ("test", f.test, ref.test)):
                gap = _rel(a, b)
                assert gap < self.fused_tolerance, (
                    f"{component.name} ({_changed(component, m.algo)}), job of size "
                    f"{m.job.size}: fused {what} differ from make_optimizer's loop by "
                    f"{gap:.2e} (relative): fused_optimizer must update each job as "
                    "make_optimizer would, with that job's own per_job hyperparameters")


def _per_job_variant(algo: Algorithm) -> Algorithm:
    """``algo`` with each nonzero float ``per_job`` hyperparameter halved, where ``check()``
    accepts it: a job of another trial that the engine fuses with ``algo``'s jobs."""
    params = algo.get_params()
    for name in sorted(getattr(algo, "per_job", ())):
        value = params.get(name)
        if not isinstance(value, float) or value == 0:
            continue
        try:
            type(algo)(**{**params, name: value / 2}).check()
        except ValueError:
            continue
        params[name] = value / 2
    return type(algo)(**params)


def _changed(base: Algorithm, algo: Algorithm) -> str:
    """The hyperparameters of ``algo`` that differ from ``base``'s, as text."""
    a, b = base.get_params(), algo.get_params()
    return ", ".join(f"{k}={v!r}" for k, v in b.items() if a.get(k) != v) or (
        "hyperparameters as given")


# --------------------------------------------------------------------------------------------
# the smoke study
# --------------------------------------------------------------------------------------------


def _entry(component: Component) -> dict[str, Any]:
    return jsonable(component.get_params())


def _study_doc(
    under_test: Component | None,
    *,
    data: DataGenerator | None,
    model: Architecture | None,
    algorithm: Algorithm | None,
    input_shape: tuple[int, ...] = (1, 8),
) -> dict[str, Any]:
    """A one-trial study with tiny curves using ``under_test`` (or the given parts)."""
    transforms: list[Any] = []
    if isinstance(under_test, Transform):
        transforms = [{"name": under_test.name, **_entry(under_test)}]
    elif isinstance(under_test, Architecture):
        model = under_test
    elif isinstance(under_test, Algorithm):
        algorithm = under_test
    if data is not None:
        data_doc = {"name": data.name, **_entry(data)}
    else:
        data_doc = {"name": "teacher", "family": "fcn", "shape": list(input_shape),
                    "width": 8, "depth": 1}
    if transforms:
        data_doc["transforms"] = transforms
    model = model if model is not None else _default_model()
    algorithm = algorithm if algorithm is not None else _default_algorithm(type(model))
    return {
        "study": {"name": "conformance", "storage": "memory", "device": "cpu",
                  "dtype": "float64"},
        "data": data_doc,
        "curve": {"sizes": [8, 16], "seeds": 2, "test_size": 16},
        "search": {
            "models": [model.name], "algorithms": [algorithm.name], "n_trials": 1,
            "seed": 0, "sampler": "random", "pruner": "none",
            "space": {"model": {model.name: _entry(model)},
                      "algorithm": {algorithm.name: _entry(algorithm)}},
        },
    }

