"""``[search] prior``: the theory prior's options, checked before trial 0 (see
:mod:`dmisearch.prior`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dmisearch.components import DataInfo
from dmisearch.errors import did_you_mean
from dmisearch.factory import Problems
from dmisearch.prior import Prior
from dmisearch.samplers import EXHAUSTIVE
from dmisearch.schema import SEARCH
from dmisearch.spec import Candidate, Pluggable

KEY = "search.prior"
OPTIONS = ("margin", "share", "pool")
#: Built-in architectures with an analytic kernel, for the message of a study without one.
KERNEL_MODELS = "fcn, lcn, cnn_vec, cnn_gap"


def build_prior(se: Mapping[str, Any], models: Mapping[str, Candidate], sampler: Pluggable,
                info: DataInfo | None, pb: Problems) -> Prior | None:
    """None (``"none"``, the default) or the theory prior with its options."""
    raw = SEARCH.get(se, "prior")
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict) or raw.get("name") not in ("none", "theory"):
        got = raw.get("name") if isinstance(raw, dict) and "name" in raw else raw
        pb.add(KEY, SEARCH["prior"].wrong(got))
        return None
    if raw["name"] == "none":
        if len(raw) > 1:
            pb.add(KEY, f"options {sorted(set(raw) - {'name'})} need name = \"theory\"")
        return None
    before = len(pb)
    opts = _options(raw, info, pb)
    if sampler.cls_name in EXHAUSTIVE:
        pb.add(KEY, f"{sampler.cls_name} trains every configuration once, so there is "
                    "nothing to order or share: use a sampling search (e.g. \"tpe\") or "
                    "remove prior")
    kernels = [n for n, c in models.items()
               if {"nngp", "ntk"} & set(getattr(c.cls, "provides", ()))]
    if models and not kernels:
        pb.add(KEY, f"none of the searched architectures ({', '.join(models)}) provides an "
                    f"analytic kernel (nngp or ntk), so the theory has nothing to predict: "
                    f"search one that does ({KERNEL_MODELS}) or remove prior")
    return Prior(**opts) if len(pb) == before else None


def _options(raw: Mapping[str, Any], info: DataInfo | None, pb: Problems) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in raw:
        if key != "name" and key not in OPTIONS:
            pb.add(f"{KEY}.{key}", f"unknown option{did_you_mean(key, OPTIONS)}; options: "
                                   f"{', '.join(OPTIONS)}")
    margin = raw.get("margin", Prior.margin)
    if not _number(margin) or margin <= 0:
        pb.add(f"{KEY}.margin", f"must be a positive number (aulc by which a pair's "
                                f"predicted score trails the best), got {margin!r}")
    out["margin"] = margin
    share = raw.get("share", Prior.share)
    if not _number(share) or not 0 < share < 1:
        pb.add(f"{KEY}.share", f"must be a number in (0, 1) (the most of the search's "
                               f"trials far-behind pairs get; never none), got {share!r}")
    out["share"] = share
    pool = raw.get("pool")
    limit = None if info is None else info.n_available
    if pool is not None and (not isinstance(pool, int) or isinstance(pool, bool)
                             or pool < 2):
        pb.add(f"{KEY}.pool", f"must be an integer >= 2, got {pool!r}")
    elif pool is not None and limit is not None and pool > limit:
        pb.add(f"{KEY}.pool", f"{pool} is more than the data's {limit} samples: use "
                              f"{limit} or less, or leave it out for the default")
    out["pool"] = pool
    return out


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
