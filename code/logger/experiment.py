"""The experiment folder ``<experiment_dir>/<save>/`` and everything written into it.

Layout (the release's, plus ``state.pt``)::

    state.pt                 everything --resume needs, written once per epoch as one file (the commit point)
    model/model_latest.pt    weights after the last epoch (a plain state dict, loadable by the strict loader)
    model/model_best.pt      weights of the epoch with the best validation PSNR
    model/model_<epoch>.pt   with --save_middle_models
    optimizer.pt             the optimizer's state dict
    loss_log.pt, psnr_log.pt per-epoch logs as tensors (loss: one column per term), as the release wrote them
    loss_loss_<term>.png/.pdf, psnr.png/.pdf   plots of those logs
    log.txt, config.txt      the log lines, and the options of every start
    result/<test set>/<video>/<frame>_{gt,blur,deblur_iter1,deblur_iter2}.png   with --save_images

Every file but the images is replaced atomically, so a process killed at any moment leaves the last complete
version. Only the process with ``writes`` (rank 0) touches the disk; the others keep the same calls as no-ops.
"""

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.frames import write_png
from logger.plots import plot_series
from utils.atomic import atomic_torch_save, atomic_write_text
from utils.errors import UserError

logger = logging.getLogger(__name__)

STATE_FILE = "state.pt"
IMAGE_KINDS = ("gt", "blur", "deblur_iter1", "deblur_iter2")


@dataclass
class History:
    """Per-epoch logs: the mean of each loss term, and the validation PSNR of stage 1 and of the final output."""

    loss_names: list[str]
    loss: list[list[float]] = field(default_factory=list)
    psnr_stage1: list[float] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)

    def best(self) -> tuple[float, int]:
        """(best final PSNR, its epoch counting from 1); the earliest epoch on ties."""
        epoch = int(np.argmax(self.psnr))
        return self.psnr[epoch], epoch + 1

    def to_dict(self) -> dict[str, Any]:
        return {"loss_names": self.loss_names, "loss": self.loss, "psnr_stage1": self.psnr_stage1, "psnr": self.psnr}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "History":
        return cls(values["loss_names"], values["loss"], values["psnr_stage1"], values["psnr"])


def check_folder(root: Path, resume: bool, test_only: bool, pre_train: bool) -> None:
    """Refuse to start where a run's results would be overwritten (read-only; safe to call in every process).

    A folder that holds files is used only to continue its run (--resume) or to validate its best model
    (--test_only without --pre_train, which adds to log.txt and result/).
    """
    if resume:
        if not (root / STATE_FILE).is_file():
            raise UserError(f"--resume: {root} holds no run to resume (no {STATE_FILE}); start it without --resume")
        return
    if not root.exists():
        return
    if not root.is_dir():
        raise UserError(f"{root} exists and is not a folder; choose another --save")
    if not any(root.iterdir()) or (test_only and not pre_train):
        return
    raise UserError(f"{root} already holds results; continue that run with --resume, or choose another --save")


def read_state(root: Path) -> dict[str, Any]:
    """The resume state of the run in ``root`` (written by `Experiment.save_checkpoint`)."""
    path = root / STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # damaged or foreign file: torch raises many types
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"--resume: cannot read {path} ({reason})") from None


class Experiment:
    """Writer of one experiment folder (see the module docstring)."""

    def __init__(self, root: Path, writes: bool = True) -> None:
        self.root = Path(root)
        self.writes = writes
        self.log_lines: list[str] = []

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def state_path(self) -> Path:
        return self.root / STATE_FILE

    def open(self) -> None:
        """Create the folders and pick up an existing log.txt, so that new lines are added after it."""
        if not self.writes:
            return
        self.model_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.root / "log.txt"
        if log_path.is_file():
            self.log_lines = log_path.read_text(encoding="utf-8").splitlines()

    def write_log(self, line: str) -> None:
        """Show ``line`` and add it to log.txt (rewritten atomically: a kill never leaves half a file)."""
        if not self.writes:
            return
        logger.info(line)
        self.log_lines.extend(line.split("\n"))
        atomic_write_text(self.root / "log.txt", "\n".join(self.log_lines) + "\n")

    def write_config(self, args: argparse.Namespace, start_epoch: int) -> None:
        """Add this start's options to config.txt, as the release did."""
        if not self.writes:
            return
        path = self.root / "config.txt"
        previous = path.read_text(encoding="utf-8") if path.is_file() else ""
        options = "".join(f"{name}: {value}\n" for name, value in sorted(vars(args).items()))
        atomic_write_text(path, f"{previous}From epoch {start_epoch - 1}...\n\n{options}\n")

    def save_images(self, test_name: str, video: str, stem: str, images: dict[str, np.ndarray]) -> None:
        """Write one validation window's images (H x W x 3 uint8) as result/<test>/<video>/<stem>_<kind>.png."""
        if not self.writes:
            return
        folder = self.root / "result" / test_name / video
        folder.mkdir(parents=True, exist_ok=True)
        for kind in IMAGE_KINDS:
            write_png(folder / f"{stem}_{kind}.png", images[kind])

    def save_checkpoint(
        self,
        state: dict[str, Any],
        weights: dict[str, torch.Tensor],
        optimizer: dict[str, Any],
        epoch: int,
        is_best: bool,
        keep_epoch: bool,
    ) -> None:
        """Write the resume state first (the commit point), then the release's model and optimizer files."""
        if not self.writes:
            return
        atomic_torch_save(state, self.state_path)
        atomic_torch_save(weights, self.model_dir / "model_latest.pt")
        if is_best:
            atomic_torch_save(weights, self.model_dir / "model_best.pt")
        if keep_epoch:
            atomic_torch_save(weights, self.model_dir / f"model_{epoch}.pt")
        atomic_torch_save(optimizer, self.root / "optimizer.pt")

    def save_history(self, history: History) -> None:
        """The per-epoch logs as tensors (release form) and their plots."""
        if not self.writes:
            return
        atomic_torch_save(torch.tensor(history.loss, dtype=torch.float64), self.root / "loss_log.pt")
        atomic_torch_save(torch.tensor(history.psnr, dtype=torch.float64), self.root / "psnr_log.pt")
        for column, name in enumerate(history.loss_names):
            values = [epoch_losses[column] for epoch_losses in history.loss]
            plot_series(self.root / f"loss_loss_{name}", f"{name} Loss", "Loss", {f"{name} Loss": values})
        plot_series(
            self.root / "psnr",
            "PSNR Graph",
            "PSNR (dB)",
            {"final output": history.psnr, "stage 1": history.psnr_stage1},
        )
