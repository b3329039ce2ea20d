"""``dmisearch new-plugin``: a plugin package that installs and passes its tests as generated.

The package registers through the ``dmisearch`` entry-point group, holds one small but real
component per requested kind, a study file using them, a README, and tests built on the
conformance kit (``dmisearch.testing``). Templates use ``string.Template``: ``$name``
(the plugin name), ``$module`` (its import name), ``$Camel`` (a class-name prefix).
"""

from __future__ import annotations

import keyword
import re
import string
from collections.abc import Sequence
from pathlib import Path

from dmisearch.errors import DmisearchError
from dmisearch.hookspecs import REGISTER_HOOKS

#: Command-line kind -> (component kind, module file, class suffix, name suffix).
KINDS = {
    "data": ("data", "data.py", "Data", "linear"),
    "transform": ("transform", "transforms.py", "Negate", "negate"),
    "model": ("architecture", "models.py", "MLP", "mlp"),
    "algorithm": ("algorithm", "algorithms.py", "RMSprop", "rmsprop"),
}
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")

PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "dmisearch-$dist"
version = "0.1.0"
description = "dmisearch plugin: $summary"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["dmisearch>=0.1"]

[project.optional-dependencies]
test = ["pytest>=7"]

# This line is what makes it a plugin: dmisearch loads the module named here.
[project.entry-points.dmisearch]
$name = "$module.plugin"

[tool.setuptools.packages.find]
where = ["src"]

[tool.pytest.ini_options]
testpaths = ["tests"]
"""

README = """\
# dmisearch-$dist

A dmisearch plugin providing:

$listing

## Use it

```bash
pip install -e ".[test]"        # registers the plugin through its entry point
dmisearch plugins               # lists the components above, from dmisearch-$dist
python -m pytest                # the dmisearch conformance kit, against each component
dmisearch run study.toml        # a small study that uses them
```

Edit the components in `src/$module/`; `docs/plugins.md` in dmisearch is the reference of
every hook and base class.
"""

PLUGIN = '''\
"""The plugin module named by the `dmisearch` entry point in pyproject.toml."""

import dmisearch
$imports

$hooks'''

HOOK = '''
@dmisearch.hookimpl
def $hook(register):
    register($cls)
'''

DATA = '''\
"""A data generator: what a study learns from."""

import dataclasses

import torch

import dmisearch


@dataclasses.dataclass(kw_only=True)
class ${Camel}Data(dmisearch.DataGenerator):
    """Noisy linear regression: y = <w, x> / sqrt(d) + noise, with x ~ N(0, I_d)."""

    name = "${name}_linear"
    d: int = 16  # input dimension
    noise: float = 0.1  # standard deviation of the label noise
    seed: int = 0  # draws the fixed teacher vector w

    def check(self):
        if self.d < 1:
            raise ValueError(f"d must be >= 1, got {self.d}")
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")

    def describe(self):
        return dmisearch.DataInfo(input_shape=(1, self.d), task="regression", out_dim=1)

    def sample(self, n_train, n_test, seed):
        # Every random draw comes from generators seeded by the arguments: same seed, same
        # samples on every call and machine.
        w = torch.randn(self.d, generator=torch.Generator().manual_seed(self.seed))
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n_train + n_test, 1, self.d, generator=g)
        y = x.flatten(1) @ w / self.d**0.5 + self.noise * torch.randn(n_train + n_test,
                                                                     generator=g)
        y = y.unsqueeze(1)
        return dmisearch.Split(x[:n_train], y[:n_train], x[n_train:], y[n_train:])
'''

TRANSFORM = '''\
"""An input transform: a group acting on inputs (as data transform or augmentation)."""

import dataclasses

import torch

import dmisearch


@dataclasses.dataclass(kw_only=True)
class ${Camel}Negate(dmisearch.Transform):
    """The sign group {x, -x}: negates every input (data) or a random half (augmentation)."""

    name = "${name}_negate"

    def apply(self, x, generator):
        return -x

    def augment(self, x, generator):
        signs = torch.randint(0, 2, (len(x),), generator=generator) * 2 - 1
        return x * signs.to(x.dtype).view(-1, *([1] * (x.ndim - 1)))

    def orbit(self, x):
        return torch.stack([x, -x])  # identity first
'''

MODEL = '''\
"""An architecture: builds a torch module; the fused engine trains many of them at once."""

import dataclasses
import math

from torch import nn

import dmisearch
from dmisearch.space import Categorical, Int


@dataclasses.dataclass(kw_only=True)
class ${Camel}MLP(dmisearch.Architecture):
    """A fully-connected network with tanh units on the flattened input."""

    name = "${name}_mlp"
    width: int = 64  # hidden units per layer
    depth: int = 1  # hidden layers

    space = {"width": Categorical((32, 64, 128)), "depth": Int(1, 3)}

    def check(self):
        if self.width < 1 or self.depth < 0:
            raise ValueError(f"width must be >= 1 and depth >= 0, got {self.width}, "
                             f"{self.depth}")

    def build(self, input_shape, out_dim):
        # Built on the CPU from torch's global RNG, which dmisearch seeds per job.
        layers = [nn.Flatten()]
        fan_in = math.prod(input_shape)
        for _ in range(self.depth):
            layers += [nn.Linear(fan_in, self.width), nn.Tanh()]
            fan_in = self.width
        layers.append(nn.Linear(fan_in, out_dim))
        return nn.Sequential(*layers)
'''

ALGORITHM = '''\
"""An inference algorithm: here a torch optimiser, trained by dmisearch's fused engine."""

import dataclasses

import torch

from dmisearch import MinibatchAlgorithm
from dmisearch.space import Float, Int


@dataclasses.dataclass(kw_only=True)
class ${Camel}RMSprop(MinibatchAlgorithm):
    """RMSprop: steps scaled by a running average of squared gradients."""

    name = "${name}_rmsprop"
    lr: float = 1e-3  # learning rate
    alpha: float = 0.99  # smoothing constant of the squared-gradient average

    space = {"lr": Float(1e-4, 1e-1, log=True), "steps": Int(100, 2000, log=True)}

    def check(self):
        super().check()  # lr, steps, batch_size, weight_decay
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")

    def make_optimizer(self, params):
        return torch.optim.RMSprop(params, lr=self.lr, alpha=self.alpha,
                                   weight_decay=self.weight_decay)
'''

TEMPLATES = {"data": DATA, "transform": TRANSFORM, "model": MODEL, "algorithm": ALGORITHM}
SUMMARIES = {
    "data": "`${name}_linear`, a data generator (noisy linear regression)",
    "transform": "`${name}_negate`, a transform (the sign group {x, -x})",
    "model": "`${name}_mlp`, an architecture (a tanh MLP)",
    "algorithm": "`${name}_rmsprop`, an algorithm (RMSprop through the fused engine)",
}

CONFTEST = '''\
# Fixtures of the dmisearch conformance kit (register_plugin, plugin_registry).
pytest_plugins = ["dmisearch.testing"]
'''

TEST_HEAD = '''\
"""The dmisearch conformance kit, run against each component of this plugin.

Each class reuses a contract of dmisearch.testing by overriding one fixture, `component`:
every test_* of the contract then checks it (shapes, seeding, search space, a one-trial
study, and for models the fused engine against a plain PyTorch loop).
"""

import pytest

from dmisearch import testing
'''

TEST_CLASS = '''

class Test${Cls}(testing.${Contract}):
    @pytest.fixture
    def component(self):
        from ${module}.${file} import ${Cls}

        return ${Cls}(${small})
'''

CONTRACTS = {"data": "DataGeneratorContract", "transform": "TransformContract",
             "model": "ArchitectureContract", "algorithm": "AlgorithmContract"}
SMALL = {"data": "d=8", "transform": "", "model": "width=16",
         "algorithm": "steps=20, batch_size=8, lr=0.01"}

STUDY = """\
# A small study using this plugin's components: dmisearch run study.toml
[study]
name = "$name-demo"
device = "auto"

[data]
$data

[curve]
sizes = [16, 32, 64, 128]
seeds = 3
test_size = 256

[search]
models = [$models]
algorithms = [$algorithms]
n_trials = 8
sampler = "random"
pruner = "none"
seed = 0

# Fixed values keep the demo quick; remove a line to search that hyperparameter.
[search.space.model.fcn]
width = 64

[search.space.algorithm.adam]
steps = 300
$extra"""


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def check_name(name: str) -> None:
    if not _NAME_RE.match(name) or keyword.iskeyword(name):
        raise DmisearchError(
            f"plugin name {name!r} must be lowercase letters, digits and '_', starting with a "
            "letter (it becomes the module dmisearch_<name> and a prefix of component names)")


def scaffold(name: str, kinds: Sequence[str], where: str | Path = ".") -> Path:
    """Write the package ``dmisearch-<name>`` under ``where``; returns its folder."""
    check_name(name)
    kinds = ["model" if k == "architecture" else k for k in kinds]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise DmisearchError(f"unknown kind(s) {unknown}; choose from {', '.join(KINDS)}")
    kinds = [k for k in KINDS if k in kinds] or list(KINDS)
    dist = name.replace("_", "-")
    module = f"dmisearch_{name}"
    root = Path(where) / f"dmisearch-{dist}"
    if root.exists():
        raise DmisearchError(f"{root} already exists; pick another name or folder (--dir)")
    subs = {"name": name, "dist": dist, "module": module, "Camel": _camel(name)}

    def fill(text: str, **extra: str) -> str:
        return string.Template(text).substitute(subs, **extra)

    files: dict[str, str] = {}
    imports, hooks, tests = [], [], [TEST_HEAD]
    for kind in kinds:
        component_kind, file, suffix, _ = KINDS[kind]
        cls = f"{_camel(name)}{suffix}"
        files[f"src/{module}/{file}"] = fill(TEMPLATES[kind])
        imports.append(f"from {module}.{file[:-3]} import {cls}")
        hooks.append(fill(HOOK, hook=REGISTER_HOOKS[component_kind], cls=cls))
        tests.append(fill(TEST_CLASS, Cls=cls, Contract=CONTRACTS[kind], file=file[:-3],
                          small=SMALL[kind]))
    listing = "\n".join(f"- {fill(SUMMARIES[k])}" for k in kinds)
    files["pyproject.toml"] = fill(PYPROJECT, summary=", ".join(
        f"{name}_{KINDS[k][3]}" for k in kinds))
    files["README.md"] = fill(README, listing=listing)
    files[f"src/{module}/__init__.py"] = f'"""dmisearch plugin {name}."""\n'
    files[f"src/{module}/plugin.py"] = fill(PLUGIN, imports="\n".join(imports),
                                            hooks="\n".join(hooks))
    files["tests/conftest.py"] = CONFTEST
    files[f"tests/test_{name}.py"] = "".join(tests)
    files["study.toml"] = _study(name, kinds)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def _study(name: str, kinds: Sequence[str]) -> str:
    if "data" in kinds:
        data = f'name = "{name}_linear"\nd = 16'
    else:
        data = 'name = "teacher"\nfamily = "fcn"\nshape = [1, 16]'
    if "transform" in kinds:
        data += f'\ntransforms = ["{name}_negate"]'
    models = ['"fcn"'] + ([f'"{name}_mlp"'] if "model" in kinds else [])
    algorithms = ['"adam"'] + ([f'"{name}_rmsprop"'] if "algorithm" in kinds else [])
    extra = ""
    if "model" in kinds:
        extra += f"\n[search.space.model.{name}_mlp]\nwidth = 64\n"
    if "algorithm" in kinds:
        extra += f"\n[search.space.algorithm.{name}_rmsprop]\nsteps = 300\n"
    return string.Template(STUDY).substitute(
        name=name.replace("_", "-"), data=data, models=", ".join(models),
        algorithms=", ".join(algorithms), extra=extra)
