"""Nystrom against exact kernel regression: kernel error, test error and time.

    python benchmarks/bench_nystrom.py [--threads 2] [--landmarks 250,500,...]
        [--ridges 1e-4,1e-2,1e-1] [--cases ...]

For each case (data, architecture's NTK) one pool of N training inputs and a test set are
drawn as a study draws them (seed 0). The exact kernels are computed the way the ``ntk``
algorithm computes them (``K(pool, pool)``, then ``K(test, pool)``); the Nystrom kernels
``K(pool + test, landmarks)`` for the pool's first m inputs (the algorithm's landmarks) are
computed in column blocks, so the time for each m is that of its first blocks: it covers
``K_mm`` in full where the algorithm computes half of it, a slight overestimate. The solves
are the algorithm's own (``_solve``, ``landmark_features``, ``_nystrom_solve``).

Printed per case and m: the relative Frobenius error of the Nystrom kernel
``K_nm K_mm^+ K_mn`` against ``K`` on the whole pool, and the seconds of each kernel and
solve; per training size n > m and ridge, the test error of exact and Nystrom kernel
regression and their relative difference (sizes n <= m are exact by construction). The
error is the mean squared error (regression) or the error rate (classification) and, for
classification, the one-hot mean squared error as well. mnist1d cases need the optional
``mnist1d`` package and are skipped without it.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F

from dmisearch.plugins import load_registry
from dmisearch.probe import make_data, make_model
from dmisearch_builtins.kernel_algorithms import _nystrom_solve, _solve, landmark_features

CNN = {"depth": 1, "filter_size": 3}
TEACHER = {"family": "cnn_gap", "shape": [1, 16]}
M4 = (250, 500, 1000, 2000)
#: name -> (data, data params, architecture, its params, pool N, test size, landmarks m)
CASES = {
    # fcn kernels are cheap: a pool beyond the auto threshold, up to 4000 landmarks
    "teacher-cnn_gap/fcn": ("teacher", TEACHER, "fcn", {"depth": 2}, 8000, 1000, (*M4, 4000)),
    "teacher-cnn_gap/cnn_gap": ("teacher", TEACHER, "cnn_gap", CNN, 4000, 1000, M4),
    "digits/fcn": ("digits", {}, "fcn", {"depth": 2}, 1297, 500, M4[:3]),
    "digits/cnn_gap": ("digits", {}, "cnn_gap", CNN, 1297, 500, M4[:2]),
    "mnist1d/fcn": ("mnist1d", {}, "fcn", {"depth": 2}, 4000, 1000, M4),
    "mnist1d/cnn_gap": ("mnist1d", {}, "cnn_gap", CNN, 2000, 500, M4[:3]),
}


def sizes_up_to(n: int) -> list[int]:
    out = [250]
    while out[-1] * 2 < n:
        out.append(out[-1] * 2)
    return out + [n]


def timed(f, *args):
    t = time.perf_counter()
    out = f(*args)
    return out, time.perf_counter() - t


def errors(pred: torch.Tensor, y_test: torch.Tensor, classes: int | None) -> tuple:
    if classes is None:
        return (float(((pred - y_test) ** 2).sum(-1).mean()),)
    onehot = F.one_hot(y_test, classes).double()
    return (float((pred.argmax(-1) != y_test).double().mean()),
            float(((pred - onehot) ** 2).sum(-1).mean()))


def fmt(errs: tuple) -> str:
    return "/".join(f"{e:.4g}" for e in errs)


def run_case(name: str, args, registry) -> None:
    data_name, dparams, arch, aparams, pool, n_test, marks = CASES[name]
    if data_name == "mnist1d":
        try:
            import mnist1d  # noqa: F401
        except ImportError:
            print(f"# {name}: skipped (the mnist1d package is not installed)", flush=True)
            return
    data = make_data(registry, data_name, dparams)
    info = data.describe()
    classes = info.out_dim if info.task == "classification" else None
    split = data.sample(pool, n_test, 0)
    x, xt = split.x_train.double(), split.x_test.double()
    y = (F.one_hot(split.y_train, classes).double() if classes
         else split.y_train.double())
    model = make_model(registry, arch, aparams)
    k, t_pool = timed(model.kernel, x, None, "ntk")
    kt, t_test = timed(model.kernel, xt, x, "ntk")
    print(f"# {name}: {arch} {aparams} ntk on {data_name} {tuple(x.shape[1:])}, pool {pool}, "
          f"test {n_test}; exact kernels {t_pool:.1f} s (pool) + {t_test:.1f} s (test), "
          f"{(pool + n_test) * pool * 8 / 2**20:.0f} MiB", flush=True)
    ridges = [float(r) for r in args.ridges.split(",")]
    sizes = sizes_up_to(pool)
    exact = {}
    for n in sizes:
        for r in ridges:
            alpha, dt = timed(_solve, k[:n, :n], y[:n], r)
            exact[n, r] = errors(kt[:, :n] @ alpha, split.y_test, classes)
            print(f"{name:24s} exact   n={n:5d} ridge={r:g} error {fmt(exact[n, r])} "
                  f"solve {dt:.2f} s", flush=True)
    ms = [m for m in (marks if args.landmarks is None else
                      (int(v) for v in args.landmarks.split(","))) if m < pool]
    xall, cols, t_cols = torch.cat([x, xt]), [], 0.0
    k_norm = float(k.norm())
    for m in ms:
        lo = sum(c.shape[1] for c in cols)
        block, dt = timed(model.kernel, xall, x[lo:m], "ntk")
        cols.append(block)
        t_cols += dt
        k_all = torch.cat(cols, 1)
        k_nm, kt_m = k_all[:pool], k_all[pool:]
        feats, t_feats = timed(landmark_features, k_nm[:m])
        b = k_nm @ feats
        frob = float((k - b @ b.T).norm()) / k_norm
        print(f"{name:24s} nystrom m={m:5d} kernel error {frob:.3e} kernels {t_cols:.1f} s "
              f"({(pool + n_test) * m * 8 / 2**20:.0f} MiB) features {t_feats:.2f} s",
              flush=True)
        for n in (s for s in sizes if s > m):
            for r in ridges:
                lam = r * float(k_nm[:m].diagonal().mean())
                alpha, dt = timed(_nystrom_solve, k_nm[:n], feats, y[:n], lam)
                e = errors(kt_m @ alpha, split.y_test, classes)
                rel = "/".join(f"{a / b - 1:+.4f}" for a, b in zip(e, exact[n, r], strict=True))
                print(f"{name:24s} nystrom m={m:5d} n={n:5d} ridge={r:g} error {fmt(e)} "
                      f"exact {fmt(exact[n, r])} rel {rel} solve {dt:.2f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--landmarks", default=None, help="e.g. 250,500 (default: per case)")
    ap.add_argument("--ridges", default="1e-4,1e-2,1e-1")
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} threads", flush=True)
    registry = load_registry()
    start = time.perf_counter()
    for name in args.cases:
        run_case(name, args, registry)
    print(f"# total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
