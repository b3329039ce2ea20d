"""Predicted against measured learning curves of kernel ridge regression.

For each case (teacher family or data set, kernel), the prediction of ``dmisearch predict``
(``dmisearch.theory``: the kernel's spectrum on a pool of ``--pool`` inputs, extrapolated in
the pool's size) is compared with kernel regression actually run the way the ``ntk`` and
``nngp`` algorithms run it (same relative ridge), on ``--seeds`` random training sets of each
size drawn from an independent sample, tested on a fixed test set. Several pools per case
show the estimator's own spread. Prints one row per (case, pool, size): predicted, measured
(with its standard error), relative error, and the plain pool estimate's relative error.

    python benchmarks/bench_predict.py [--pool 1024] [--pools 2] [--seeds 60] [--cases ...]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from dmisearch.plugins import load_registry
from dmisearch.probe import make_data, make_model
from dmisearch.theory import PoolSpectra, measured_curve

#: name -> (data spec, data params, kernel architecture, kernel kind, classification)
CASES = {
    "teacher-fcn/fcn-ntk": ("teacher", {"family": "fcn", "shape": [1, 16]}, "fcn", "ntk"),
    "teacher-cnn_gap/fcn-ntk": ("teacher", {"family": "cnn_gap", "shape": [1, 16]}, "fcn",
                                "ntk"),
    "teacher-fcn/fcn-nngp": ("teacher", {"family": "fcn", "shape": [1, 16]}, "fcn", "nngp"),
    "patches-local/fcn-ntk": ("patches", {"shape": [1, 16]}, "fcn", "ntk"),
    "digits/fcn-ntk": ("digits", {}, "fcn", "ntk"),
    "teacher-lcn/lcn-ntk": ("teacher", {"family": "lcn", "shape": [1, 16]}, "lcn", "ntk"),
}


def one_hot(y: torch.Tensor, classes: int | None) -> np.ndarray:
    if classes is None:
        return y.double().reshape(len(y), -1).numpy()
    return torch.nn.functional.one_hot(y, classes).double().numpy()


def run_case(name, args, registry):
    data_name, params, arch, kind = CASES[name]
    data = make_data(registry, data_name, params)
    info = data.describe()
    classes = info.out_dim if info.task == "classification" else None
    pool, pools, n_meas = args.pool, args.pools, args.measure
    # a fixed data set: what its test set leaves (unless its test split is separate)
    have = info.n_available
    if have is not None and info.n_test_available is None:
        have -= args.test
    if have is not None and pool * pools + n_meas > have:
        # one pool of at most half of it, the rest to measure on
        pool, pools = min(pool, have // 2), 1
        n_meas = have - pool
    total = pool * pools + n_meas
    split = data.sample(total, args.test, 0)
    model = make_model(registry, arch, {})
    t = time.monotonic()
    x = split.x_train.double()
    k = model.kernel(x, None, kind).numpy()
    k_test = model.kernel(split.x_test.double(), x, kind).numpy()
    seconds = time.monotonic() - t
    y, y_test = one_hot(split.y_train, classes), one_hot(split.y_test, classes)
    sizes = [s for s in args.sizes if s <= min(pool // 4, n_meas // 2)]
    lo = pool * pools
    meas, se = measured_curve(k[lo:, lo:], k_test[:, lo:], y[lo:], y_test, sizes, args.ridge,
                        args.seeds, np.random.default_rng(1))
    print(f"# {name}: {total} + {args.test} inputs, kernels {seconds:.1f} s, measured on "
          f"{n_meas} held-out samples, {args.seeds} training sets per size", flush=True)
    for j in range(pools):
        sl = slice(j * pool, (j + 1) * pool)
        spectra = PoolSpectra.from_gram(k[sl, sl], y[sl])
        for p, m, s in zip(sizes, meas, se, strict=True):
            e, plain = spectra.error(p, args.ridge), spectra.plain_error(p, args.ridge)
            print(f"{name:26s} pool{j} N={pool:5d} n={p:4d} (N/{pool / p:4.1f}) "
                  f"predicted {e:9.4g} measured {m:9.4g} +- {s:7.2g} rel {e / m - 1:+7.3f} "
                  f"plain {plain / m - 1:+7.3f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", type=int, default=1024)
    ap.add_argument("--pools", type=int, default=2)
    ap.add_argument("--measure", type=int, default=2000, help="held-out samples to measure on")
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=60)
    ap.add_argument("--ridge", type=float, default=1e-4)
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} threads, ridge {args.ridge}")
    registry = load_registry()
    for name in args.cases:
        run_case(name, args, registry)


if __name__ == "__main__":
    main()
