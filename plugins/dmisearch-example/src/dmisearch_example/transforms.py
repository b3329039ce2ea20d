"""Patch shuffling: keeps what is inside each patch, scrambles where the patches are."""

import dataclasses

import torch

import dmisearch


@dataclasses.dataclass(kw_only=True)
class PatchShuffle(dmisearch.Transform):
    """Cuts the last spatial axis into patches of `patch` values and reorders the patches."""

    name = "patch_shuffle"
    patch: int = 4  # values per patch; must divide the input's last axis
    seed: int = 0  # draws the fixed order used as a data transform

    def check(self):
        if self.patch < 1:
            raise ValueError(f"patch must be >= 1, got {self.patch}")

    def check_input(self, input_shape):
        if len(input_shape) < 2 or input_shape[-1] % self.patch:
            return (f"patch_shuffle needs inputs (channels, ..., length) with length a "
                    f"multiple of patch={self.patch}, got {tuple(input_shape)}")
        return None

    def _reorder(self, x, order):
        # order: (n, k) patch indices per sample
        n, k = len(x), x.shape[-1] // self.patch
        patches = x.reshape(*x.shape[:-1], k, self.patch)
        index = order.view(n, *([1] * (x.ndim - 2)), k, 1).expand_as(patches)
        return torch.gather(patches, -2, index).reshape(x.shape)

    def apply(self, x, generator):
        # A data transform: one fixed order for every sample, drawn from `seed`.
        k = x.shape[-1] // self.patch
        order = torch.randperm(k, generator=torch.Generator().manual_seed(self.seed))
        return self._reorder(x, order.expand(len(x), k))

    def augment(self, x, generator):
        # An augmentation: a fresh random order per sample.
        k = x.shape[-1] // self.patch
        order = torch.rand(len(x), k, generator=generator).argsort(dim=1)
        return self._reorder(x, order)
