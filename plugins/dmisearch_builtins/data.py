"""Built-in data generators: a random teacher network and scikit-learn's 8x8 digits.

Both are fixed data sets in the sense of ``DataGenerator``: their own hyperparameters fix
the distribution (the teacher's weights, the preprocessing), and the ``seed`` passed to
``sample`` only chooses which samples are drawn.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from dmisearch.components import DataGenerator, DataInfo, Split
from dmisearch.hookspecs import hookimpl
from dmisearch.seeding import derive_seed
from dmisearch_builtins.checks import check_count, check_noise, check_seed, check_shape

if TYPE_CHECKING:
    from torch import nn

INPUT_KINDS = ("gaussian", "sphere")
#: Inputs drawn (with a seed derived from the teacher's ``seed``) to estimate the output scale.
SCALE_SAMPLES = 4096
#: Rows evaluated at once by the teacher, to bound the memory of wide convolutions.
EVAL_CHUNK = 4096


def _families() -> dict[str, type]:
    # Imported when first needed, so that importing this module (e.g. to use ``digits``)
    # does not depend on the architectures module.
    from dmisearch_builtins.architectures import FAMILIES

    return FAMILIES



# --------------------------------------------------------------------------------------------
# teacher
# --------------------------------------------------------------------------------------------


def _draw_inputs(kind: str, n: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """``n`` inputs of ``shape`` from N(0, I) or uniform on the sphere of radius sqrt(d)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *shape), generator=g, dtype=torch.float32)  # (n, *shape)
    if kind == "sphere" and n:
        d = math.prod(shape)
        flat = x.reshape(n, -1).double()
        flat = flat * (math.sqrt(d) / flat.norm(dim=1, keepdim=True))
        x = flat.reshape(x.shape).float()
    return x


def _evaluate(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The network's output at ``x`` (float32, CPU), in chunks: (n, *shape) -> (n, 1)."""
    x = x.detach().to(device="cpu", dtype=torch.float32)
    with torch.no_grad():
        if len(x) == 0:
            return torch.zeros((0, 1), dtype=torch.float32)
        return torch.cat([net(c) for c in torch.split(x, EVAL_CHUNK)]).float()


@functools.lru_cache(maxsize=16)
def _teacher(arch_key: tuple, shape: tuple[int, ...], inputs: str, seed: int):
    """The teacher network and its output scale, built once per parameter set.

    ``arch_key`` is ``(family, ((param, value), ...))``. The module is only ever evaluated,
    never trained or handed out, so sharing it between equal ``Teacher`` instances is safe.
    """
    family, params = arch_key
    arch = _families()[family](**dict(params))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "teacher"))
        net = arch.build(shape, 1)
    net = net.to(device="cpu", dtype=torch.float32).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    x = _draw_inputs(inputs, SCALE_SAMPLES, shape, derive_seed(seed, "teacher", "scale"))
    std = float(_evaluate(net, x).double().std())
    if not math.isfinite(std) or std < 1e-12:
        raise ValueError(
            f"teacher '{family}' (seed={seed}) has a constant or non-finite output "
            f"(std {std:g} over {SCALE_SAMPLES} inputs); try another seed, activation or depth"
        )
    return net, 1.0 / std


@dataclasses.dataclass(kw_only=True)
class Teacher(DataGenerator):
    """Regression on a fixed random teacher network (fcn, lcn, cnn_vec or cnn_gap).

    Inputs are Gaussian N(0, I) or uniform on the sphere of radius sqrt(d), d = prod(shape).
    The target is the teacher's output times a constant chosen so that the noiseless target
    has unit variance under the input distribution (estimated once from 4096 inputs drawn
    with a seed derived from ``seed``; the mean is not removed). Gaussian label noise of
    standard deviation ``noise`` is added to training AND test targets, so the lowest
    achievable test MSE is ``noise**2``.

    The teacher's weights depend only on the hyperparameters (``seed`` among them); the seed
    given to ``sample`` only chooses the inputs and the noise. ``target(x)`` evaluates the
    noiseless target at any inputs.
    """

    name = "teacher"
    family: str = "cnn_gap"  # architecture family of the teacher: fcn, lcn, cnn_vec, cnn_gap
    shape: tuple[int, ...] = (1, 32)  # one input: (C, L) or (C, H, W)
    depth: int = 2  # hidden layers of the teacher
    width: int = 64  # hidden units (fcn) or channels (lcn, cnn_*) per hidden layer
    filter_size: int = 3  # receptive field per layer (lcn, cnn_*), along each spatial axis
    activation: str = "relu"  # the teacher's nonlinearity
    inputs: str = "gaussian"  # "gaussian": N(0, I); "sphere": uniform, radius sqrt(d)
    noise: float = 0.0  # std of Gaussian noise on train AND test targets (MSE floor noise**2)
    seed: int = 0  # seeds the teacher's weights (not the inputs: see sample())

    # ---- helpers ------------------------------------------------------------------------

    def _arch(self):
        families = _families()
        if self.family not in families:
            raise ValueError(
                f"family must be one of {sorted(families)}, got {self.family!r}"
            )
        cls = families[self.family]
        wanted = {
            "depth": self.depth,
            "width": self.width,
            "filter_size": self.filter_size,
            "activation": self.activation,
        }
        # fcn has no filter_size: pass only what the family's constructor takes.
        accepted = cls.param_defaults()
        return cls(**{k: v for k, v in wanted.items() if k in accepted})

    def _arch_key(self) -> tuple:
        arch = self._arch()
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in arch.get_params().items()}
        return (self.family, tuple(sorted(params.items())))

    def _net(self):
        return _teacher(self._arch_key(), tuple(self.shape), self.inputs, int(self.seed))

    # ---- contract -----------------------------------------------------------------------

    def check(self) -> None:
        check_shape(self.shape)
        if self.inputs not in INPUT_KINDS:
            raise ValueError(f"inputs must be one of {list(INPUT_KINDS)}, got {self.inputs!r}")
        check_noise(self.noise)
        check_seed(self.seed)
        arch = self._arch()  # raises for an unknown family
        try:
            arch.check()
        except ValueError as e:
            raise ValueError(f"teacher family '{self.family}': {e}") from e
        problem = arch.check_input(tuple(self.shape))
        if problem:
            raise ValueError(f"shape {tuple(self.shape)} does not suit the teacher: {problem}")

    def describe(self) -> DataInfo:
        return DataInfo(input_shape=tuple(self.shape), task="regression", out_dim=1)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """The noiseless target at ``x``: (n, *shape) -> (n, 1) float32 on the CPU."""
        net, scale = self._net()
        return _evaluate(net, x) * scale

    def sample(self, n_train: int, n_test: int, seed: int) -> Split:
        check_count(n_train, "n_train")
        check_count(n_test, "n_test")
        shape = tuple(self.shape)
        out = []
        # Train and test use separate streams: the test set does not depend on n_train.
        for part, n in (("train", n_train), ("test", n_test)):
            x = _draw_inputs(self.inputs, n, shape, derive_seed(seed, "teacher", "x", part))
            y = self.target(x)
            if self.noise > 0:
                g = torch.Generator().manual_seed(derive_seed(seed, "teacher", "noise", part))
                y = y + float(self.noise) * torch.randn(y.shape, generator=g)
            out += [x, y]
        return Split(*out)


# --------------------------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------------------------

N_DIGITS = 1797


@functools.lru_cache(maxsize=2)
def _load_digits(normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as float32 (1797, 1, 8, 8) and their int64 labels (1797,)."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    bunch = load_digits()
    x = np.asarray(bunch.images, dtype=np.float64)[:, None]  # (1797, 1, 8, 8), values 0..16
    if normalize:
        x = x / 16.0
        x = (x - x.mean()) / x.std()
    y = np.asarray(bunch.target, dtype=np.int64)
    x = x.astype(np.float32)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


@dataclasses.dataclass(kw_only=True)
class Digits(DataGenerator):
    """scikit-learn's bundled 8x8 handwritten digits: 10 classes, 1797 images of (1, 8, 8).

    Each seed draws a random permutation of all images: the test set is its first
    ``n_test`` images and the training pool the next ``n_train``, so they are disjoint and
    ``n_train + n_test`` may not exceed 1797.
    """

    name = "digits"
    normalize: bool = True  # pixels / 16, then standardised by the dataset's global mean, std

    def check(self) -> None:
        if not isinstance(self.normalize, (bool, np.bool_)):
            raise ValueError(f"normalize must be true or false, got {self.normalize!r}")

    def describe(self) -> DataInfo:
        return DataInfo(
            input_shape=(1, 8, 8), task="classification", out_dim=10, n_available=N_DIGITS
        )

    def sample(self, n_train: int, n_test: int, seed: int) -> Split:
        check_count(n_train, "n_train")
        check_count(n_test, "n_test")
        if n_train + n_test > N_DIGITS:
            raise ValueError(
                f"digits has {N_DIGITS} images, but n_train + n_test = {n_train} + {n_test} "
                f"= {n_train + n_test}; lower the largest training size or the test size"
            )
        x, y = _load_digits(bool(self.normalize))
        g = torch.Generator().manual_seed(derive_seed(seed, "digits"))
        perm = torch.randperm(N_DIGITS, generator=g).numpy()
        test, train = perm[:n_test], perm[n_test:n_test + n_train]
        # Fancy indexing copies, so callers may modify the tensors without touching the cache.
        return Split(
            x_train=torch.from_numpy(x[train]),
            y_train=torch.from_numpy(y[train]),
            x_test=torch.from_numpy(x[test]),
            y_test=torch.from_numpy(y[test]),
        )


@hookimpl
def register_data_generators(register):
    from dmisearch_builtins.data_files import FileData
    from dmisearch_builtins.data_mnist1d import MNIST1D
    from dmisearch_builtins.data_patches import Patches

    for cls in (Teacher, Digits, Patches, FileData, MNIST1D):
        register(cls)
