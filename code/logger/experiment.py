"""The experiment folder ``<experiment_dir>/<save>/`` and everything written into it.

Layout (the release's, plus ``state.pt``)::

    state.pt                 everything --resume needs (the epoch's commit point, see below)
    model/model_latest.pt    weights after the last epoch (a plain state dict, loadable by the strict loader)
    model/model_best.pt      weights of the epoch with the best validation PSNR
    model/model_<epoch>.pt   with --save_middle_models
    optimizer.pt             the optimizer's state dict
    loss_log.pt, psnr_log.pt per-epoch logs as tensors (loss: one column per term), as the release wrote them
    loss_loss_<term>.png/.pdf, psnr.png/.pdf   plots of those logs
    log.txt, config.txt      the log lines, and the options of every start
    result/<test set>/<video>/<frame>_{gt,blur,deblur_iter1,deblur_iter2}.png   with --save_images

One commit point per epoch. `Experiment.save_checkpoint` writes every file of the epoch (state.pt, the model files,
optimizer.pt, the logs and plots) into the fresh hidden folder ``.commit/``, then the list of those files
(``.commit/files.json``); renaming ``.commit/state.pt`` over ``state.pt`` commits the epoch; then each staged file is
renamed over its place and ``.commit/`` is removed. A process killed at any instant leaves either an uncommitted
``.commit/`` (``state.pt`` still in it, or no files.json yet), which the next start deletes, or a committed one, whose
remaining files the next start moves into place (`Experiment.prepare`). So after any start the files are all those
of the epoch in state.pt. A new run commits "epoch 0" (its initial state, only state.pt) before it trains, so a run
killed in its first epoch is continued with --resume like any other; one killed before that has left nothing but
leftovers (`holds_only_leftovers`), and starting it again with the same command works.

log.txt is written line by line as training goes (atomically each time); state.pt records how many lines it had at
the commit, and --resume drops the lines written after it (those of the unfinished epoch), which the resumed run
writes again. Temporary files of atomic writes that a kill left behind are deleted by the next start. The start
holds an exclusive lock (``flock``) on the folder while it runs, so that it never deletes another live process's
files; a second process on the same folder is refused.

Only the process with ``writes`` (rank 0) touches the disk; the others keep the same calls as no-ops. A write that
fails (a full disk) raises a one-line `WriteError`; the last committed epoch stays intact.
"""

import argparse
import contextlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.frames import write_png
from logger.plots import render_series
from utils import atomic, locking
from utils.atomic import atomic_write_text, is_temporary, torch_bytes, writing
from utils.errors import UserError, first_line

logger = logging.getLogger(__name__)

STATE_FILE = "state.pt"
STAGING_DIR = ".commit"
MANIFEST = "files.json"
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
        if (root / STATE_FILE).is_file():
            return
        if root.is_dir() and holds_only_leftovers(root):
            raise UserError(
                f"--resume: {root} holds no checkpoint yet (its run stopped before it began training); "
                "start it again with the same command without --resume"
            )
        raise UserError(f"--resume: {root} holds no run to resume (no {STATE_FILE}); start it without --resume")
    if not root.exists():
        return
    if not root.is_dir():
        raise UserError(f"{root} exists and is not a folder; choose another --save")
    if holds_only_leftovers(root) or (test_only and not pre_train):
        return
    if (root / STATE_FILE).is_file():
        raise UserError(f"{root} already holds a run; continue it with --resume, or choose another --save")
    raise UserError(
        f"{root} already holds results (and no {STATE_FILE} to resume); choose another --save, or delete the folder "
        "to start over"
    )


def holds_only_leftovers(folder: Path) -> bool:
    """Whether ``folder`` holds nothing but what a run stopped before its first checkpoint leaves: empty folders,
    temporary files of atomic writes and an unfinished ``.commit/`` (true for an empty folder)."""
    for entry in folder.iterdir():
        if entry.is_symlink() or not (entry.is_dir() or is_temporary(entry)):
            return False
        if entry.is_dir() and entry.name != STAGING_DIR and not holds_only_leftovers(entry):
            return False
    return True


def read_state(root: Path) -> dict[str, Any]:
    """The resume state of the run in ``root`` (written by `Experiment.save_checkpoint`)."""
    path = root / STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # damaged or foreign file: torch raises many types
        reason = first_line(error)
        raise UserError(f"--resume: cannot read {path} ({reason})") from None


class Experiment:
    """Writer of one experiment folder (see the module docstring)."""

    def __init__(self, root: Path, writes: bool = True) -> None:
        self.root = Path(root)
        self.writes = writes
        self.log_lines: list[str] = []
        self._lock: int | None = None

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def state_path(self) -> Path:
        return self.root / STATE_FILE

    @property
    def staging_dir(self) -> Path:
        return self.root / STAGING_DIR

    def prepare(self) -> None:
        """Before anything reads the folder: lock it, finish or undo the checkpoint a killed process left half-made,
        and delete the temporary files it left (see the module docstring). Does nothing where the folder is new."""
        if not self.writes or not self.root.is_dir():
            return
        self._take_lock()
        self._finish_commit()
        removed = atomic.remove_temporaries(self.root)
        if removed:
            logger.info("removed %d temporary file(s) a stopped process left in %s", len(removed), self.root)

    def open(self, committed_log_lines: int | None = None) -> None:
        """Create the folders and pick up an existing log.txt, so that new lines are added after it; with
        ``committed_log_lines`` (--resume), drop the lines written after the checkpoint being resumed."""
        if not self.writes:
            return
        with writing(self.model_dir):
            self.model_dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        log_path = self.root / "log.txt"
        if log_path.is_file():
            self.log_lines = log_path.read_text(encoding="utf-8").splitlines()
        if committed_log_lines is not None and len(self.log_lines) > committed_log_lines:
            dropped = len(self.log_lines) - committed_log_lines
            self.log_lines = self.log_lines[:committed_log_lines]
            atomic_write_text(log_path, "".join(f"{line}\n" for line in self.log_lines))
            logger.info("log.txt: removed %d line(s) written after the last checkpoint", dropped)

    def close(self) -> None:
        """Release the folder's lock (the end of the process does the same)."""
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor releases the flock
            self._lock = None

    def _take_lock(self) -> None:
        if self._lock is not None or not locking.AVAILABLE:  # no flock (not POSIX): no folder descriptor to hold
            return
        with writing(self.root):
            descriptor = os.open(self.root, os.O_RDONLY)
        try:
            locked = locking.try_lock(descriptor)
        except OSError:
            locked = False
        if not locked:
            os.close(descriptor)
            raise UserError(
                f"{self.root} is in use by another process (training or validating there); wait for it to end"
            ) from None
        self._lock = descriptor

    def _finish_commit(self) -> None:
        """Move the files of a committed epoch into place, or delete an epoch that was never committed."""
        stage = self.staging_dir
        if not stage.is_dir():
            return
        manifest = stage / MANIFEST
        committed = not (stage / STATE_FILE).exists() and manifest.is_file() and self.state_path.is_file()
        if not committed:
            atomic.remove_tree(stage)
            logger.info("removed the unfinished checkpoint in %s (the run continues from the last complete one)", stage)
            return
        names = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        self._move_staged(names)
        logger.info("finished writing the last checkpoint's files in %s", self.root)

    def _move_staged(self, names: list[str]) -> None:
        """The end of a commit: each staged file over its place, then ``.commit/`` removed. Safe to repeat."""
        stage = self.staging_dir
        for name in names:
            source = stage / name
            if source.is_file():
                atomic.rename(source, self.root / name)
        for folder in {(self.root / name).parent for name in names}:
            atomic.sync_folder(folder)
        atomic.remove_tree(stage)

    def write_log(self, line: str, show: bool = True) -> None:
        """Add ``line`` (one or more lines) to log.txt (rewritten atomically: a kill never leaves half a file) and,
        with ``show``, show it."""
        if not self.writes:
            return
        if show:
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
        with writing(folder):
            folder.mkdir(parents=True, exist_ok=True)
        for kind in IMAGE_KINDS:
            with writing(folder / f"{stem}_{kind}.png"):
                write_png(folder / f"{stem}_{kind}.png", images[kind])

    def save_checkpoint(
        self,
        state: dict[str, Any],
        weights: dict[str, torch.Tensor] | None,
        optimizer: dict[str, Any] | None,
        history: History,
        epoch: int,
        is_best: bool,
        keep_epoch: bool,
    ) -> None:
        """Commit one epoch: stage every file, rename state.pt into place (the commit), then move the others.

        ``weights`` and ``optimizer`` are None for epoch 0 (the run's initial state: state.pt only). A `WriteError`
        while staging removes what was staged; the folder keeps the previous epoch, intact.
        """
        if not self.writes:
            return
        stage = self.staging_dir
        atomic.remove_tree(stage)  # nothing of a previous attempt (the start finished or removed it already)
        names: list[str] = []
        try:
            with writing(stage):
                stage.mkdir()
            for name, data in self._epoch_files(weights, optimizer, history, epoch, is_best, keep_epoch):
                target = stage / name
                with writing(target.parent):
                    target.parent.mkdir(parents=True, exist_ok=True)
                atomic.write_file(target, data)
                names.append(name)
            atomic.write_file(stage / STATE_FILE, torch_bytes({**state, "log_lines": len(self.log_lines)}))
            atomic.write_file(stage / MANIFEST, (json.dumps({"epoch": epoch, "files": names}) + "\n").encode())
            for folder in {stage, *((stage / name).parent for name in names)}:
                atomic.sync_folder(folder)
        except BaseException as error:
            with contextlib.suppress(OSError):
                atomic.remove_tree(stage)
            if isinstance(error, atomic.WriteError):
                kept = f"{self.root} keeps epoch {epoch - 1}, --resume continues from it" if epoch else "nothing kept"
                error.message += f" (the checkpoint of epoch {epoch} was not written; {kept})"
            raise
        atomic.rename(stage / STATE_FILE, self.state_path)  # the commit
        atomic.sync_folder(self.root)
        self._move_staged(names)

    @staticmethod
    def _epoch_files(
        weights: dict[str, torch.Tensor] | None,
        optimizer: dict[str, Any] | None,
        history: History,
        epoch: int,
        is_best: bool,
        keep_epoch: bool,
    ) -> Iterator[tuple[str, bytes]]:
        """(path in the folder, bytes) of every file an epoch's checkpoint replaces, one at a time."""
        if weights is not None:
            data = torch_bytes(weights)
            yield "model/model_latest.pt", data
            if is_best:
                yield "model/model_best.pt", data
            if keep_epoch:
                yield f"model/model_{epoch}.pt", data
        if optimizer is not None:
            yield "optimizer.pt", torch_bytes(optimizer)
        if not history.psnr:
            return
        # the per-epoch logs as tensors (the release's form) and their plots
        yield "loss_log.pt", torch_bytes(torch.tensor(history.loss, dtype=torch.float64))
        yield "psnr_log.pt", torch_bytes(torch.tensor(history.psnr, dtype=torch.float64))
        plots = {
            f"loss_loss_{name}": (f"{name} Loss", "Loss", {f"{name} Loss": [losses[column] for losses in history.loss]})
            for column, name in enumerate(history.loss_names)
        }
        plots["psnr"] = ("PSNR Graph", "PSNR (dB)", {"final output": history.psnr, "stage 1": history.psnr_stage1})
        for stem, (title, ylabel, series) in plots.items():
            for extension, data in render_series(title, ylabel, series).items():
                yield f"{stem}.{extension}", data
