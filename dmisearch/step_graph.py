"""One training step captured as a CUDA graph and replayed: the fused engine's CUDA graphs
(``dmisearch.engine``, the study's ``cuda_graphs``)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

#: Eager steps before the capture (lazy initialisation, optimiser state), and the fewest
#: replays that make a capture worth its cost.
GRAPH_WARMUP = 3
GRAPH_MIN_REPLAYS = 4


class StepGraph:
    """Runs a training step eagerly for ``GRAPH_WARMUP`` steps (on a side stream, as CUDA
    graph capture wants), then captures it once and replays the capture.

    The step must be a fixed sequence of device work: its step number read from the
    device, no host syncs, no Python state that changes between steps. ``capturable``,
    asked after the warm-up, says whether the optimiser's step is such (the optimiser's
    ``capturable`` attribute); if not, or if the capture fails (a warning says why), the
    remaining steps run eagerly.
    """

    failures: set[str] = set()  # reasons already warned about

    def __init__(self, step: Callable[[int], None], device: torch.device,
                 capturable: Callable[[], bool]):
        self.step, self.device, self.capturable = step, device, capturable
        self.graph: torch.cuda.CUDAGraph | None = None
        self.eager = False
        self.stream = torch.cuda.Stream(device)

    def __call__(self, t: int) -> None:
        if self.graph is not None:
            self.graph.replay()
        elif self.eager:
            self.step(t)
        elif t < GRAPH_WARMUP:
            current = torch.cuda.current_stream(self.device)
            self.stream.wait_stream(current)
            with torch.cuda.stream(self.stream):
                self.step(t)
            current.wait_stream(self.stream)
        elif not self.capturable():
            self.eager = True
            self.step(t)
        else:
            self._capture(t)

    def _capture(self, t: int) -> None:
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.step(t)
        except Exception as exc:  # noqa: BLE001 - any capture failure: go on eagerly
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            if reason not in self.failures:
                self.failures.add(reason)
                warnings.warn(f"CUDA graph capture failed ({reason}); training this chunk "
                              "eagerly. Set [study] cuda_graphs = false to skip the attempt.",
                              RuntimeWarning, stacklevel=2)
            self.eager = True
            self.step(t)
            return
        self.graph = graph
        graph.replay()  # the capture recorded step t without running it
