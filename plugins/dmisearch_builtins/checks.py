"""Parameter checks shared by the built-in components (each raises ValueError naming it)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def check_count(n: Any, what: str) -> None:
    """``n`` samples: a non-negative integer."""
    if not is_int(n) or n < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {n!r}")


def check_seed(seed: Any) -> None:
    if not is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def check_noise(noise: Any) -> None:
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not (
            math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")


def check_shape(shape: Any) -> None:
    """An input shape ``(C, L)`` or ``(C, H, W)`` of positive integers."""
    if not isinstance(shape, (tuple, list)) or len(shape) not in (2, 3) or not all(
            is_int(s) and s > 0 for s in shape):
        raise ValueError(
            f"shape must be 2 or 3 positive integers, (C, L) or (C, H, W), got {shape!r}")
