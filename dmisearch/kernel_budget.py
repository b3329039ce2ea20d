"""What a study's kernel learners will cost, said (or refused) before trial 0.

A kernel algorithm (``ntk``, ``nngp``, their augmented forms) computes, for each draw of
the data, ``K(pool, pool)`` and ``K(test, pool)``: ``N (N + T)`` kernel entries for a pool
whose largest training size is ``N`` and a test set of ``T`` (with the Nystrom
approximation, ``(N + T) m`` against ``m`` landmarks; under augmentation, against the whole
orbit of the columns). Trials that share the kernel's hyperparameters and a draw reuse one
computation, and draws that hold the same inputs (a dataset's fixed splits) count once.

Before trial 0, :func:`check` sizes each kernel pair of the study at its first configuration
(the first value of each searched dimension; each further configuration of the kernel's own
hyperparameters costs as much again) and

* refuses, with :class:`~dmisearch.errors.DmisearchError`, a pair whose kernels do not fit
  in the device's available memory: the kernel matrices must be held whole (blocks only
  bound the computation's intermediates). The message gives the need, what is available,
  and what fits: landmarks for the approximation, or a smaller largest size;
* estimates the time, where the architecture can (``kernel_seconds``, as the built-ins
  have), and says it; past :data:`LONG_SECONDS` it warns, with the options: the Nystrom
  approximation and what it would take, a GPU, a smaller largest size.

Studies whose largest size is below :data:`CHECK_FROM` are not checked: their kernels take
seconds at most, and the estimate's short probe would cost more than it tells.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from dmisearch.components import Algorithm, Architecture, Split
from dmisearch.errors import DmisearchError
from dmisearch.space import corners
from dmisearch.spec import Candidate, StudySpec

#: Largest training sizes below this are not checked.
CHECK_FROM = 1000
#: Past this estimate (seconds) of every kernel pair's kernels together, a warning.
LONG_SECONDS = 60 * 60
#: Pool-by-columns float64 matrices alive at once in a trial: the cached kernel, the
#: regularised copy a solve factors, and its factor.
COPIES = 3
#: Corners of an architecture's space sized (the most costly counts).
MAX_CORNERS = 8


@dataclasses.dataclass(frozen=True)
class KernelCost:
    """One kernel pair's kernels, per draw of the data."""

    label: str  # "cnn_gap/ntk"
    section: str  # where its options go: [search.space.algorithm.<section>]
    pool: int  # N: the largest training size
    test: int  # T
    landmarks: int | None  # m under the Nystrom approximation (None: exact)
    group: int  # the augmentation's orbit size (1: none)
    draws: int  # distinct draws the study computes (curve and confirmation seeds)
    seconds: float | None  # per draw (None: the architecture gives no estimate)

    @property
    def columns(self) -> int:
        return self.pool if self.landmarks is None else self.landmarks

    @property
    def nbytes(self) -> int:
        """Peak bytes of one draw's kernel matrices."""
        n, c, t = self.pool, self.columns, self.test
        return 8 * (COPIES * n * c + t * c + (0 if self.landmarks is None else c * c))

    @property
    def total_seconds(self) -> float | None:
        return None if self.seconds is None else self.seconds * self.draws


def check(spec: StudySpec, device: torch.device, draw: Callable[[], Sequence[Split]],
          note: Callable[[str], None] | None = None) -> list[KernelCost]:
    """Size the study's kernel pairs on ``device``, ``draw`` giving the data of every curve
    and confirmation seed (called only when there is something to check): refuse what
    cannot fit, say the time, warn past :data:`LONG_SECONDS` (through ``note``, else
    :func:`warnings.warn`). Returns the costs (empty when the study has no kernel pair or
    its sizes are below :data:`CHECK_FROM`)."""
    n, t = spec.grid.sizes[-1], spec.grid.test_size
    pairs = [(spec.models[m], spec.algorithms[a]) for m, a in spec.pairs
             if getattr(spec.algorithms[a].cls, "kernel_kind", None)]
    if n < CHECK_FROM or not pairs:
        return []
    shape = tuple(spec.info.input_shape)
    draws = draw()
    distinct = len({_fingerprint(d, n) for d in draws})
    costs = [cost(m, a, shape, n, t, distinct, device) for m, a in pairs]
    free = available_memory(device)
    problems = [p for c in costs if (p := memory_problem(c, free, device))]
    if problems:
        raise DmisearchError(f"{spec.source}: the kernels cannot be held in memory, nothing "
                             "was run:\n" + "\n".join(f"  - {p}" for p in problems))
    say = note or (lambda text: warnings.warn(text, stacklevel=3))
    text = summary(costs, device, len(draws))
    if text is not None:
        if note is not None:
            note(text)
        warning = long_warning(costs, shape, device)
        if warning is not None:
            say(warning)
    return costs


def cost(model: Candidate, algo: Candidate, shape: tuple[int, ...], n: int, t: int,
         draws: int, device: torch.device) -> KernelCost:
    """``model`` x ``algo``'s kernels at the most costly corner of the architecture's space
    and the first of the algorithm's."""
    algorithm = algo.cls(**next(corners(algo.space)))
    assert isinstance(algorithm, Algorithm)
    count = getattr(algorithm, "landmark_count", None)
    landmarks = count(n) if count is not None else None
    transform = getattr(algo.cls, "augmentation", None)
    group = 1 if transform is None else _orbit_size(transform, shape)
    kind = algo.cls.kernel_kind  # type: ignore[attr-defined]
    archs = [model.cls(**p) for p, _ in zip(corners(model.space), range(MAX_CORNERS),
                                            strict=False)]
    seconds = [kernel_seconds(a, kind, shape, n, t, landmarks, group, device) for a in archs]
    known = [s for s in seconds if s is not None]
    return KernelCost(
        label=f"{model.cls.name}/{algo.cls.name}", section=algo.cls.name, pool=n, test=t,
        landmarks=landmarks, group=group, draws=draws,
        seconds=max(known) if len(known) == len(seconds) else None)


def kernel_seconds(arch: Architecture, kind: str, shape: tuple[int, ...], n: int, t: int,
                   landmarks: int | None, group: int, device: torch.device) -> float | None:
    """Estimated seconds of one draw's kernels (None: ``arch`` gives no estimate)."""
    estimate = getattr(arch, "kernel_seconds", None)
    if estimate is None:
        return None
    if landmarks is None and group == 1:
        return estimate(shape, n, kind, device) + estimate(shape, t, kind, device, n)
    cols = (n if landmarks is None else landmarks) * group
    return estimate(shape, n + t, kind, device, cols)


def memory_problem(c: KernelCost, free: int | None, device: torch.device) -> str | None:
    """Why ``c``'s kernels do not fit in ``free`` bytes, with what would (None: they do)."""
    if free is None or c.nbytes <= free:
        return None
    fits = dataclasses.replace(c, landmarks=_largest(lambda m: dataclasses.replace(
        c, landmarks=m).nbytes <= free, min(c.columns, c.pool)))
    size = _largest(lambda s: dataclasses.replace(
        c, pool=s, landmarks=None if c.landmarks is None else min(c.landmarks, s)
    ).nbytes <= free, c.pool)
    what = "exact kernels" if c.landmarks is None else f"kernels against {c.landmarks} landmarks"
    options = []
    if fits.landmarks:
        options.append(f'approximation = "nystrom" with landmarks = {fits.landmarks} under '
                       f"[search.space.algorithm.{c.section}] ({_gib(fits.nbytes)})")
    if size:
        options.append(f"a largest training size of {size} or less under [curve] sizes")
    return (f"{c.label}: the {what} of {c.pool} training and {c.test} test inputs need about "
            f"{_gib(c.nbytes)} at once and {device} has {_gib(free)} available; "
            + ("use " + ", or ".join(options) if options else "use a device with more memory"))


def summary(costs: Sequence[KernelCost], device: torch.device, seeds: int) -> str | None:
    """One line: each pair's estimate and the total (None: no pair can estimate)."""
    known = [c for c in costs if c.seconds is not None]
    if not known:
        return None
    from dmisearch.progress import clock

    parts = [f"{c.label} {clock(c.seconds)} a draw" for c in known]  # type: ignore[arg-type]
    total = sum(c.total_seconds for c in known)  # type: ignore[misc]
    draws = known[0].draws
    return (f"kernels on {device}, estimated from a short probe: {', '.join(parts)}; "
            f"{draws} distinct draw{'s' * (draws != 1)} of {known[0].pool} training and "
            f"{known[0].test} test inputs among {seeds} seed{'s' * (seeds != 1)}: about "
            f"{clock(total)} in "
            "all (more for each further configuration of a kernel's hyperparameters)")


def long_warning(costs: Sequence[KernelCost], shape: tuple[int, ...],
                 device: torch.device) -> str | None:
    """Past :data:`LONG_SECONDS`: the warning, with the options and what each would take."""
    from dmisearch.progress import clock

    known = [c for c in costs if c.total_seconds is not None]
    total = sum(c.total_seconds for c in known)  # type: ignore[misc]
    if total <= LONG_SECONDS:
        return None
    options = []
    m = max(CHECK_FROM // 2, min(c.pool for c in known) // 4)  # landmarks to offer
    exact = [c for c in known if c.landmarks is None and c.pool > m]
    if exact:
        options.append(f'the Nystrom approximation (approximation = "nystrom", landmarks = '
                       f"{m} under [search.space.algorithm.<name>] of "
                       f"{', '.join(sorted({c.section for c in exact}))}: its kernels scale "
                       f"as (N + T) m instead of N (N + T), about "
                       f"{clock(_scaled(known, exact, m))}; it changes the learning curve "
                       "beyond m, see the docs on the approximation)")
    if device.type != "cuda":
        gpu = "one is visible" if torch.cuda.is_available() else "where one is available"
        options.append(f'a GPU (device = "cuda" under [study]; {gpu})')
    size = _largest(lambda s: _at_size(known, s) <= LONG_SECONDS / 2, known[0].pool)
    if size:
        options.append(f"a largest training size of {size} (about "
                       f"{clock(_at_size(known, size))})")
    return (f"warning: the kernel learners' kernels alone take about {clock(total)} on "
            f"{device} before their trials can finish. Options: " + "; ".join(options))


def available_memory(device: torch.device) -> int | None:
    """Bytes that can be allocated on ``device`` now (None: unknown): CUDA's free memory;
    on the CPU, Linux's ``MemAvailable`` (free memory plus what the kernel can reclaim),
    else the free pages."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _fingerprint(split: Split, n: int) -> str:
    """Equal for draws holding the same inputs, in any order."""
    h = hashlib.sha1()
    for x in (split.x_train[:n], split.x_test):
        rows = x.detach().reshape(len(x), -1).cpu().numpy()
        for r in sorted(r.tobytes() for r in rows):
            h.update(r)
        h.update(b"|")
    return h.hexdigest()


def _orbit_size(transform: Any, shape: tuple[int, ...]) -> int:
    orbit = transform.orbit(torch.zeros(1, *shape))
    return 1 if orbit is None else int(orbit.shape[0])


def _scaled(known: Iterable[KernelCost], exact: Sequence[KernelCost], m: int) -> float:
    """Total seconds with ``exact``'s pairs at ``m`` landmarks (time linear in entries)."""
    total = 0.0
    for c in known:
        per = c.total_seconds or 0.0
        if c in exact:
            per *= m / c.pool
        total += per
    return total


def _at_size(known: Iterable[KernelCost], size: int) -> float:
    """Total seconds with the largest training size ``size`` (time linear in entries)."""
    total = 0.0
    for c in known:
        cols = size if c.landmarks is None else min(c.landmarks, size)
        total += (c.total_seconds or 0.0) * (size + c.test) * cols / (
            (c.pool + c.test) * c.columns)
    return total


def _largest(ok: Callable[[int], bool], below: int) -> int | None:
    """The largest integer in [1, below) for which ``ok`` holds (``ok`` monotone), rounded
    down to 2 significant digits; None if not even 1."""
    if below <= 1 or not ok(1):
        return None
    lo, hi = 1, below - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
    digits = max(0, len(str(lo)) - 2)
    return max(1, lo // 10**digits * 10**digits)


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB"
