"""The experiment folder ``<experiment_dir>/<save>/`` and everything written into it.

Layout (the release's, plus ``state.pt``)::

    state.pt                 everything else --resume needs (the key file of the epoch's commit, see below)
    model/model_latest.pt    weights after the last epoch (a plain state dict, loadable by the strict loader)
    model/model_best.pt      weights of the epoch with the best validation PSNR
    model/model_<epoch>.pt   with --save_middle_models
    optimizer.pt             the optimizer's state dict
    loss_log.pt, psnr_log.pt per-epoch logs as tensors (loss: one column per term), as the release wrote them
    loss_loss_<term>.png/.pdf, psnr.png/.pdf   plots of those logs
    log.txt, config.txt      the log lines, and the options of every start
    result/<test set>/<video>/<frame>_{gt,blur,deblur_iter1,deblur_iter2}.png   with --save_images

One commit per epoch, through utils/committed.py: the folder's unit is named after ``state.pt`` (its manifest
``.state.pt.manifest.json`` lists the checkpoint's files; ``.state.pt.staging-<token>/`` and ``.state.pt.lock``
are its staging folder and lock). `Experiment.save_checkpoint` writes every file of the epoch (state.pt, the model
files, optimizer.pt, the logs and plots) into a fresh staging folder and commits it: the new manifest is renamed into
place (the commit point), then the files, state.pt last; the files of earlier epochs it does not rewrite
(model_best.pt of an earlier epoch, model_<epoch>.pt) stay. A process killed at any instant leaves either an
uncommitted staging folder, which the next start deletes, or a committed one, whose remaining files the next start
moves into place (`Experiment.prepare`). So after any start the files are all those of the epoch in state.pt. Until
then `read_state` and `state_to_continue` read the committed state.pt wherever it is. A new run commits "epoch 0" (its
initial state, only state.pt) before it trains, so a run killed in its first epoch is continued with --resume like
any other; one killed before that has left nothing but leftovers (`holds_only_leftovers`), and starting it again
with the same command works, with or without --resume (which starts a run where none has committed).

The weights and the optimizer are written once per commit: an epoch's state.pt names the files of the same commit
that hold them (``"files": {"model": "model/model_latest.pt", "optimizer": "optimizer.pt"}``) and `read_state` puts
them back. A run stopped by a signal commits the point it reached inside an epoch (`Experiment.save_progress`):
state.pt only, which then holds the weights and the optimizer itself (as does epoch 0's, and any state.pt written
before this version, which resumes as it did); the files of the last complete epoch stay as they are.

A folder of this project's previous version (``state.pt`` and no manifest; each epoch staged in ``.commit/`` and
committed by renaming ``.commit/state.pt``) is adopted by the first start that opens it: its ``.commit/`` is finished
or removed as that version did, and the files of the layout above that it holds become the unit's first commit.

log.txt is written line by line as training goes (atomically each time), outside the commit; state.pt records how
many lines it had at the commit, and --resume drops the lines written after it (those of the unfinished epoch),
which the resumed run writes again. config.txt and the validation images (result/) are written outside the commit
too, each file atomically. Temporary files of atomic writes that a kill left behind are deleted by the next start.
The start holds the unit's lock while it runs, so that it never deletes another live process's files; a second
process on the same folder is refused.

Only the process with ``writes`` (rank 0) touches the disk; the others keep the same calls as no-ops. A write that
fails (a full disk) raises a one-line `WriteError`; the last committed epoch stays intact.
"""

import argparse
import contextlib
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cdvd_tsp.data.frames import write_png
from cdvd_tsp.logger.plots import render_series
from cdvd_tsp.utils import atomic, committed, manifest
from cdvd_tsp.utils.atomic import atomic_write_text, is_temporary, torch_bytes, writing
from cdvd_tsp.utils.errors import UserError, first_line

logger = logging.getLogger(__name__)

STATE_FILE = "state.pt"
"""The key file of the folder's unit (utils/committed.py), and its name."""
TOOL = "main.py"
PREVIOUS_STAGING_DIR = ".commit"
"""Where this project's previous version staged an epoch, with the list of its files in ``files.json``."""
CHECKPOINT_FILES = re.compile(
    r"(state|optimizer|loss_log|psnr_log)\.pt|model/model_(latest|best|\d+)\.pt|(loss_loss_[^/]+|psnr)\.(png|pdf)"
)
"""The files of an epoch's checkpoint (the layout above), for adopting a folder of the previous version."""
IMAGE_KINDS = ("gt", "blur", "deblur_iter1", "deblur_iter2")


@dataclass
class History:
    """Per-epoch logs: the mean of each loss term, and the validation PSNR of stage 1 and of the final output."""

    loss_names: list[str]
    loss: list[list[float]] = field(default_factory=list)
    psnr_stage1: list[float] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)

    def best(self) -> tuple[float, int]:
        """(best final PSNR, its epoch counting from 1); the earliest epoch on ties. A PSNR that is not a number (a
        collapsed validation) is never the best (numpy's argmax would take it)."""
        epoch = int(np.argmax(np.nan_to_num(np.asarray(self.psnr, dtype=np.float64), nan=-np.inf)))
        return self.psnr[epoch], epoch + 1

    def to_dict(self) -> dict[str, Any]:
        return {"loss_names": self.loss_names, "loss": self.loss, "psnr_stage1": self.psnr_stage1, "psnr": self.psnr}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "History":
        return cls(values["loss_names"], values["loss"], values["psnr_stage1"], values["psnr"])


def state_to_continue(root: Path, resume: bool, test_only: bool, pre_train: bool) -> dict[str, Any] | None:
    """Refuse to start where a run's results would be overwritten; where the start continues the run in ``root``,
    its resume state (`read_state`), else None (read-only; safe to call in every process).

    A folder that holds files is used only to continue its run (--resume) or to validate its best model
    (--test_only without --pre_train, which adds to log.txt and result/). --resume where no run has committed yet
    (no folder, or one holding only what a run stopped before its first commit leaves) starts the run, so that one
    command line serves its first start and every restart.
    """
    if resume and committed_state(root) is not None:
        return read_state(root)
    if not root.exists():
        return None
    if not root.is_dir():
        raise UserError(f"{root} exists and is not a folder; choose another --save")
    if holds_only_leftovers(root) or (test_only and not pre_train):
        return None
    if committed_state(root) is not None:
        raise UserError(f"{root} already holds a run; continue it with --resume, or choose another --save")
    raise UserError(
        f"{root} already holds results (and no {STATE_FILE} to resume); choose another --save, or delete the folder "
        "to start over"
    )


def holds_only_leftovers(folder: Path) -> bool:
    """Whether ``folder`` holds nothing but what a run stopped before its first checkpoint leaves: empty folders,
    temporary files of atomic writes, the unit's lock file and uncommitted staging folders (and the previous
    version's ``.commit/``); true for an empty folder."""
    for entry in folder.iterdir():
        if committed.is_leftover(entry, STATE_FILE) or (entry.name == PREVIOUS_STAGING_DIR and entry.is_dir()):
            continue
        if entry.is_symlink() or not (entry.is_dir() or is_temporary(entry)):
            return False
        if entry.is_dir() and not holds_only_leftovers(entry):
            return False
    return True


def committed_state(root: Path) -> Path | None:
    """Where the state.pt of the last committed epoch is now (in the staging folder while its commit is being
    finished); a previous version's state.pt where the folder has no manifest yet; None if there is none."""
    if manifest.read_manifest(root, STATE_FILE) is None:
        return root / STATE_FILE if (root / STATE_FILE).is_file() else None
    return manifest.find(root, STATE_FILE, STATE_FILE)


def read_state(root: Path) -> dict[str, Any]:
    """The resume state of the run in ``root`` (written by `Experiment.save_checkpoint`), the weights and the
    optimizer that state.pt names read from their files of the same commit; safe while another process finishes
    its commit (and read again if another commit lands meanwhile)."""
    path = root / STATE_FILE
    try:
        while True:
            last = manifest.read_manifest(root, STATE_FILE)
            state = _load_committed(root, STATE_FILE, last is not None)
            for key, relative in state.pop("files", {}).items():
                state[key] = _load_committed(root, relative, last is not None)
            now = manifest.read_manifest(root, STATE_FILE)
            if last is None or now is None or now.commit == last.commit:
                return state
    except UserError:
        raise
    except Exception as error:  # damaged or foreign file: torch raises many types
        reason = first_line(error)
        raise UserError(f"--resume: cannot read {path} ({reason})") from None


def _load_committed(root: Path, relative: str, listed: bool) -> Any:
    """torch.load of the last commit's ``relative`` (where it is now); of ``root/relative`` without a manifest."""
    if not listed:
        return torch.load(root / relative, map_location="cpu", weights_only=True)
    with manifest.open_file(root, STATE_FILE, relative) as handle:
        return torch.load(handle, map_location="cpu", weights_only=True)


def finish_previous_commit(root: Path) -> None:
    """Finish or remove the ``.commit/`` of this project's previous version, as that version did: committed (its
    state.pt renamed into place, its files.json written) it is moved into place, otherwise removed."""
    stage = root / PREVIOUS_STAGING_DIR
    if not stage.is_dir() or stage.is_symlink():
        return
    listed = stage / "files.json"
    if not (stage / STATE_FILE).exists() and listed.is_file() and (root / STATE_FILE).is_file():
        try:
            names = json.loads(listed.read_text(encoding="utf-8"))["files"]
        except (OSError, ValueError, KeyError, TypeError):
            names = []
        for name in names if isinstance(names, list) else []:
            if CHECKPOINT_FILES.fullmatch(str(name)) and (stage / name).is_file():
                atomic.rename(stage / name, root / name)
        logger.info("finished writing the last checkpoint's files in %s", root)
    atomic.remove_tree(stage)


def previous_version_files(root: Path) -> list[str]:
    """The checkpoint files (the layout of the module docstring) in a folder of the previous version."""
    candidates = [*root.iterdir(), *((root / "model").iterdir() if (root / "model").is_dir() else [])]
    names = [path.relative_to(root).as_posix() for path in candidates]
    return sorted(
        name for name in names if CHECKPOINT_FILES.fullmatch(name) and manifest.disk_problem(root, name) is None
    )


class Experiment:
    """Writer of one experiment folder (see the module docstring)."""

    def __init__(self, root: Path, writes: bool = True) -> None:
        self.root = Path(root)
        self.writes = writes
        self.log_lines: list[str] = []
        self.unit: committed.Unit | None = None
        """The folder's unit, open (locked) from `prepare` or `open` to `close`."""

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def state_path(self) -> Path:
        return self.root / STATE_FILE

    def prepare(self) -> None:
        """Before anything reads the folder: lock it, finish or undo the checkpoint a killed process left half-made,
        and delete the temporary files it left (see the module docstring). Does nothing where the folder is new."""
        if not self.writes or not self.root.is_dir():
            return
        self._open_unit()
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
        self._open_unit()
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
        if self.unit is not None:
            self.unit.close()
            self.unit = None

    def _open_unit(self) -> None:
        """Lock the folder and clean up after a killed process; adopt a folder of the previous version."""
        if self.unit is not None:
            return
        try:
            self.unit = committed.Unit.open(self.root, STATE_FILE)
        except committed.Busy:
            raise UserError(
                f"{self.root} is in use by another process (training or validating there); wait for it to end"
            ) from None
        if self.unit.finished:
            logger.info("finished writing the last checkpoint's files in %s", self.root)
        if self.unit.discarded:
            logger.info(
                "removed the unfinished checkpoint in %s (the run continues from the last complete one)", self.root
            )
        if self.unit.manifest is None and (self.root / PREVIOUS_STAGING_DIR).is_dir():
            finish_previous_commit(self.root)
        if self.unit.manifest is None and self.state_path.is_file():
            files = previous_version_files(self.root)
            self.unit.adopt(files, {"tool": TOOL, "adopted": "a folder of this project's previous version"})
            logger.info("%s: recorded the %d checkpoint files of a run of the previous version", self.root, len(files))

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
        """Commit one epoch: stage every file, commit them (utils/committed.py), state.pt landing last.

        ``weights`` and ``optimizer`` are None for epoch 0 (the run's initial state: state.pt only); otherwise they
        are ``state``'s ``model`` and ``optimizer``, which state.pt then names instead of holding a second copy. A
        `WriteError` while staging removes what was staged; the folder keeps the previous epoch, intact.
        """
        files = self._epoch_files(weights, optimizer, history, epoch, is_best, keep_epoch)
        named = {"model": "model/model_latest.pt"} if weights is not None else {}
        named |= {"optimizer": "optimizer.pt"} if optimizer is not None else {}
        if named:
            state = {**{key: value for key, value in state.items() if key not in named}, "files": named}
        self._commit(state, files, {"tool": TOOL, "epoch": epoch}, f"the checkpoint of epoch {epoch}", epoch - 1)

    def save_progress(self, state: dict[str, Any], epoch: int, batches: int) -> None:
        """Commit a point inside ``epoch``, after ``batches`` batches: state.pt only (it holds the weights and all the
        rest); the files of the last complete epoch (model_latest.pt, the logs, the plots) stay as they are."""
        meta = {"tool": TOOL, "epoch": epoch - 1, "inside": {"epoch": epoch, "batches": batches}}
        self._commit(state, iter(()), meta, f"the point after batch {batches} of epoch {epoch}", None)

    def _commit(
        self,
        state: dict[str, Any],
        files: Iterator[tuple[str, bytes]],
        meta: dict[str, Any],
        what: str,
        kept_epoch: int | None,
    ) -> None:
        """Stage ``files`` and state.pt and commit them; the last commit's files not staged again stay."""
        if not self.writes:
            return
        assert self.unit is not None, "Experiment.open comes first"
        stage = self.unit.begin()
        try:
            for name, data in files:
                stage.write(name, data)
            stage.write(STATE_FILE, torch_bytes({**state, "log_lines": len(self.log_lines)}))
            stage.commit(meta, keep=self.unit.files)  # earlier commits' files stay
        except BaseException as error:
            if stage.committed:
                detail = f"{what} is committed; the next start moves the rest into place"
            else:
                with contextlib.suppress(OSError):
                    stage.discard()
                if kept_epoch is None:
                    kept = f"{self.root} keeps its last commit, --resume continues from it"
                elif kept_epoch >= 0:
                    kept = f"{self.root} keeps epoch {kept_epoch}, --resume continues from it"
                else:
                    kept = "nothing kept"
                detail = f"{what} was not written; {kept}"
            if isinstance(error, atomic.WriteError):
                error.message += f" ({detail})"
            raise

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
