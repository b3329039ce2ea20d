"""The contract every component passes, and those of data generators and transforms."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import optuna
import pytest
import torch

from dmisearch import factory
from dmisearch.components import TASKS, Component, DataGenerator, DataInfo, Transform
from dmisearch.data import check_split
from dmisearch.errors import DmisearchError
from dmisearch.registry import class_problem
from dmisearch.space import corners, suggest
from dmisearch.testing.registration import registry_with
from dmisearch.testing.support import _study_doc

#: Random points of a search space tried by ``test_search_space_round_trips``.
SPACE_SAMPLES = 5


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
