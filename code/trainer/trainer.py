"""The training loop: epochs of optimisation, validation after each, and a resumable checkpoint after each.

A stop request (SIGTERM, SIGUSR1, Ctrl-C: utils/signals.py) stops training at the next step boundary, the same one
in every process (`utils.runtime.StopVote`): the point reached is committed (`Experiment.save_progress`: the weights,
optimizer, scheduler, loss scaler, every random state of every process, the batches done and each process's
running loss sums, the log lines) and `Stopped` ends the command, its line naming the point kept and the command
that continues it (`continue_command`); --resume continues from that step as if nothing had happened. A second
Ctrl-C raises `Interrupted` at once: `fit` says what the folder keeps and lets it through.
"""

import argparse
import decimal
import math
import shlex
import signal
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.optim.lr_scheduler import StepLR
from tqdm import tqdm

from cdvd_tsp.data.loaders import batches_per_epoch, start_epoch, train_loader, validation_loader
from cdvd_tsp.data.videodata import VideoData
from cdvd_tsp.logger.experiment import Experiment, History
from cdvd_tsp.logger.tensorboard import TENSORBOARD_DIR, VALIDATION_IMAGES, Curves
from cdvd_tsp.loss import Loss
from cdvd_tsp.model.cdvd_tsp import CDVD_TSP
from cdvd_tsp.model.checkpoint import load_into, with_n_sequence
from cdvd_tsp.option import run_options
from cdvd_tsp.trainer.model_setup import (
    PARAMETER_GROUPS,
    freeze_flow_net_if_asked,
    make_optimizer,
    set_optimizer_implementation,
    step_options,
    wrap_model,
)
from cdvd_tsp.trainer.randomness import capture_rng_state, derived_seed, restore_rng_state
from cdvd_tsp.trainer.running_loss import Reading, RunningLoss
from cdvd_tsp.trainer.step import TrainStep
from cdvd_tsp.trainer.validation import collapse, float_psnr, window_images
from cdvd_tsp.utils.cli import program_words
from cdvd_tsp.utils.errors import Stopped, UserError
from cdvd_tsp.utils.runtime import Runtime, StopVote
from cdvd_tsp.utils.signals import Interrupted, StopRequests, signal_name

STATE_FORMAT = 3
"""Version 3: state.pt of an epoch's commit holds no copy of the weights and the optimizer, only the names of the
files of the same commit that hold them (logger/experiment.py `read_state` puts them back). Version 2 keeps each
process's random states (``ranks``) and may hold a point inside an epoch (``inside``); version 1 (one ``rng`` for all
processes, epoch boundaries only) is read too, and so is version 2, its weights inside."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the run stops with its last good checkpoint intact."""


@dataclass
class Progress:
    """Where training is inside an epoch: the batches done (the same in every process) and this process's running
    sums of the loss terms over them."""

    epoch: int
    batches: int
    sums: list[float]
    resumed_after: str = ""
    """The signal that stopped the run at this point, when it was resumed from it (for the log)."""


class Trainer:
    """Trains ``model`` on ``train_set`` and validates it on ``test_set``, writing into ``experiment``."""

    def __init__(
        self,
        args: argparse.Namespace,
        runtime: Runtime,
        model: CDVD_TSP,
        loss: Loss,
        train_set: VideoData | None,
        test_set: VideoData,
        experiment: Experiment,
    ) -> None:
        self.args = args
        self.runtime = runtime
        self.model = model.to(runtime.device)
        self.model.checkpoint_steps = args.grad_checkpoint
        self.model.step_options = step_options(args.channels_last)
        freeze_flow_net_if_asked(self.model, args.flow_lr)
        self.network = wrap_model(self.model, runtime, args.n_GPUs)
        self.loss = loss.to(runtime.device)
        self.train_set = train_set
        self.test_set = test_set
        self.experiment = experiment
        self.history = History(loss_names=loss.names)
        self.optimizer = make_optimizer(self.model, args)
        self.scheduler = StepLR(self.optimizer, step_size=args.lr_decay, gamma=args.gamma)
        self.step = TrainStep(self.network, self.loss, self.optimizer, runtime.device, args.amp, args.compile)
        self.curves: Curves | None = None
        """The TensorBoard curves (--tensorboard, rank 0), open while `fit` runs."""
        self.last_commit = "none yet"
        """What the run's folder holds as its last commit (for the line of a second Ctrl-C)."""
        self._committing: str | None = None
        """The commit being made (None between commits)."""
        self._validation_images: list[torch.Tensor] = []
        self.blurred_psnr = math.nan
        """The mean PSNR of the blurred centre frames over the validation windows (set by `evaluate`)."""
        pin = runtime.device.type == "cuda"
        self.train_batches = None
        self.epoch_batches = 0
        """How many batches an epoch gives this process."""
        if train_set is not None:
            local_batch = args.batch_size // runtime.world_size
            self.train_batches = train_loader(
                train_set, local_batch, args.n_threads, runtime.rank, runtime.world_size, pin
            )
            self.epoch_batches = batches_per_epoch(self.train_batches)
        self.test_batches = validation_loader(test_set, args.n_threads, runtime.rank, runtime.world_size, pin)

    # ----- resumable state -----

    def state(self, epoch: int, progress: Progress | None = None, signal_number: int = 0) -> dict[str, Any]:
        """Everything a resumed run needs to continue after ``epoch`` (or at ``progress``, inside the next one)
        exactly as if it had not stopped. Every process calls it (their own states are gathered); rank 0's is
        the one written."""
        own: dict[str, Any] = {"rng": capture_rng_state(), "device": str(self.runtime.device)}
        if progress is not None:
            own |= {"loss_rng": self.loss.random_state(), "sums": progress.sums, "batches": progress.batches}
        state = {
            "format": STATE_FORMAT,
            "epoch": epoch,
            "options": run_options(self.args),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.step.scaler.state_dict(),
            "ranks": self.runtime.gather(own),
            "history": self.history.to_dict(),
        }
        if progress is not None:
            signal = signal_name(signal_number)
            state["inside"] = {"epoch": progress.epoch, "batches": progress.batches, "signal": signal}
        return state

    def start(self, state: dict[str, Any] | None) -> tuple[int, Progress | None]:
        """Where the run starts (`restore`: after the epoch of a resumed ``state``, or at its point inside the next
        one); a new training run first commits its initial state as epoch 0, so that --resume continues it even
        inside epoch 1."""
        if state:
            return self.restore(state)
        if not self.args.test_only:
            self.save(0)
        return 0, None

    def restore(self, state: dict[str, Any]) -> tuple[int, Progress | None]:
        """Load a `state`; returns the epoch it was taken after and, for a point inside the next epoch, where."""
        path = self.experiment.state_path
        if state.get("format") not in (1, 2, STATE_FORMAT):
            raise UserError(f"{path}: unknown state format {state.get('format')}")
        load_into(self.model, state["model"], str(path))
        self.optimizer.load_state_dict(state["optimizer"])
        set_optimizer_implementation(self.optimizer, self.args.optimizer_impl)
        self.scheduler.load_state_dict(state["scheduler"])
        if self.step.scaler.is_enabled() and state["scaler"]:
            self.step.scaler.load_state_dict(state["scaler"])
        ranks = state.get("ranks") or [{"rng": state["rng"]}]
        world_size, rank = self.runtime.world_size, self.runtime.rank
        own = ranks[rank] if len(ranks) == world_size else ranks[0]  # another count of processes: rank 0's
        restore_rng_state(own["rng"])
        self.history = History.from_dict(state["history"])
        inside = state.get("inside")
        self.last_commit = describe_commit(state["epoch"], inside)
        if inside is None:
            return state["epoch"], None
        where = f"{path} stopped inside epoch {inside['epoch']} (after batch {inside['batches']})"
        if len(ranks) != world_size:
            raise UserError(
                f"--resume: {where} with {len(ranks)} process(es); continue it with {len(ranks)} (the order of an "
                f"epoch's samples depends on the number of processes), not {world_size}"
            )
        if own["device"] != str(self.runtime.device):
            raise UserError(
                f"--resume: {where} on {own['device']}; continue it on the same device, not {self.runtime.device} "
                "(the random state of HEM's pixels belongs to the device)"
            )
        self.loss.set_random_state(own["loss_rng"])
        return state["epoch"], Progress(inside["epoch"], inside["batches"], own["sums"], inside["signal"])

    # ----- training -----

    def fit(self, first_epoch: int, requests: StopRequests, progress: Progress | None = None) -> None:
        """Train, validate and save from ``first_epoch`` (counting from 1) through --epochs; ``progress``: where a
        resumed run stopped inside ``first_epoch``. A stop request in ``requests`` ends it with `Stopped` at the
        next step boundary, after committing the point reached."""
        vote = StopVote(self.runtime, requests)
        if self.args.tensorboard and self.runtime.is_main:
            done = (first_epoch - 1) * self.epoch_batches + (progress.batches if progress else 0)
            self.curves = Curves(self.experiment.root / TENSORBOARD_DIR, first_step=done + 1)
        try:
            self._fit(first_epoch, vote, progress)
        except Interrupted as interrupt:  # a second Ctrl-C (the only signal that raises here): nothing is committed
            if self.runtime.is_main:  # said by the command (`utils.errors.run_cli`)
                interrupt.explanation = self._interrupted_again()
            raise
        finally:
            if self.curves is not None:
                self.curves.close()
                self.curves = None
        vote.close()

    def _fit(self, first_epoch: int, vote: StopVote, progress: Progress | None) -> None:
        for epoch in epochs_to_run(first_epoch, self.args.epochs):
            if progress is None:
                signal_number = vote.poll(at_once=True)
                if signal_number:
                    self._stopped(signal_number, f"before epoch {epoch}", f"keeps epoch {epoch - 1}, its last commit")
                progress = self.begin_epoch(epoch)
            else:
                self.continue_epoch(progress)
            signal_number = self.train_epoch(progress, vote)
            if signal_number:
                self.save_progress(progress, signal_number)
                done = f"after batch {progress.batches} of {self.epoch_batches}"
                self._stopped(
                    signal_number,
                    f"in epoch {epoch} {done}",
                    "keeps this point (weights, optimizer, scheduler, every random state, the epoch's progress)",
                )
            self.finish_epoch(progress)
            with warnings.catch_warnings():
                # resumed after an epoch's last step, this process has not stepped the optimizer (the stopped one
                # did), which the scheduler would take for the wrong order of the two
                warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)` before")
                self.scheduler.step()
            self.validate(epoch)
            self.save(epoch)
            if self.curves is not None:  # after the commit: a resumed run that validates again never logs it twice
                psnr_stage1, psnr = self.history.psnr_stage1[-1], self.history.psnr[-1]
                steps = epoch * self.epoch_batches
                self.curves.validation(steps, psnr_stage1, psnr, self._validation_images)
            self.runtime.barrier()
            progress = None

    def _stopped(self, signal_number: int, when: str, kept: str) -> None:
        message = (
            f"{stop_name(signal_number)} {when}: {self.experiment.root} {kept}; to continue it: "
            f"{continue_command(self.args, self.runtime.distributed)}"
        )
        raise Stopped(message if self.runtime.is_main else "", signal_number)

    def _interrupted_again(self) -> str:
        """What a stop at once (a second Ctrl-C) kept and how to continue it."""
        kept = self.last_commit
        if self._committing is not None:  # cut short before its commit point it is undone, after it completed
            kept += f", or {self._committing} if its commit got through: the next start completes it"
        return (
            f"a second time, stopped at once; {self.experiment.root} keeps its last commit "
            f"({kept}); to continue it: {continue_command(self.args, self.runtime.distributed)}"
        )

    def learning_rate(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def learning_rates(self) -> dict[str, float]:
        """The learning rate of each parameter group, by `PARAMETER_GROUPS` name."""
        return {name: group["lr"] for name, group in zip(PARAMETER_GROUPS, self.optimizer.param_groups, strict=True)}

    def begin_epoch(self, epoch: int) -> Progress:
        """Set up ``epoch`` from its start: its samples and order, HEM's seed, its first log line."""
        args, runtime = self.args, self.runtime
        start_epoch(self.train_batches, epoch, 0, self._worker_seed(epoch))
        self.loss.reseed(derived_seed(args.seed, epoch, runtime.rank))
        self.experiment.write_log(f"Epoch {epoch:3d} with Lr {decimal.Decimal(self.learning_rate()):.2e}")
        return Progress(epoch, 0, [0.0] * len(self.loss.names))

    def continue_epoch(self, progress: Progress) -> None:
        """Set up the rest of ``progress.epoch`` after its first ``progress.batches`` (HEM's generators were
        restored with the state)."""
        start_epoch(self.train_batches, progress.epoch, progress.batches, self._worker_seed(progress.epoch))

    def _worker_seed(self, epoch: int) -> int:
        """The seed of the data-loading workers of ``epoch`` in this process (a stream apart from HEM's)."""
        return derived_seed(self.args.seed, epoch, self.runtime.rank, 1)

    def train_epoch(self, progress: Progress, vote: StopVote) -> int:
        """Train the rest of ``progress.epoch``, updating ``progress``; returns the signal's number if the processes
        stop at a step boundary (`StopVote`), else 0."""
        args, runtime = self.args, self.runtime
        learning_rate = self.learning_rate()
        self.network.train()
        in_epoch = self.epoch_batches
        progress_bar = tqdm(
            self.train_batches,
            desc=f"epoch {progress.epoch}",
            initial=progress.batches,
            total=in_epoch,
            disable=not runtime.is_main,
            dynamic_ncols=True,
        )
        running = RunningLoss(progress.sums, runtime.device, keep_steps=self.curves is not None)
        read_from, seconds, started = progress.batches, [], time.perf_counter()
        for batch, (blur, gt, _) in enumerate(progress_bar, start=progress.batches):
            total, values = self.step.compute_loss(blur, gt)
            self.step.optimise(total)
            # the terms stay on the device: the host waits for them only where a log line or a stop needs them
            running.add(batch, values)
            progress.batches += 1
            now = time.perf_counter()
            seconds.append(now - started)
            started = now
            batches = progress.batches
            # after the epoch's last step the processes meet anyway (the loss sums): no need to wait a step
            signal_number = vote.poll(at_once=batches == in_epoch)
            logs = (batch + 1) % args.print_every == 0
            if logs or signal_number or batches == in_epoch:
                self._read_losses(running, progress, read_from, seconds)
                read_from, seconds = batches, []
                sums = progress.sums
                progress_bar.set_postfix(loss=f"{sums[-1] / batches:.4f}", lr=f"{learning_rate:.2e}")
            if logs:
                terms = "".join(
                    f"[{name}: {term_sum / batches:.4f}]" for name, term_sum in zip(self.loss.names, sums, strict=True)
                )
                self.experiment.write_log(
                    f"[{(batch + 1) * args.batch_size}/{len(self.train_set)}]\tLoss : "
                    f"[total: {sums[-1] / batches:.4f}]{terms}[mid: {0.0:.4f}]"  # CDVD_TSP has no mid loss
                )
            if signal_number:
                progress_bar.close()
                return signal_number
        return 0

    def _read_losses(self, running: RunningLoss, progress: Progress, read_from: int, seconds: list[float]) -> None:
        """Bring the running sums to the host into ``progress`` (every process at the same batch); stop the run if a
        loss since the last read (from batch ``read_from``) was not finite in any process; log the steps read to
        TensorBoard."""
        reading = running.read()
        # every process stops at the same read: a process alone would leave the others waiting in DDP's exchange
        first_bad = reading.first_bad_batch
        if not self.runtime.all_true(first_bad is None):
            self._stop_diverged(progress.epoch, reading)
        progress.sums = reading.sums
        if self.curves is not None:
            first_step = (progress.epoch - 1) * self.epoch_batches + read_from + 1
            self.curves.training_steps(first_step, self.loss.names, reading.steps, self.learning_rates(), seconds)

    def finish_epoch(self, progress: Progress) -> None:
        """The epoch's mean loss terms over all processes, into the history."""
        totals = self.runtime.sum(
            torch.tensor([*progress.sums, progress.batches], dtype=torch.float64, device=self.runtime.device)
        ).tolist()
        self.history.loss.append([running / totals[-1] for running in totals[:-1]])

    def _stop_diverged(self, epoch: int, reading: Reading) -> None:
        """Stop the run: a loss was not finite (``reading``: here, or None when in another process)."""
        batch = reading.first_bad_batch
        local = batch is not None
        batch = self.runtime.smallest(batch if local else None)
        terms = (
            ", ".join(f"{name} {value}" for name, value in zip(self.loss.names, reading.bad_values, strict=True))
            if local and batch == reading.first_bad_batch
            else "in another process"
        )
        saved = f"epoch {epoch - 1}" if epoch > 1 else "epoch 0, the initial weights"
        message = (
            f"the loss is not finite at epoch {epoch}, batch {batch + 1} ({terms}); "
            f"stopped, {self.experiment.root} keeps the last good checkpoint ({saved})"
        )
        self.experiment.write_log(message)
        raise TrainingDiverged(message)

    # ----- validation -----

    def evaluate(self) -> tuple[float, float]:
        """Mean PSNR of the stage-1 centre output and of the final output over the validation windows (all
        processes together; that of their blurred centre frames into `blurred_psnr`); writes the images with
        --save_images."""
        args, runtime = self.args, self.runtime
        self.network.eval()
        center = args.n_sequence // 2
        sums = torch.zeros(4, dtype=torch.float64)
        self._validation_images = []
        steps = math.ceil(len(self.test_set) / runtime.world_size)
        batches = iter(self.test_batches)
        with torch.no_grad():
            for _ in tqdm(range(steps), desc="validation", disable=not runtime.is_main, dynamic_ncols=True):
                images = None
                batch = next(batches, None)
                if batch is not None:
                    blur, gt, index = batch
                    blur = blur.to(runtime.device, non_blocking=True)
                    gt_center = gt[:, center].to(runtime.device, non_blocking=True)
                    with self.step.autocast():
                        outputs = self.model.split_outputs(self.model(blur))
                    first, final = outputs.stage1_center.float(), outputs.final.float()
                    blurred = blur[:, center].float()
                    sums += torch.tensor(
                        [
                            float_psnr(first, gt_center, args.rgb_range),
                            float_psnr(final, gt_center, args.rgb_range),
                            float_psnr(blurred, gt_center, args.rgb_range),
                            1,
                        ]
                    )
                    if self.curves is not None and len(self._validation_images) < VALIDATION_IMAGES:
                        side_by_side = torch.cat([blur[0, center], final[0], gt_center[0]], dim=-1)
                        self._validation_images.append((side_by_side / args.rgb_range).clamp(0, 1).cpu())
                    if args.save_images:
                        name = self.test_set.center_frame(int(index))
                        images = (name, window_images(blur[:, center], gt_center, first, final, args.rgb_range))
                if args.save_images:
                    self._write_images(images)
        psnr_stage1, psnr, blurred_psnr, count = runtime.sum(sums.to(runtime.device)).tolist()
        self.blurred_psnr = blurred_psnr / count
        return psnr_stage1 / count, psnr / count

    def _write_images(self, images: tuple[tuple[str, str], dict] | None) -> None:
        """Rank 0 writes its own images and those the other processes send it."""
        gathered = [images]
        if self.runtime.distributed:
            gathered = [None] * self.runtime.world_size if self.runtime.is_main else None
            dist.gather_object(images, gathered, dst=0)
        for item in gathered or []:
            if item is not None:
                (video, stem), pictures = item
                self.experiment.save_images(self.args.data_test, video, stem, pictures)

    def validate(self, epoch: int) -> None:
        """Validate after ``epoch``, add the PSNRs to the history and log them as the release did."""
        self.experiment.write_log("\nEvaluation:")
        psnr_stage1, psnr = self.evaluate()
        self.history.psnr_stage1.append(psnr_stage1)
        self.history.psnr.append(psnr)
        best, best_epoch = self.history.best()
        self.experiment.write_log(
            f"[{self.args.data_test}]\taverage PSNR_iter1: {psnr_stage1:.3f} PSNR_iter2: {psnr:.3f} "
            f"(Best: {best:.3f} @epoch {best_epoch})"
        )
        kept = f"model_best.pt keeps epoch {best_epoch}" if best_epoch != epoch else "no earlier epoch scored higher"
        self._flag_collapse(f"after epoch {epoch}", psnr_stage1, psnr, kept)

    def test(self) -> tuple[float, float]:
        """--test_only: validate once and log the result."""
        self.experiment.write_log("\nEvaluation:")
        psnr_stage1, psnr = self.evaluate()
        self.experiment.write_log(
            f"[{self.args.data_test}]\taverage PSNR_iter1: {psnr_stage1:.3f} PSNR_iter2: {psnr:.3f}"
        )
        self._flag_collapse("of the weights given", psnr_stage1, psnr, "")
        return psnr_stage1, psnr

    def _flag_collapse(self, when: str, psnr_stage1: float, psnr: float, kept: str) -> None:
        """A warning line in log.txt and on stderr (rank 0) if the validation PSNRs look collapsed (`collapse`)."""
        why = collapse({"PSNR_iter1": psnr_stage1, "PSNR_iter2": psnr}, self.blurred_psnr)
        if not why or not self.runtime.is_main:
            return
        line = (
            f"warning: validation {when} collapsed: PSNR_iter1 {psnr_stage1:.3f} dB, PSNR_iter2 {psnr:.3f} dB, "
            f"the blurred input {self.blurred_psnr:.3f} dB ({why}); the weights are unusable"
            + (f", {kept}" if kept else "")
        )
        self.experiment.write_log(line, show=False)
        print(line, file=sys.stderr, flush=True)

    def save_progress(self, progress: Progress, signal_number: int) -> None:
        """Commit the point ``progress`` inside an epoch (`Experiment.save_progress`); every process waits for the
        commit, so that none ends before rank 0 has written it."""
        state = self.state(progress.epoch - 1, progress, signal_number)
        if self.curves is not None:
            self.curves.flush()  # what the commit covers is in the event files
        point = describe_commit(progress.epoch - 1, {"epoch": progress.epoch, "batches": progress.batches})
        self._committing = point
        self.experiment.save_progress(state, progress.epoch, progress.batches)
        self.last_commit, self._committing = point, None
        self.runtime.barrier()

    def save(self, epoch: int) -> None:
        """Commit ``epoch``'s checkpoint (one commit point: `Experiment.save_checkpoint`). Epoch 0 is the run's
        initial state, committed before training so that a run stopped in its first epoch can be resumed."""
        trained = epoch > 0
        if self.curves is not None:
            self.curves.flush()
        self._committing = describe_commit(epoch, None)
        self.experiment.save_checkpoint(
            self.state(epoch),
            with_n_sequence(self.model.state_dict(), self.model.n_sequence) if trained else None,
            self.optimizer.state_dict() if trained else None,
            self.history,
            epoch,
            is_best=trained and self.history.best()[1] == epoch,
            keep_epoch=trained and self.args.save_middle_models,
        )
        self.last_commit, self._committing = self._committing, None


def stop_name(signal_number: int) -> str:
    """How a stop's line names its signal: ``Ctrl-C (SIGINT)``, ``SIGTERM``."""
    name = signal_name(signal_number)
    return f"Ctrl-C ({name})" if signal_number == signal.SIGINT else name


def describe_commit(epoch: int, inside: dict[str, Any] | None) -> str:
    """A commit in words: ``epoch 3``, or ``epoch 4 after batch 17`` for a point inside an epoch."""
    if inside is not None:
        return f"epoch {inside['epoch']} after batch {inside['batches']}"
    return f"epoch {epoch}" if epoch else "epoch 0, the initial weights"


def continue_command(args: argparse.Namespace, distributed: bool, program: str | None = None) -> str:
    """The command line that continues the run of ``args``: this program (``sys.argv[0]`` as it was typed: ``python
    code/main.py``, or the installed command's name) with its --save, its --experiment_dir where one was given and
    --resume; every other option comes from the run's checkpoint. Under torchrun, after torchrun's own options."""
    words = [*program_words(sys.argv[0] if program is None else program), "--save", args.save]
    if "experiment_dir" in getattr(args, "explicit", ()):
        words += ["--experiment_dir", str(args.experiment_dir)]
    command = shlex.join([*words, "--resume"])
    if distributed:
        return "torchrun <the same torchrun options> " + command.removeprefix("python ")
    return command


def epochs_to_run(first_epoch: int, epochs: int) -> Iterator[int]:
    """Epochs ``first_epoch`` .. ``epochs`` (no end when ``epochs`` is 0, as in the release)."""
    epoch = first_epoch
    while epochs == 0 or epoch <= epochs:
        yield epoch
        epoch += 1
