"""TensorBoard event files of a training run (--tensorboard), under ``<experiment_dir>/<save>/tensorboard/``.

Scalars over the training steps (step 1 is the run's first optimisation step, counted across epochs): each loss
term and the total (``loss/<name>``), the learning rate of each parameter group (``learning_rate/<group>``), the
wall time of each step (``time/step_seconds``: from the start of one step to the start of the next, the data
loading included); after each epoch's validation, at the step that ended the epoch, the PSNR of each stage
(``validation/psnr_stage1``, ``validation/psnr_final``) and a few validation windows as images (blurred | restored
| sharp, ``validation/window_<n>``).

The event files are append-only logs, outside the run's commits (logger/experiment.py). A resumed run opens a new
event file whose first record purges (TensorBoard's ``purge_step``) every event of an earlier file from the step
after the commit it continues: the steps a stopped run had logged beyond its commit are dropped, and the resumed
run logs them again, so each step appears once. Events are flushed before every commit and a validation is
logged only after its epoch is committed, so nothing a commit covers is missing from the files.

`torch.utils.tensorboard` (which needs the ``tensorboard`` package) is imported only when a `Curves` is made.
"""

from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

TENSORBOARD_DIR = "tensorboard"
"""The event files' folder inside the run's folder."""
VALIDATION_IMAGES = 3
"""Validation windows shown as images after each validation (the first ones of rank 0)."""


class Curves:
    """Writes the curves of one run into ``folder``; ``first_step``: the first training step this start logs."""

    def __init__(self, folder: Path, first_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder), purge_step=first_step)

    def training_steps(
        self,
        first_step: int,
        names: Sequence[str],
        losses: Sequence[Sequence[float]],
        learning_rates: dict[str, float],
        seconds: Sequence[float],
    ) -> None:
        """The steps ``first_step``, ``first_step + 1``, ...: their loss terms (in the order of ``names``), the
        learning rates, and their durations."""
        for offset, (terms, duration) in enumerate(zip(losses, seconds, strict=True)):
            step = first_step + offset
            for name, value in zip(names, terms, strict=True):
                self.writer.add_scalar(f"loss/{name}", value, step)
            for group, rate in learning_rates.items():
                self.writer.add_scalar(f"learning_rate/{group}", rate, step)
            self.writer.add_scalar("time/step_seconds", duration, step)

    def validation(self, step: int, psnr_stage1: float, psnr: float, images: Sequence[Tensor]) -> None:
        """A validation after ``step``: both PSNRs, and ``images`` (3 x H x W in [0, 1], blurred | restored |
        sharp side by side)."""
        self.writer.add_scalar("validation/psnr_stage1", psnr_stage1, step)
        self.writer.add_scalar("validation/psnr_final", psnr, step)
        for index, image in enumerate(images):
            self.writer.add_image(f"validation/window_{index}", image, step)
        self.writer.flush()

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
