"""The conformance kit against each component, then what is particular to each."""

import pytest
import torch
from dmisearch_example.algorithms import RMSprop
from dmisearch_example.data import HiddenManifold
from dmisearch_example.models import ResMLP
from dmisearch_example.transforms import PatchShuffle

from dmisearch import testing


class TestHiddenManifold(testing.DataGeneratorContract):
    @pytest.fixture(params=["regression", "classification"])
    def component(self, request):
        return HiddenManifold(d=16, latent_dim=3, task=request.param)


class TestPatchShuffle(testing.TransformContract):
    @pytest.fixture
    def component(self):
        return PatchShuffle(patch=2)


class TestResMLP(testing.ArchitectureContract):
    @pytest.fixture
    def component(self):
        return ResMLP(width=16, depth=2)


class TestRMSprop(testing.AlgorithmContract):
    @pytest.fixture
    def component(self):
        return RMSprop(steps=20, batch_size=8, lr=0.01, momentum=0.9)


def test_inputs_lie_on_a_latent_dim_manifold():
    split = HiddenManifold(d=16, latent_dim=3).sample(50, 0, seed=0)
    pre_activation = torch.atanh(split.x_train.flatten(1).double())
    s = torch.linalg.svdvals(pre_activation)
    assert s[2] / s[0] > 0.1 and s[3] / s[0] < 1e-3  # rank 3, up to float32 rounding


def test_patch_shuffle_moves_whole_patches():
    x = torch.arange(8.0).view(1, 1, 8)
    y = PatchShuffle(patch=2, seed=1).apply(x, torch.Generator())
    pairs = y.view(4, 2)
    assert torch.equal(pairs[:, 1] - pairs[:, 0], torch.ones(4))  # patches kept intact
    assert sorted(pairs[:, 0].tolist()) == [0.0, 2.0, 4.0, 6.0]  # each patch once
    assert PatchShuffle(patch=3).check_input((1, 8)) is not None
