"""dmisearch's analytic NNGP/NTK kernels against neural-tangents' ``stax`` kernels.

    python benchmarks/compare_stax.py [--nt-python /tmp/ntvenv/bin/python] [--n 24]

neural-tangents is not a dependency of dmisearch: it runs in a separate Python
(``--nt-python``) made for instance with ``python3 -m venv /tmp/ntvenv; /tmp/ntvenv/bin/pip
install neural-tangents==0.6.5 jax==0.4.30 jaxlib==0.4.30 tf2jax==0.3.6`` (neural-tangents
0.6.5 imports ``jax.core.Jaxpr``, which the newest jax, 0.10.2, no longer has; tf2jax 0.3.8
needs jax 0.7.1 or later and does not import with 0.4.30). This script, run with the
project's Python, computes dmisearch's float64 kernels for every built-in architecture (fcn,
lcn, cnn_vec, cnn_gap) over a grid of configurations: 1-D ``(C, L)`` and 2-D ``(C, H, W)``
inputs, relu and erf, depth 1 and 2, filter sizes 3 and 4 (odd and even: an even filter's
extra tap is on the right/bottom), circular and zeros padding, the defaults ``sigma_w =
sqrt(2), sigma_b = 0`` and, at depth 2 and filter 3, ``sigma_w = 1.3, sigma_b = 0.4``. Each
kernel is the Gram matrix of ``n`` Gaussian inputs and the cross matrix of ``m`` further
inputs against them. The inputs and the configurations go to a temporary directory;
``benchmarks/compare_stax_nt.py`` (the stax side, where the mapping of conventions is
written out) runs in the other Python on them and returns stax's kernels
(``jax_enable_x64``).

Prints, per configuration, the largest relative difference ``max |K_dmi - K_nt| / |K_nt|``
over all Gram and cross entries for NNGP and NTK, and for the NTK also over all entries but
the self-pairs ``(x_i, x_i)`` (the Gram diagonal). At a self-pair the ReLU angle is exactly 0,
and any rounding in the cosine moves a computed angle by ~1e-8 (``arccos`` and ``arctan2``
have infinite slope there); so for ReLU fcn/lcn/cnn_vec both sides' self-pair values are
also checked against the exact ones, from the recursion with ``Kphi = K/2``, ``Kd = 1/2``
(``relu_self_reference``; for cnn_gap a self-pair also averages distinct position pairs,
whose angle is not 0). Then the seconds of both sides: dmisearch both kinds, Gram and cross,
a second call; stax ``kernel_fn`` with ``get=('nngp', 'ntk')``, a first call and a second
one, not jitted. Closing lines give the largest of each measure over the configurations,
also against the largest entry of each matrix (``max |K_dmi - K_nt| / max |K_nt|``), which
small entries do not inflate. Both sides run on ``--threads`` CPU threads (default 1). Exits 1 if
dmisearch is off by more than ``--tol`` anywhere (against stax, or at ReLU fcn/lcn/cnn_vec
self-pairs against the exact value).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from dmisearch_builtins.architectures import FAMILIES
from dmisearch_builtins.kernels import kernel

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SIGMAS = (math.sqrt(2.0), 0.0)
OTHER_SIGMAS = (1.3, 0.4)


def configurations() -> list[dict]:
    out = []
    for sigmas in (DEFAULT_SIGMAS, OTHER_SIGMAS):
        depths = (1, 2) if sigmas == DEFAULT_SIGMAS else (2,)
        filters = (3, 4) if sigmas == DEFAULT_SIGMAS else (3,)
        for arch in FAMILIES:
            for dims, act, depth in itertools.product((1, 2), ("relu", "erf"), depths):
                base = {"arch": arch, "dims": dims, "activation": act, "depth": depth,
                        "sigma_w": sigmas[0], "sigma_b": sigmas[1]}
                if arch == "fcn":
                    out.append({**base, "filter_size": None, "padding": None})
                    continue
                for k, pad in itertools.product(filters, ("circular", "zeros")):
                    out.append({**base, "filter_size": k, "padding": pad})
    return out


def build(cfg: dict):
    cls = FAMILIES[cfg["arch"]]
    kw = {k: cfg[k] for k in ("depth", "activation", "sigma_w", "sigma_b")}
    if cfg["arch"] != "fcn":
        kw.update(filter_size=cfg["filter_size"], padding=cfg["padding"])
    return cls(**kw)


def label(cfg: dict) -> str:
    parts = [cfg["arch"], f"{cfg['dims']}-D", cfg["activation"], f"d{cfg['depth']}"]
    if cfg["arch"] != "fcn":
        parts += [f"k{cfg['filter_size']}", cfg["padding"]]
    if (cfg["sigma_w"], cfg["sigma_b"]) != DEFAULT_SIGMAS:
        parts.append(f"sw{cfg['sigma_w']:g} sb{cfg['sigma_b']:g}")
    return " ".join(parts)


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """``max |a - b| / |b|`` (inf where ``b`` is 0 and ``a`` is not, nan if not finite)."""
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return math.nan
    if a.size == 0:
        return 0.0
    diff = np.abs(a - b)
    nz = np.abs(b) > 0
    if (diff[~nz] > 0).any():
        return math.inf
    return float((diff[nz] / np.abs(b[nz])).max()) if nz.any() else 0.0


def _filter_mean(q: np.ndarray, k: int, circular: bool) -> np.ndarray:
    """``(1/k^nd) sum_delta q[p + delta]`` over ``delta`` in ``-left .. k-1-left`` of every
    spatial axis of ``q`` (n, *spatial); out-of-range indices wrap or give zero."""
    left, nd = (k - 1) // 2, q.ndim - 1
    pads = [(0, 0)] + [(left, k - 1 - left)] * nd
    padded = np.pad(q, pads, mode="wrap" if circular else "constant")
    out = np.zeros_like(q)
    for offsets in itertools.product(range(k), repeat=nd):
        window = tuple(slice(o, o + n) for o, n in zip(offsets, q.shape[1:], strict=True))
        out += padded[(slice(None), *window)]
    return out / k ** nd


def relu_self_reference(cfg: dict, x: np.ndarray) -> dict[str, np.ndarray] | None:
    """Exact NNGP and NTK of ReLU fcn/lcn/cnn_vec at self-pairs ``(x_i, x_i)``, from the
    recursions with the angle known to be 0 (``Kphi = K / 2``, ``Kd = 1 / 2``): no arccos or
    arctan2 of a rounded cosine near 1. None for other configurations (for cnn_gap the
    self-pair kernel also involves distinct position pairs, whose angle is not 0)."""
    if cfg["activation"] != "relu" or cfg["arch"] == "cnn_gap":
        return None
    sw2, sb2 = cfg["sigma_w"] ** 2, cfg["sigma_b"] ** 2
    if cfg["arch"] == "fcn":
        q = (x.reshape(x.shape[0], -1) ** 2).mean(1)
        filt = readout = lambda t: t  # noqa: E731
    else:
        q = (x ** 2).mean(1)  # (n, *spatial): same-position input covariance

        def filt(t):
            return _filter_mean(t, cfg["filter_size"], cfg["padding"] == "circular")

        def readout(t):
            return t.reshape(t.shape[0], -1).mean(1)
    depth = cfg["depth"]
    K = sw2 * (readout if depth == 0 else filt)(q) + sb2
    T = K
    for layer in range(depth):
        agg = readout if layer == depth - 1 else filt
        K = sw2 * agg(K / 2) + sb2  # Kphi = K / 2 at angle 0
        T = sw2 * agg(T / 2) + K  # Theta * Kd, Kd = 1 / 2
    return {"nngp": K, "ntk": T}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nt-python", default="/tmp/ntvenv/bin/python")
    ap.add_argument("--n", type=int, default=24, help="training inputs (Gram matrix)")
    ap.add_argument("--m", type=int, default=8, help="further inputs (cross matrix)")
    ap.add_argument("--length", type=int, default=16, help="1-D inputs: (3, length)")
    ap.add_argument("--side", type=int, default=6, help="2-D inputs: (2, side, side)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol", type=float, default=1e-10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    rng = np.random.default_rng(args.seed)
    data = {
        "x1d": rng.standard_normal((args.n, 3, args.length)),
        "t1d": rng.standard_normal((args.m, 3, args.length)),
        "x2d": rng.standard_normal((args.n, 2, args.side, args.side)),
        "t2d": rng.standard_normal((args.m, 2, args.side, args.side)),
    }
    configs = configurations()

    with tempfile.TemporaryDirectory(prefix="compare_stax-") as tmp:
        inputs, cfg_path, nt_out = (os.path.join(tmp, f) for f in
                                    ("inputs.npz", "configs.json", "nt.npz"))
        np.savez(inputs, **data)
        with open(cfg_path, "w") as f:
            json.dump(configs, f)
        env = dict(os.environ)
        if args.threads == 1:
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                                " intra_op_parallelism_threads=1").strip()
        start = time.perf_counter()
        proc = subprocess.run([args.nt_python, os.path.join(HERE, "compare_stax_nt.py"),
                               inputs, cfg_path, nt_out], env=env, capture_output=True,
                              text=True)
        nt_wall = time.perf_counter() - start
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise SystemExit(f"the neural-tangents side failed (exit {proc.returncode})")
        nt_versions = json.loads(proc.stdout.strip().splitlines()[-1])
        with np.load(nt_out) as f:
            nt = {k: f[k] for k in f.files}

    print(f"# dmisearch kernels vs neural-tangents stax; {len(configs)} configurations")
    print(f"# torch {torch.__version__}, numpy {np.__version__}, python "
          f"{platform.python_version()}; {platform.machine()}, {args.threads} thread(s)")
    print("# stax side: " + ", ".join(f"{k} {v}" for k, v in nt_versions.items()))
    print(f"# inputs: Gram of n={args.n}, cross m={args.m} x n; 1-D (3, {args.length}), "
          f"2-D (2, {args.side}, {args.side}); seed {args.seed}; stax subprocess "
          f"{nt_wall:.1f} s wall")
    print("# rel = max |K_dmi - K_nt| / |K_nt| over the entries named: all (Gram and cross), "
          "off (all but the Gram diagonal, i.e. no self-pairs); self dmi / self nt: max "
          "relative error of each side's Gram diagonal against the exact self-pair value "
          "(relu fcn/lcn/cnn_vec only, '-' elsewhere)")
    print(f"{'configuration':44} {'nngp all':>9} {'ntk all':>9} {'ntk off':>9} "
          f"{'self dmi':>9} {'self nt':>9} {'dmi s':>6} {'nt s 1st':>8} {'nt s 2nd':>8}")
    x = {d: torch.from_numpy(data[f"x{d}d"]) for d in (1, 2)}
    t = {d: torch.from_numpy(data[f"t{d}d"]) for d in (1, 2)}
    worst: dict[str, tuple[float, str]] = {}
    failed = []

    def note(key: str, value: float, where: str) -> None:
        if key not in worst or not value <= worst[key][0]:
            worst[key] = (value, where)

    for i, cfg in enumerate(configs):
        arch = build(cfg)
        d = cfg["dims"]
        ours = {}
        for _ in range(2):  # the second call is timed
            start = time.perf_counter()
            for kind in ("nngp", "ntk"):
                ours[f"gram.{kind}"] = kernel(arch, x[d], None, kind).numpy()
                ours[f"cross.{kind}"] = kernel(arch, t[d], x[d], kind).numpy()
            dmi_s = time.perf_counter() - start
        ref = relu_self_reference(cfg, data[f"x{d}d"])
        off = ~np.eye(args.n, dtype=bool)
        row = {}
        name = label(cfg)
        for kind in ("nngp", "ntk"):
            g_dmi, g_nt = ours[f"gram.{kind}"], nt[f"{i}.gram.{kind}"]
            c_dmi, c_nt = ours[f"cross.{kind}"], nt[f"{i}.cross.{kind}"]
            every = rel_error(np.concatenate([g_dmi.ravel(), c_dmi.ravel()]),
                              np.concatenate([g_nt.ravel(), c_nt.ravel()]))
            rest = rel_error(np.concatenate([g_dmi[off], c_dmi.ravel()]),
                             np.concatenate([g_nt[off], c_nt.ravel()]))
            note(f"{kind} all", every, name)
            # against the largest entry of each matrix (Gram, cross): small entries aside
            g_scale, c_scale = np.abs(g_nt).max(), np.abs(c_nt).max()
            note(f"{kind} all, max |K_dmi - K_nt| / max |K_nt|",
                 float(max(np.abs(g_dmi - g_nt).max() / g_scale,
                           np.abs(c_dmi - c_nt).max() / c_scale)), name)
            note(f"{kind} off, max |K_dmi - K_nt| / max |K_nt|",
                 float(max(np.abs(g_dmi - g_nt)[off].max() / g_scale,
                           np.abs(c_dmi - c_nt).max() / c_scale)), name)
            note(f"{kind} off", rest, name)
            if ref is None:
                self_dmi = self_nt = None
                ok = every <= args.tol
            else:
                self_dmi = rel_error(np.diag(g_dmi), ref[kind])
                self_nt = rel_error(np.diag(g_nt), ref[kind])
                note(f"{kind} self dmi", self_dmi, name)
                note(f"{kind} self nt", self_nt, name)
                ok = rest <= args.tol and self_dmi <= args.tol
            if not ok:
                failed.append(f"{name} {kind}")
            row[kind] = (every, rest, self_dmi, self_nt)

        def fmt(v):
            return f"{'-':>9}" if v is None else f"{v:9.2e}"

        nt_s = nt[f"{i}.seconds"]
        print(f"{name:44} {fmt(row['nngp'][0])} {fmt(row['ntk'][0])} {fmt(row['ntk'][1])} "
              f"{fmt(row['ntk'][2])} {fmt(row['ntk'][3])} {dmi_s:6.3f} {nt_s[0]:8.3f} "
              f"{nt_s[1]:8.3f}", flush=True)
    for key in sorted(worst):
        print(f"# largest, {key}: {worst[key][0]:.2e} ({worst[key][1]})")
    if failed:
        print(f"# {len(failed)} kernels where dmisearch is off by more than --tol {args.tol:g} "
              "(vs stax off self-pairs, vs the exact value at them): " + "; ".join(failed))
        raise SystemExit(1)
    print(f"# dmisearch within --tol {args.tol:g} in every configuration: of stax at every "
          "entry but the relu fcn/lcn/cnn_vec self-pairs, of the exact value at those")

if __name__ == "__main__":
    main()
