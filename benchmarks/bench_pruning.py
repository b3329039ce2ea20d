"""Pruners compared on the same trials: stored complete learning curves replayed.

Source: the shipped paper studies (studies/paper/alignment_*.toml, patches_*.toml) and the
quickstart (studies/quickstart.toml), each run once without a pruner and without
``[confirm]`` (cached as JSON under ``--cache``, default a folder in the system's temp
directory; the runs are the bulk of the time). Every search trial stores its full per-seed
curve.

Replay: for each study and search order (order 0: the order the study ran its trials in;
order s > 0: the trials shuffled with seed s), the trials are fed in that order to a fresh
in-memory Optuna study whose pruner is one of the arms below. Each trial reports its running
score after every size and is asked at the prune points (every size but the last) exactly as
``dmisearch.objective`` does; the curve pruner reads the partial per-seed curve stored on the
trial at each prune point, as it does in a real study. A pruned trial costs the sizes it
trained.

Cost: model-steps (gradient steps x networks: the trial's ``steps`` x seeds x sizes trained;
kernel learners take no steps) and, for the kernel learners (ntk, nngp), the sum of n^3
over the (size, seed) fits trained (exact kernel regression's solve), each as a share of the
study without a pruner. Recall: the top-3 (model, algorithm) pairs by best value without a
pruner; the fraction of them whose best trial completes under the pruner. ``top3_same``:
whether the pruned study's own top 3 pairs (from its complete trials) are those.

Extrapolation error: every trial of every study, cut after 2, 3 and 4 sizes, fitted and
extrapolated (each family), against its measured final error and score (median relative
error, and for aulc the median absolute error in decades), by architecture, algorithm
and data.

    python benchmarks/bench_pruning.py [--orders 6] [--studies ...] [--cache DIR] \
        | tee benchmarks/logs/bench_pruning.log
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import tomllib
import torch

from dmisearch.curve_fit import FAMILIES, FitError, extrapolate
from dmisearch.curve_pruner import SAME_TRIPLET, CurvePruner, calibrated, reference
from dmisearch.evidence import curve_matrix
from dmisearch.metrics import Objective, floor_for
from dmisearch.trialinfo import FINISHED, IDENTITY_ATTR, is_search

ROOT = Path(__file__).resolve().parent.parent
PAPER = ["alignment_fcn", "alignment_lcn", "alignment_cnn_vec", "alignment_cnn_gap",
         "patches_local", "patches_local_invariant", "patches_global"]
STUDIES = [*PAPER, "quickstart"]
KERNEL = ("ntk", "nngp")
TOP = 3
#: Score difference (aulc: decades) within which a pair's best counts as kept (recall~):
#: a pair often has near-copies of its best configuration that score the same to 1e-4.
TOL = 0.005


# --------------------------------------------------------------------------------------------
# complete curves: run each study once without a pruner (cached)
# --------------------------------------------------------------------------------------------


def collect(stem: str, cache: Path, registry: Any) -> dict[str, Any]:
    """The study's stored search trials (curves, costs, values), from the cache or a run."""
    cached = cache / f"{stem}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    from dmisearch.runner import run_study
    from dmisearch.study_file import build_spec

    path = ROOT / "studies" / (f"{stem}.toml" if stem == "quickstart" else f"paper/{stem}.toml")
    doc = tomllib.loads(path.read_text())
    doc.pop("confirm", None)
    doc["search"]["pruner"] = "none"
    doc["search"].pop("prune_after", None)
    doc["study"].update(name=stem, device="cpu")
    spec = build_spec(doc, registry, source=str(path), storage=f"sqlite:///{cache}/{stem}.db")
    start = time.time()
    study = run_study(spec)
    trials = []
    for t in sorted(study.trials, key=lambda t: t.number):
        if not is_search(t) or t.state not in FINISHED or t.value is None:
            continue
        sizes, seeds, err = curve_matrix(t.user_attrs)
        a = t.user_attrs
        trials.append({
            "number": t.number, "model": a["model"], "algorithm": a["algorithm"],
            "steps": (a.get("algorithm_params") or {}).get("steps") or 0,
            "baseline": a["baseline_error"], "value": t.value, "data": a["data"],
            "scores": a["scores"], "sizes": sizes.tolist(), "errors": err.tolist()})
    out = {"study": stem, "identity": study.user_attrs[IDENTITY_ATTR],
           "wall_s": time.time() - start, "trials": trials}
    cached.write_text(json.dumps(out))
    return out


# --------------------------------------------------------------------------------------------
# replay
# --------------------------------------------------------------------------------------------


def arms(sizes: list[int]) -> dict[str, Callable[[], optuna.pruners.BasePruner]]:
    """Each pruner compared, by label. Optuna's halving pruners take the curve's sizes as
    the resource (the step reported is n): rungs at n1, n1 x eta, ..."""
    p = optuna.pruners
    first, last = sizes[0], sizes[-1]
    return {
        "none": p.NopPruner,
        "median": lambda: p.MedianPruner(n_startup_trials=5),  # dmisearch's default
        "percentile 75": lambda: p.PercentilePruner(75.0, n_startup_trials=5),
        "percentile 90": lambda: p.PercentilePruner(90.0, n_startup_trials=5),
        "sha eta=2": lambda: p.SuccessiveHalvingPruner(min_resource=first, reduction_factor=2),
        "sha eta=4": lambda: p.SuccessiveHalvingPruner(min_resource=first, reduction_factor=4),
        "hyperband eta=2": lambda: p.HyperbandPruner(min_resource=first, max_resource=last,
                                                     reduction_factor=2),
        "hyperband eta=3": lambda: p.HyperbandPruner(min_resource=first, max_resource=last,
                                                     reduction_factor=3),
        "curve": CurvePruner,  # the defaults: threshold 0.05, k 3, pow3, calibrated
        "curve t=0.2": lambda: CurvePruner(threshold=0.2),
        "curve t=0.5": lambda: CurvePruner(threshold=0.5),
        "curve uncalibrated": lambda: CurvePruner(calibrate=False),
        "curve k=1": lambda: CurvePruner(k=1),
        "curve exp3": lambda: CurvePruner(family="exp3"),
        "oracle at 2 sizes": Oracle,
    }


class Oracle(optuna.pruners.BasePruner):
    """The floor for any pruner that fits two sizes: at the second size, prunes exactly the
    trials whose measured score (user attribute ``true_value``, set by the replay) does not
    beat the curve pruner's reference (k = 3)."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if len(trial.intermediate_values) < 2:
            return False
        ref, _ = reference(study, trial, 3)
        return ref is not None and trial.user_attrs["true_value"] > ref


def order_of(n: int, seed: int) -> list[int]:
    """Search order ``seed``: 0 is the study's own order, others a shuffle."""
    idx = list(range(n))
    if seed:
        np.random.default_rng(seed).shuffle(idx)
    return idx


def replay(data: dict[str, Any], order: list[int], pruner: optuna.pruners.BasePruner,
           name: str) -> list[int]:
    """Feed the trials in ``order`` to a fresh study with ``pruner``, reporting and asking
    as ``dmisearch.objective`` does; the number of sizes each trial trained (by index)."""
    ident = data["identity"]
    sizes = list(ident["curve"]["sizes"])
    obj = ident["objective"]
    objective = Objective(obj["name"], obj.get("target"))
    study = optuna.create_study(study_name=name, direction="minimize", pruner=pruner)
    study.set_user_attr(IDENTITY_ATTR, ident)
    trained = [0] * len(order)
    for i in order:
        tr = data["trials"][i]
        err = np.asarray(tr["errors"], float)
        base = tr["baseline"]
        floor = floor_for(obj["metric"], ident["curve"]["test_size"], base)
        t = study.ask()
        for key, value in (("model", tr["model"]), ("algorithm", tr["algorithm"]),
                           ("baseline_error", base), ("true_value", tr["value"])):
            t.set_user_attr(key, value)
        means: list[float] = []
        pruned = False
        for j, n in enumerate(sizes):
            means.append(float(err[j].mean()))
            t.report(objective.intermediate(np.array(sizes[: j + 1]), np.array(means), base,
                                            floor), step=n)
            if n == sizes[-1]:
                break
            t.set_user_attr("curve", partial_curve(sizes[: j + 1], err[: j + 1]))
            if t.should_prune():
                pruned = True
                break
        trained[i] = len(means)
        t.set_user_attr("curve", partial_curve(sizes[: len(means)], err[: len(means)]))
        if pruned:
            study.tell(t, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(t, tr["value"])
    return trained


def partial_curve(sizes: list[int], err: np.ndarray) -> dict[str, list[Any]]:
    """The curve attribute a trial carries after ``sizes``: one entry per (size, seed)."""
    seeds = range(err.shape[1])
    return {"size": [n for n in sizes for _ in seeds], "seed": [s for _ in sizes for s in seeds],
            "test_error": [float(e) for row in err for e in row]}


def top_pairs(trials: list[dict[str, Any]]) -> list[int]:
    """Indices of the best trial of each of the ``TOP`` best (model, algorithm) pairs."""
    best: dict[tuple[str, str], int] = {}
    for i, t in enumerate(trials):
        pair = (t["model"], t["algorithm"])
        if pair not in best or t["value"] < trials[best[pair]]["value"]:
            best[pair] = i
    return sorted(best.values(), key=lambda i: (trials[i]["value"], i))[:TOP]


def costs(data: dict[str, Any], trained: list[int]) -> tuple[float, float]:
    """(model-steps, kernel work: sum of n^3 over the fits) of the trained sizes."""
    sizes = data["identity"]["curve"]["sizes"]
    seeds = len(data["identity"]["curve"]["seeds"])
    steps = kernel = 0.0
    for tr, k in zip(data["trials"], trained, strict=True):
        if tr["algorithm"] in KERNEL:
            kernel += seeds * sum(float(n) ** 3 for n in sizes[:k])
        else:
            steps += tr["steps"] * seeds * k
    return steps, kernel


def evaluate_arm(data: dict[str, Any], trained: list[int]) -> dict[str, float]:
    """Recall of the unpruned top pairs' best trials (strict; and ``recall_tol``: the
    pair's best complete score within ``TOL`` of it), whether the pruned study's own top
    pairs are the same, and the costs."""
    full = len(data["identity"]["curve"]["sizes"])
    trials = data["trials"]
    top = top_pairs(trials)
    kept = [t for t, k in zip(trials, trained, strict=True) if k == full]
    near = 0
    for i in top:
        mine = [t["value"] for t in kept
                if (t["model"], t["algorithm"]) == (trials[i]["model"], trials[i]["algorithm"])]
        near += bool(mine) and min(mine) <= trials[i]["value"] + TOL
    same = {(trials[i]["model"], trials[i]["algorithm"]) for i in top} == {
        (kept[i]["model"], kept[i]["algorithm"]) for i in top_pairs(kept)}
    steps, kernel = costs(data, trained)
    return {"recall": sum(trained[i] == full for i in top) / len(top),
            "recall_tol": near / len(top), "same": float(same), "steps": steps,
            "kernel": kernel, "pruned": sum(k < full for k in trained)}


# --------------------------------------------------------------------------------------------
# extrapolation error
# --------------------------------------------------------------------------------------------


def extrapolations(data: dict[str, Any], cuts: tuple[int, ...]) -> list[dict[str, Any]]:
    """Each trial cut after ``cuts`` sizes and extrapolated by each family (and ``flat``:
    the last measured error carried on), against what was measured. ``_cal`` columns: the
    pruner's calibration (``calibrate = true``), with the residuals of the study's other
    trials (of the same pair where it has ``SAME_TRIPLET`` others; leave one out), as the
    pruner sees them once the rest of the study is done;
    ``covered``: the measured score inside the 5-95% interval (200 replicates)."""
    ident = data["identity"]
    sizes = np.array(ident["curve"]["sizes"], float)
    obj = ident["objective"]
    objective = Objective(obj["name"], obj.get("target"))
    rows = []
    for i, tr in enumerate(data["trials"]):
        err = np.asarray(tr["errors"], float)
        base = tr["baseline"]
        floor = floor_for(obj["metric"], ident["curve"]["test_size"], base)
        for m in cuts:
            for fam in (*FAMILIES, "flat"):
                if fam == "flat":
                    means = err.mean(axis=1)
                    point = np.concatenate([means[:m], np.full(len(sizes) - m, means[m - 1])])
                    reps = np.array([objective.score(sizes, point, base, floor)])
                else:
                    try:
                        ex = extrapolate(fam, sizes[:m], err[:m], sizes, floor, 200, m)
                    except FitError:
                        continue
                    point = ex.point
                    reps = np.array([objective.score(sizes, c, base, floor)
                                     for c in ex.replicates])
                rows.append({"study": data["study"], "trial": i, "model": tr["model"],
                             "algorithm": tr["algorithm"], "cut": m, "family": fam,
                             "final": float(err[-1].mean()), "value": tr["value"],
                             "pred_final": float(point[-1]),
                             "pred": objective.score(sizes, point, base, floor), "reps": reps})
    for r in rows:
        others = [o for o in rows if o["family"] == r["family"] and o["cut"] == r["cut"]
                  and o["trial"] != r["trial"]]
        own = [o for o in others if (o["model"], o["algorithm"]) == (r["model"], r["algorithm"])]
        others = own if len(own) >= SAME_TRIPLET else others
        others = np.array([o["value"] - o["pred"] for o in others])
        r["pred_cal"], cal = calibrated(obj["name"], r["pred"], r["reps"], others)
        for suffix, reps in (("", r.pop("reps")), ("_cal", cal)):
            lo, hi = np.quantile(reps, [0.05, 0.95])
            r["covered" + suffix] = float(lo <= r["value"] <= hi)
    return rows


def summarise(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> list[str]:
    """Median errors and interval coverage grouped by ``keys``."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = [f"{' '.join(f'{k:>18}' for k in keys)}  trials  final_rel  score_rel  score_abs  "
           "score_bias  covered  score_abs_cal  covered_cal"]
    med = statistics.median
    for key, rs in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        out.append(
            f"{' '.join(f'{str(k):>18}' for k in key)}  {len(rs):6}  "
            f"{med(abs(r['pred_final'] - r['final']) / r['final'] for r in rs):9.3f}  "
            f"{med(abs(r['pred'] - r['value']) / abs(r['value']) for r in rs):9.3f}  "
            f"{med(abs(r['pred'] - r['value']) for r in rs):9.4f}  "
            f"{med(r['pred'] - r['value'] for r in rs):+10.4f}  "
            f"{statistics.mean(r['covered'] for r in rs):7.2f}  "
            f"{med(abs(r['pred_cal'] - r['value']) for r in rs):13.4f}  "
            f"{statistics.mean(r['covered_cal'] for r in rs):11.2f}")
    return out


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def replay_all(datasets: list[dict[str, Any]], orders: int) -> dict[str, list[dict]]:
    """Every arm on every study and order; prints one row each. Arm -> rows."""
    totals: dict[str, list[dict]] = {}
    print("\nstudy                    order arm                 pruned recall recall~ "
          "top3_same steps_share kernel_share")
    for data in datasets:
        sizes = data["identity"]["curve"]["sizes"]
        for seed in range(orders):
            order = order_of(len(data["trials"]), seed)
            results = {label: evaluate_arm(data, replay(data, order, make(),
                                                        f"{data['study']}-{seed}"))
                       for label, make in arms(sizes).items()}
            base = results["none"]
            for label, r in results.items():
                r.update(study=data["study"], none_steps=base["steps"],
                         none_kernel=base["kernel"])
                share = r["steps"] / base["steps"] if base["steps"] else math.nan
                kshare = r["kernel"] / base["kernel"] if base["kernel"] else math.nan
                print(f"{data['study']:24} {seed:5} {label:19} {r['pruned']:6} "
                      f"{r['recall']:6.2f} {r['recall_tol']:7.2f} {r['same']:9.0f} "
                      f"{share:11.3f} {kshare:12.3f}", flush=True)
                totals.setdefault(label, []).append(r)
    return totals


def print_summary(totals: dict[str, list[dict]], studies: list[str]) -> None:
    print("\nsummary over studies x orders (steps and kernel work pooled, as a share of no "
          "pruning)")
    print("arm                 recall  min_recall  recall~  top3_same  steps_share  "
          "kernel_share")
    for label, rs in totals.items():
        steps = sum(r["steps"] for r in rs) / sum(r["none_steps"] for r in rs)
        kernel = sum(r["kernel"] for r in rs) / max(sum(r["none_kernel"] for r in rs), 1)
        print(f"{label:19} {statistics.mean(r['recall'] for r in rs):6.3f}  "
              f"{min(r['recall'] for r in rs):10.2f}  "
              f"{statistics.mean(r['recall_tol'] for r in rs):7.3f}  "
              f"{statistics.mean(r['same'] for r in rs):9.3f}  {steps:11.3f}  {kernel:12.3f}")
    print("\nper study: recall / steps_share")
    print(f"{'arm':19} " + " ".join(f"{s[:14]:>14}" for s in studies))
    for label, rs in totals.items():
        cells = []
        for stem in studies:
            mine = [r for r in rs if r["study"] == stem]
            share = sum(r["steps"] for r in mine) / sum(r["none_steps"] for r in mine)
            cells.append(f"{statistics.mean(r['recall'] for r in mine):.2f}/{share:.2f}")
        print(f"{label:19} " + " ".join(f"{c:>14}" for c in cells))


def print_extrapolation(datasets: list[dict[str, Any]]) -> None:
    rows = [r for data in datasets for r in extrapolations(data, (2, 3, 4))]
    print("\nextrapolation error: every trial cut after 2, 3, 4 sizes. final_rel: "
          "|predicted - measured| / measured final error; score_rel, score_abs: the same for "
          "the study's score (aulc, decades); score_bias: median of predicted - measured "
          "(> 0: predicted worse); covered: the measured score inside the 5-95% "
          "bootstrap interval; _cal: calibrated on the study's other trials (the default)")
    for keys in (("family", "cut"), ("family", "cut", "algorithm")):
        print("\n" + "\n".join(summarise(rows, keys)))
    pow3 = [r for r in rows if r["family"] == "pow3"]
    for keys in (("cut", "model", "algorithm"), ("cut", "study")):
        print("\npow3 by " + ", ".join(keys[1:]) + "\n" + "\n".join(summarise(pow3, keys)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--studies", nargs="+", default=STUDIES, choices=STUDIES)
    ap.add_argument("--orders", type=int, default=6, help="search orders per study")
    ap.add_argument("--cache", type=Path,
                    default=Path(tempfile.gettempdir()) / "dmisearch-bench-pruning")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    args.cache.mkdir(parents=True, exist_ok=True)
    from dmisearch.plugins import load_registry

    registry = load_registry()
    began = time.time()
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"optuna {optuna.__version__}, {args.threads} thread(s); orders 0..{args.orders - 1}"
          " (0: the study's own order)", flush=True)
    datasets = []
    for stem in args.studies:
        data = collect(stem, args.cache, registry)
        print(f"# {stem}: {len(data['trials'])} trials, run once in {data['wall_s']:.0f} s "
              f"(cached in {args.cache})", flush=True)
        datasets.append(data)
    start = time.time()
    totals = replay_all(datasets, args.orders)
    print(f"\n# replay: {time.time() - start:.0f} s")
    print_summary(totals, args.studies)
    print_extrapolation(datasets)
    print(f"\n# total: {time.time() - began:.0f} s")


if __name__ == "__main__":
    main()
