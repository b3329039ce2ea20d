"""The hidden manifold model: structured inputs whose labels depend on a few latent directions."""

import dataclasses

import torch

import dmisearch


@dataclasses.dataclass(kw_only=True)
class HiddenManifold(dmisearch.DataGenerator):
    """Inputs tanh(F c / sqrt(D)) on a D-dimensional manifold; labels from c (Goldt et al.)."""

    name = "hidden_manifold"
    d: int = 32  # input dimension
    latent_dim: int = 4  # D: dimension of the latent coordinates c ~ N(0, I_D)
    task: str = "regression"  # regression: y = tanh(<w, c> / sqrt(D)); classification: sign
    noise: float = 0.0  # label noise (regression), added to y
    seed: int = 0  # draws the fixed feature matrix F and teacher vector w

    def check(self):
        if self.d < 1 or self.latent_dim < 1:
            raise ValueError(f"d and latent_dim must be >= 1, got {self.d}, {self.latent_dim}")
        if self.task not in ("regression", "classification"):
            raise ValueError(f"task must be regression or classification, got {self.task!r}")
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")

    def describe(self):
        out_dim = 1 if self.task == "regression" else 2
        return dmisearch.DataInfo(input_shape=(1, self.d), task=self.task, out_dim=out_dim)

    def sample(self, n_train, n_test, seed):
        fixed = torch.Generator().manual_seed(self.seed)  # the data set itself
        features = torch.randn(self.latent_dim, self.d, generator=fixed)
        teacher = torch.randn(self.latent_dim, generator=fixed)
        g = torch.Generator().manual_seed(seed)  # which samples this seed draws
        n = n_train + n_test
        c = torch.randn(n, self.latent_dim, generator=g)
        x = torch.tanh(c @ features / self.latent_dim**0.5).unsqueeze(1)
        z = c @ teacher / self.latent_dim**0.5
        if self.task == "regression":
            y = (torch.tanh(z) + self.noise * torch.randn(n, generator=g)).unsqueeze(1)
        else:
            y = (z > 0).long()
        return dmisearch.Split(x[:n_train], y[:n_train], x[n_train:], y[n_train:])
