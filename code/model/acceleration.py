"""The per-stage step a runner calls, made fast for a device: autocast, torch.compile, CUDA graphs.

`accelerated_step` wraps `CDVD_TSP.restore_center`; the model itself is never changed, so the parity tests keep
testing the plain model. A streamed video calls the step with the same shapes frame after frame, which is what a
CUDA graph needs: one graph launch replaces the ~1,500 kernel launches of a step, which otherwise keep the GPU
waiting on the CPU.
"""

import logging
from collections import Counter
from collections.abc import Callable

import torch
from torch import Tensor

from model.cdvd_tsp import CDVD_TSP
from model.streaming import Step
from utils.precision import Precision, autocast

logger = logging.getLogger(__name__)

GRAPH_WARMUP_CALLS = 2
"""Eager calls per input shape before a capture: they let cuDNN pick its algorithms and the cost-volume kernel
pass its check (neither may happen during a capture)."""
MAX_GRAPHS = 2
"""Graphs kept at once (one per frame size); each holds its own memory pool, so older sizes are dropped."""


class AutocastStep:
    """``restore`` (``model.restore_center`` or a compiled form of it) under the autocast of ``precision``.

    The output has the inputs' dtype: under autocast the restoration net ends in float16 or bfloat16, and casting
    back keeps every stage's inputs in one dtype (one CUDA graph serves all stages, the frames keep full precision).
    """

    def __init__(self, restore: Step, precision: Precision, device: torch.device) -> None:
        self.restore = restore
        self.precision = precision
        self.device = device

    def __call__(self, previous: Tensor, center: Tensor, following: Tensor) -> Tensor:
        with autocast(self.precision, self.device, cache=False):
            return self.restore(previous, center, following).to(center.dtype)


class CapturedStep:
    """One CUDA graph of a step for one input shape: inputs are copied into its buffers, the graph is replayed, and
    a copy of its output is returned (the next replay overwrites the output buffer)."""

    def __init__(self, step: Step, inputs: tuple[Tensor, Tensor, Tensor]) -> None:
        self.inputs = tuple(tensor.clone() for tensor in inputs)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: the pipeline's reader threads may allocate pinned memory meanwhile, which a global capture
        # would take for an error
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.output = step(*self.inputs)

    def __call__(self, *inputs: Tensor) -> Tensor:
        for buffer, tensor in zip(self.inputs, inputs, strict=True):
            buffer.copy_(tensor)
        self.graph.replay()
        return self.output.clone()


class GraphedStep:
    """``step`` replayed from CUDA graphs, one per input shape, after `GRAPH_WARMUP_CALLS` eager calls."""

    def __init__(self, step: Step, capture: Callable[[Step, tuple[Tensor, Tensor, Tensor]], Step] = CapturedStep):
        self.step = step
        self.capture = capture
        self.graphs: dict[tuple, Step] = {}
        self.eager_calls: Counter[tuple] = Counter()

    def __call__(self, previous: Tensor, center: Tensor, following: Tensor) -> Tensor:
        key = tuple((tensor.shape, tensor.dtype, tensor.device) for tensor in (previous, center, following))
        captured = self.graphs.get(key)
        if captured is None:
            if self.eager_calls[key] < GRAPH_WARMUP_CALLS or torch.is_grad_enabled():
                self.eager_calls[key] += 1
                return self.step(previous, center, following)
            if len(self.graphs) >= MAX_GRAPHS:
                del self.graphs[next(iter(self.graphs))]
            captured = self.graphs[key] = self.capture(self.step, (previous, center, following))
            logger.info("captured a CUDA graph of the stage step for inputs of %s", list(center.shape))
        return captured(previous, center, following)


def compiled(model: CDVD_TSP) -> Step:
    """``model.restore_center`` through torch.compile (the first call of each shape compiles: a minute or more)."""
    return torch.compile(model.restore_center, dynamic=False)


def accelerated_step(
    model: CDVD_TSP, precision: Precision, device: torch.device, cuda_graphs: bool = False, compile: bool = False
) -> Step:
    """The step for a runner on ``device``: ``model.restore_center`` under ``precision``, optionally compiled
    and/or replayed from CUDA graphs (CUDA only)."""
    if cuda_graphs and device.type != "cuda":
        raise ValueError(f"CUDA graphs need a CUDA device, not {device}")
    restore: Callable[[Tensor, Tensor, Tensor], Tensor] = compiled(model) if compile else model.restore_center
    step: Step = AutocastStep(restore, precision, device)
    return GraphedStep(step) if cuda_graphs else step
