"""Seeds derived from names, identical on every machine and in every process.

Every random draw in a study is seeded from the curve seed and a label ("data", "init",
"transform:0"...), never from the order trials or jobs run in: the same trial gives the same
curve when rerun alone, and every trial of a study sees the same data for a given seed
(common random numbers, so triplets are compared on identical samples).
"""

from __future__ import annotations

import zlib

import numpy as np


def derive_seed(*keys: int | str) -> int:
    """A 63-bit seed from integers and strings (non-negative, stable across runs)."""
    words = []
    for k in keys:
        if isinstance(k, str):
            words.append(zlib.crc32(k.encode("utf-8")))
        elif isinstance(k, (int, np.integer)) and k >= 0:
            words.append(int(k))
        else:
            raise ValueError(f"seed keys are non-negative integers or strings, got {k!r}")
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31 | int(state[1]) >> 1) & (2**63 - 1)
