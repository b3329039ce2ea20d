"""neural-tangents side of ``compare_stax.py``: the stax kernels of the configurations it lists.

    NT_PYTHON benchmarks/compare_stax_nt.py INPUTS.npz CONFIGS.json OUT.npz

Run by ``compare_stax.py`` (and by ``bench_kernels.py --nt-python``, whose configurations
set ``gram_only``: the Gram matrix of ``x<dims>d`` only, its kernel function batched by
``nt.batch`` in blocks of ``batch`` inputs where set) with a Python that has neural-tangents
and jax (not the project's
venv: neither is a dependency of dmisearch). Reads the inputs (channels first, as dmisearch
takes them) and the configurations, builds the equivalent ``stax`` model of each and writes
its NNGP and NTK, on the training inputs (``x1d``/``x2d`` against themselves) and across
(``t1d``/``t2d`` against them), plus timings, to OUT.npz. Prints the library versions as one
JSON line.

The mapping from dmisearch's conventions (``dmisearch_builtins.kernels``):

* inputs ``(n, C, L)`` / ``(n, C, H, W)`` -> channels last ``(n, L, C)`` / ``(n, H, W, C)``
  (stax's default ``NHWC``); fcn gets the flattened input ``(n, C*L)`` (the input covariance
  is ``<x, x'> / d`` either way);
* every layer ``parameterization='ntk'``, ``W_std=sigma_w``, ``b_std=sigma_b``;
* fcn: ``depth`` x (Dense, act), Dense;
* lcn: ``depth`` x (ConvLocal, act), Flatten, Dense; cnn_vec: the same with Conv;
  cnn_gap: ``depth`` x (Conv, act), GlobalAvgPool, Dense;
* filter ``(k,)`` or ``(k, k)``, stride 1; padding ``circular`` -> ``'CIRCULAR'``, ``zeros``
  -> ``'SAME'`` (both pad ``(k-1)//2`` before and the rest after, as dmisearch does);
* relu -> ``stax.Relu()``, erf -> ``stax.Erf()`` (``a=1, b=1, c=0``: plain erf).
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402


def model(cfg: dict):
    sw, sb = cfg["sigma_w"], cfg["sigma_b"]
    act = {"relu": stax.Relu, "erf": stax.Erf}[cfg["activation"]]
    arch = cfg["arch"]
    layers = []
    if arch == "fcn":
        for _ in range(cfg["depth"]):
            layers += [stax.Dense(1, W_std=sw, b_std=sb, parameterization="ntk"), act()]
        layers.append(stax.Dense(1, W_std=sw, b_std=sb, parameterization="ntk"))
        return stax.serial(*layers)
    nd = cfg["dims"]
    filt = (cfg["filter_size"],) * nd
    padding = {"circular": "CIRCULAR", "zeros": "SAME"}[cfg["padding"]]
    layer = stax.ConvLocal if arch == "lcn" else stax.Conv
    for _ in range(cfg["depth"]):
        layers += [layer(1, filt, strides=(1,) * nd, padding=padding, W_std=sw, b_std=sb,
                         parameterization="ntk"), act()]
    layers.append(stax.GlobalAvgPool() if arch == "cnn_gap" else stax.Flatten())
    layers.append(stax.Dense(1, W_std=sw, b_std=sb, parameterization="ntk"))
    return stax.serial(*layers)


def channels_last(x: np.ndarray, arch: str) -> np.ndarray:
    if arch == "fcn":
        return x.reshape(x.shape[0], -1)
    return np.moveaxis(x, 1, -1)


def main() -> None:
    inputs_path, configs_path, out_path = sys.argv[1:4]
    data = np.load(inputs_path)
    with open(configs_path) as f:
        configs = json.load(f)
    out: dict[str, np.ndarray] = {}
    for i, cfg in enumerate(configs):
        x = channels_last(data[f"x{cfg['dims']}d"], cfg["arch"])
        t = None if cfg.get("gram_only") else channels_last(data[f"t{cfg['dims']}d"],
                                                            cfg["arch"])
        _, _, kernel_fn = model(cfg)
        if cfg.get("batch"):
            import neural_tangents as nt

            kernel_fn = nt.batch(kernel_fn, batch_size=cfg["batch"], store_on_device=False)
        times = []
        for _ in range(2):  # first call (tracing, op compilation), then a warm call
            start = time.perf_counter()
            gram = kernel_fn(x, None, ("nngp", "ntk"))
            cross = None if cfg.get("gram_only") else kernel_fn(t, x, ("nngp", "ntk"))
            np.asarray(gram.ntk).sum()  # wait for the values
            if cross is not None:
                np.asarray(cross.ntk).sum()
            times.append(time.perf_counter() - start)
        out[f"{i}.gram.nngp"] = np.asarray(gram.nngp, dtype=np.float64)
        out[f"{i}.gram.ntk"] = np.asarray(gram.ntk, dtype=np.float64)
        if cross is not None:
            out[f"{i}.cross.nngp"] = np.asarray(cross.nngp, dtype=np.float64)
            out[f"{i}.cross.ntk"] = np.asarray(cross.ntk, dtype=np.float64)
        out[f"{i}.seconds"] = np.array(times)
    np.savez(out_path, **out)
    import importlib.metadata as md

    print(json.dumps({"neural-tangents": md.version("neural-tangents"),
                      "jax": jax.__version__, "jaxlib": md.version("jaxlib"),
                      "numpy": np.__version__, "python": sys.version.split()[0],
                      "x64": bool(jax.config.jax_enable_x64),
                      "backend": jax.default_backend()}))


if __name__ == "__main__":
    main()
