"""MNIST-1D (Greydanus 2020, "Scaling down deep learning"), generated offline.

The data come from the ``mnist1d`` package (``pip install "dmisearch[mnist1d]"``), by its
offline generator ``mnist1d.data.make_dataset`` with the package's default arguments
(``get_dataset_args()``: 5000 signals of 40 points, the first 4000 for training and the last
1000 for testing, seed 42). The ten digit templates are hard-coded in the package
(``get_templates``), so nothing is downloaded: ``mnist1d.get_dataset``, which fetches the
authors' pickle from GitHub and writes it to the current directory, is never called.

The package is imported only when the generator is used, so ``mnist1d`` registers (and
``dmisearch plugins`` lists it) without it; ``describe()`` and ``sample()`` then raise a
``ValueError`` naming the install command, which the study loader reports before any trial.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import threading

import numpy as np
import torch

from dmisearch.components import DataGenerator, DataInfo, Split
from dmisearch.seeding import derive_seed
from dmisearch_builtins.checks import check_count

N_TRAIN = 4000
N_TEST = 1000
LENGTH = 40
N_CLASSES = 10
INSTALL = 'pip install "dmisearch[mnist1d]"'

_LOCK = threading.Lock()


def _package():
    """``mnist1d.data``, or a ``ValueError`` saying how to install it."""
    try:
        import mnist1d.data
    except ImportError as exc:
        missing = isinstance(exc, ModuleNotFoundError) and (exc.name or "").startswith("mnist1d")
        why = "is not installed" if missing else f"could not be imported ({exc})"
        raise ValueError(
            f"the mnist1d data generator needs the mnist1d package, which {why}: {INSTALL}"
        ) from None
    return mnist1d.data


@functools.lru_cache(maxsize=1)
def _dataset() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The package's default data set, made once per process (a few seconds): float32
    inputs (4000, 1, 40) and (1000, 1, 40), int64 labels (4000,) and (1000,), read-only."""
    data = _package()
    args = data.get_dataset_args()  # defaults: 5000 samples, 80% train, 40 points, seed 42
    # make_dataset seeds and draws from the global `random` and `numpy.random` states: it
    # gets them alone (the lock) and they are put back as they were afterwards.
    with _LOCK:
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            d = data.make_dataset(args)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
    out = (
        np.asarray(d["x"], dtype=np.float32)[:, None, :],
        np.asarray(d["x_test"], dtype=np.float32)[:, None, :],
        np.asarray(d["y"], dtype=np.int64),
        np.asarray(d["y_test"], dtype=np.int64),
    )
    expected = ((N_TRAIN, 1, LENGTH), (N_TEST, 1, LENGTH), (N_TRAIN,), (N_TEST,))
    if tuple(a.shape for a in out) != expected:
        raise ValueError(
            f"mnist1d.data.make_dataset() returned arrays of shapes "
            f"{[a.shape for a in out]}, expected {list(expected)}: an mnist1d release whose "
            f"defaults differ from 0.0.2's; install mnist1d 0.0.2 ({INSTALL})"
        )
    for a in out:
        a.setflags(write=False)
    return out


@dataclasses.dataclass(kw_only=True)
class MNIST1D(DataGenerator):
    """MNIST-1D (Greydanus 2020): 10 classes, 1-D signals of (1, 40); 4000 train, 1000 test.

    Made offline by the ``mnist1d`` package's ``make_dataset`` with its default arguments
    and seed (the same data on every machine, generated once per process); needs
    ``pip install "dmisearch[mnist1d]"``. Inputs are standardised as the package and the
    paper do: centred and scaled by the global mean and standard deviation of all 5000
    signals (train and test together). Each seed draws ``n_train`` of the 4000 training
    signals and ``n_test`` of the 1000 test signals (separate random orders, so the test set
    does not depend on ``n_train`` and larger training sets contain smaller ones). The
    spatially shuffled variant of the paper is ``transforms = ["permute"]``.
    """

    name = "mnist1d"

    def describe(self) -> DataInfo:
        _package()  # fail here, before any trial, when the package is missing
        return DataInfo(input_shape=(1, LENGTH), task="classification", out_dim=N_CLASSES,
                        n_available=N_TRAIN, n_test_available=N_TEST)

    def sample(self, n_train: int, n_test: int, seed: int) -> Split:
        check_count(n_train, "n_train")
        check_count(n_test, "n_test")
        if n_train > N_TRAIN:
            raise ValueError(f"mnist1d has {N_TRAIN} training signals, but n_train = "
                             f"{n_train}; lower the largest training size")
        if n_test > N_TEST:
            raise ValueError(f"mnist1d has {N_TEST} test signals, but n_test = {n_test}; "
                             f"lower the test size")
        x, x_test, y, y_test = _dataset()
        picks = []
        for part, n, total in (("train", n_train, N_TRAIN), ("test", n_test, N_TEST)):
            g = torch.Generator().manual_seed(derive_seed(seed, "mnist1d", part))
            picks.append(torch.randperm(total, generator=g).numpy()[:n])
        train, test = picks
        # Fancy indexing copies, so callers may modify the tensors without touching the cache.
        return Split(
            x_train=torch.from_numpy(x[train]),
            y_train=torch.from_numpy(y[train]),
            x_test=torch.from_numpy(x_test[test]),
            y_test=torch.from_numpy(y_test[test]),
        )
