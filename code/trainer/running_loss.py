"""The running sums of an epoch's loss terms, kept on the training device so that a step never waits for its loss.

A step's weighted loss terms (a tensor on the device) are added to float64 sums on the device; the host reads them
only where it needs the numbers: a log line, the end of an epoch, a stop. Each read also says whether a loss was
not finite since the last one, and at which batch first: the loop checks it there, before anything is logged or
committed. The sums are those the host would make of the same numbers (float64 additions in the same order), so
the log lines and the checkpoints hold the same values as when every step read its loss.
"""

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Reading:
    """What `RunningLoss.read` found."""

    sums: list[float]
    """The running sum of each term (and the total) over the epoch's batches so far."""
    first_bad_batch: int | None
    """The first batch (counting from 0 in the epoch) since the last read whose loss was not finite; None if none."""
    bad_values: list[float]
    """That batch's terms (empty when every loss was finite)."""
    steps: list[list[float]]
    """With ``keep_steps``: the terms of each batch added since the last read, in order."""


class RunningLoss:
    """Adds each step's loss terms on the device; `read` brings them to the host (one synchronisation)."""

    def __init__(self, sums: list[float], device: torch.device, keep_steps: bool = False) -> None:
        self.sums = torch.tensor(sums, dtype=torch.float64, device=device)
        self.first_bad = torch.tensor(-1, dtype=torch.int64, device=device)
        self.bad_values: Tensor | None = None
        self.keep_steps = keep_steps
        self.steps: list[Tensor] = []

    def add(self, batch: int, values: Tensor) -> None:
        """Add the terms ``values`` (a 1-D tensor on the device) of ``batch``, without waiting for them."""
        values = values.detach()
        newly_bad = (~torch.isfinite(values).all()) & (self.first_bad < 0)
        self.first_bad = torch.where(newly_bad, batch, self.first_bad)
        self.bad_values = torch.where(newly_bad, values, values if self.bad_values is None else self.bad_values)
        self.sums += values.double()
        if self.keep_steps:
            self.steps.append(values)

    def read(self) -> Reading:
        """The sums and what happened since the last read (the host waits for the steps added so far)."""
        first_bad = int(self.first_bad)
        steps = torch.stack(self.steps).tolist() if self.steps else []
        bad = [] if first_bad < 0 or self.bad_values is None else self.bad_values.tolist()
        self.steps = []
        if first_bad >= 0:
            self.first_bad.fill_(-1)
        return Reading(self.sums.tolist(), None if first_bad < 0 else first_bad, bad, steps)
