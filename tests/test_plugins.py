"""Plugin loading and the registry: entry points, provenance, clashes, broken plugins."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import subprocess
import sys

import pytest
import torch

import dmisearch
from dmisearch import Architecture, hookimpl
from dmisearch.errors import PluginError, UnknownComponentError
from dmisearch.plugins import ENV_BLOCK, ENV_ONLY, class_problem, load_registry
from dmisearch.space import Int

BUILTINS = {
    "data": ["digits", "teacher"],
    "transform": ["permute", "rotate", "shift"],
    "architecture": ["cnn_gap", "cnn_vec", "fcn", "lcn"],
    "algorithm": ["adam", "sgd"],
}


@dataclasses.dataclass(kw_only=True)
class Linear(Architecture):
    """A linear model (test plugin)."""

    name = "linear_test"
    bias: bool = True

    def build(self, input_shape, out_dim):
        import math

        return torch.nn.Sequential(torch.nn.Flatten(),
                                   torch.nn.Linear(math.prod(input_shape), out_dim, self.bias))


@dataclasses.dataclass(kw_only=True)
class FakeFCN(Linear):
    """Claims the name of a built-in."""

    name = "fcn"


class Plugin:
    """A plugin object whose register_architectures registers the given classes."""

    def __init__(self, *classes, name="test_plugin"):
        self.classes, self.__name__ = classes, name

    @hookimpl
    def register_architectures(self, register):
        for c in self.classes:
            register(c)


def test_builtins_register_through_entry_points():
    reg = load_registry()
    for kind, names in BUILTINS.items():
        assert set(names) <= set(reg.names(kind)), kind
    fcn = reg.entry("architecture", "fcn")
    assert (fcn.package, fcn.version) == ("dmisearch", dmisearch.__version__)
    assert fcn.plugin.name == "builtin-architectures"
    assert fcn.plugin.origin == "entry point dmisearch_builtins.architectures"
    assert reg.problems == []


def test_importing_dmisearch_loads_no_plugin():
    code = ("import sys, dmisearch; "
            "print(any(m.startswith('dmisearch_builtins') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_unknown_name_lists_known_and_suggests():
    reg = load_registry()
    with pytest.raises(UnknownComponentError) as info:
        reg.entry("architecture", "cnn_gapp")
    msg = str(info.value)
    assert "unknown architecture 'cnn_gapp'" in msg and "did you mean 'cnn_gap'" in msg
    assert "cnn_vec, fcn, lcn" in msg


def test_duplicate_name_is_an_error_naming_both_while_others_work():
    reg = load_registry(plugins=[Plugin(FakeFCN, name="shadow")])
    with pytest.raises(PluginError) as info:
        reg.entry("architecture", "fcn")
    msg = str(info.value)
    assert "FCN" in msg and "FakeFCN" in msg
    assert "builtin-architectures" in msg and "shadow" in msg
    assert any("registered by" in p and "shadow" in p for p in reg.problems)
    assert reg.get("architecture", "lcn").name == "lcn"


def test_extra_plugin_components_are_usable():
    reg = load_registry(entry_points=False, plugins=[Plugin(Linear)])
    assert reg.names("architecture") == ["linear_test"]
    assert reg.entry("architecture", "linear_test").package is None


def test_block_and_allow_lists(monkeypatch):
    monkeypatch.setenv(ENV_BLOCK, "builtin-algorithms")
    reg = load_registry()
    assert reg.names("algorithm") == []
    status = {p.name: p.status for p in reg.plugins}
    assert status["builtin-algorithms"] == "blocked"
    assert status["builtin-architectures"] == "loaded"
    monkeypatch.delenv(ENV_BLOCK)
    monkeypatch.setenv(ENV_ONLY, "builtin-architectures")
    reg = load_registry()
    assert reg.names("architecture") and not reg.names("data") and not reg.names("algorithm")
    monkeypatch.setenv(ENV_ONLY, "")
    assert list(load_registry()) == []


def _with_entry_points(monkeypatch, *extra):
    real = importlib.metadata.entry_points

    def fake(**kw):
        return list(real(**kw)) + list(extra)

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)


def test_a_plugin_that_fails_to_import_is_reported_and_others_load(monkeypatch):
    _with_entry_points(monkeypatch, importlib.metadata.EntryPoint(
        "broken-one", "no_such_module_for_dmisearch_tests", "dmisearch"))
    reg = load_registry()
    broken = {p.name: p for p in reg.plugins}["broken-one"]
    assert broken.status == "broken" and "ModuleNotFoundError" in broken.error
    assert "fcn" in reg.names("architecture")
    with pytest.raises(UnknownComponentError, match="broken-one"):
        reg.entry("architecture", "whatever")


class BadSignature:
    __name__ = "bad_signature"

    @hookimpl
    def register_architectures(self, register, not_an_argument):
        pass


class TypoHook:
    __name__ = "typo_hook"

    @hookimpl
    def register_architecture(self, register):  # missing 's'
        pass


class Raises:
    __name__ = "raises"

    @hookimpl
    def register_algorithms(self, register):
        raise RuntimeError("boom")

    @hookimpl
    def register_architectures(self, register):
        register(Linear)


@pytest.mark.parametrize("plugin,expected", [
    (BadSignature(), "not_an_argument"),
    (TypoHook(), "did you mean 'register_architectures'"),
    (Raises(), "RuntimeError: boom"),
])
def test_broken_plugins_are_isolated(plugin, expected):
    reg = load_registry(plugins=[plugin])
    info = {p.name: p for p in reg.plugins}[plugin.__name__]
    assert info.status == "broken" and expected in info.error
    assert any(expected in p for p in reg.problems)
    assert "sgd" in reg.names("algorithm")  # the others keep working
    assert "linear_test" not in reg.names("architecture")  # nothing of a broken plugin


class NotAComponent:
    name = "nope"


@dataclasses.dataclass(kw_only=True)
class NoName(Linear):
    name = "Bad Name"


class Positional(Linear):
    name = "positional"

    def __init__(self, width):  # no default
        self.width = width


@dataclasses.dataclass(kw_only=True)
class BadSpace(Linear):
    name = "bad_space"
    space = {"depth": Int(1, 3)}


@dataclasses.dataclass(kw_only=True)
class Reserved(Linear):
    name = "reserved"
    transforms: int = 0


class Abstract(Architecture):
    name = "abstract"


@dataclasses.dataclass(kw_only=True)
class NoKernel(Linear):
    """Claims analytic kernels but inherits the base ``kernel``, which raises."""

    name = "no_kernel"
    provides = frozenset({"module", "nngp", "ntk"})


@pytest.mark.parametrize("cls,expected", [
    (NotAComponent, "not a subclass of dmisearch.Architecture"),
    (NoName, "class attribute `name`"),
    (Positional, "'width' needs a default value"),
    (BadSpace, "names 'depth' which is not a constructor keyword"),
    (Reserved, "'transforms' is reserved"),
    (Abstract, "does not implement build"),
    (NoKernel, "('no_kernel') provides nngp, ntk but does not implement kernel(x1, x2, kind)"),
])
def test_malformed_classes_are_rejected_with_the_reason(cls, expected):
    assert expected in class_problem("architecture", cls)
    reg = load_registry(entry_points=False, plugins=[Plugin(cls)])
    assert reg.names("architecture") == []
    assert any(expected in p for p in reg.problems)


def test_a_class_providing_kernels_is_accepted_once_it_implements_kernel():
    """The kernel rule asks for ``kernel`` only: ``kernel_key``'s default (the class and
    every hyperparameter) is a valid key for any architecture."""

    @dataclasses.dataclass(kw_only=True)
    class WithKernel(NoKernel):
        name = "with_kernel"

        def kernel(self, x1, x2, kind):
            x2 = x1 if x2 is None else x2
            return (x1.flatten(1) @ x2.flatten(1).T).double()

    @dataclasses.dataclass(kw_only=True)
    class ModuleOnly(NoKernel):  # takes the kernels out of provides instead
        name = "module_only"
        provides = frozenset({"module"})

    for cls in (WithKernel, ModuleOnly):
        assert class_problem("architecture", cls) is None
        reg = load_registry(entry_points=False, plugins=[Plugin(cls)])
        assert reg.names("architecture") == [cls.name]


def test_a_refused_name_says_it_was_refused_and_why():
    """Not "unknown ... install the plugin": the plugin is installed, its class refused."""
    reg = load_registry(plugins=[Plugin(Positional, name="widths")])
    assert [r.name for p in reg.plugins for r in p.refusals] == ["positional"]
    with pytest.raises(UnknownComponentError) as info:
        reg.entry("architecture", "positional")
    msg = str(info.value)
    assert msg.startswith("architecture 'positional' was refused when plugin 'widths' "
                          "loaded: ")
    assert "hyperparameter 'width' needs a default value; fix that class (passed in " in msg
    assert "unknown" not in msg and "Install" not in msg
    with pytest.raises(UnknownComponentError, match="unknown algorithm 'positional'"):
        reg.entry("algorithm", "positional")  # refused as an architecture only


def test_a_study_naming_a_refused_class_says_why(tiny_doc):
    from dmisearch.errors import StudyFileError
    from dmisearch.study_file import build_spec

    tiny_doc["search"]["models"] = ["positional"]
    reg = load_registry(plugins=[Plugin(Positional, name="widths")])
    with pytest.raises(StudyFileError, match=r"search.models\[0\]: architecture 'positional' "
                                             r"was refused when plugin 'widths' loaded"):
        build_spec(tiny_doc, reg, storage="memory")
