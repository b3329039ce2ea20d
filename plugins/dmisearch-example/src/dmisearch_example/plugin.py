"""The plugin module named by the `dmisearch` entry point in pyproject.toml."""

import dmisearch
from dmisearch_example.algorithms import RMSprop
from dmisearch_example.data import HiddenManifold
from dmisearch_example.models import ResMLP
from dmisearch_example.transforms import PatchShuffle


@dmisearch.hookimpl
def register_data_generators(register):
    register(HiddenManifold)


@dmisearch.hookimpl
def register_transforms(register):
    register(PatchShuffle)


@dmisearch.hookimpl
def register_architectures(register):
    register(ResMLP)


@dmisearch.hookimpl
def register_algorithms(register):
    register(RMSprop)
