"""The training loop: epochs of optimisation, validation after each, and a resumable checkpoint after each."""

import argparse
import decimal
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.optim.lr_scheduler import StepLR
from tqdm import tqdm

from data.loaders import train_loader, validation_loader
from data.videodata import VideoData
from logger.experiment import Experiment, History
from loss import Loss
from model.cdvd_tsp import CDVD_TSP
from model.checkpoint import load_into, with_n_sequence
from option import run_options
from trainer.model_setup import freeze_flow_net_if_asked, make_optimizer, wrap_model
from trainer.randomness import capture_rng_state, derived_seed, restore_rng_state
from trainer.runtime import Runtime
from trainer.step import TrainStep
from trainer.validation import float_psnr, window_images
from utils.errors import UserError

STATE_FORMAT = 1


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the run stops with its last good checkpoint intact."""


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
        freeze_flow_net_if_asked(self.model, args.flow_lr)
        self.network = wrap_model(self.model, runtime, args.n_GPUs)
        self.loss = loss.to(runtime.device)
        self.train_set = train_set
        self.test_set = test_set
        self.experiment = experiment
        self.history = History(loss_names=loss.names)
        self.optimizer = make_optimizer(self.model, args)
        self.scheduler = StepLR(self.optimizer, step_size=args.lr_decay, gamma=args.gamma)
        self.step = TrainStep(self.network, self.loss, self.optimizer, runtime.device, args.amp)
        pin = runtime.device.type == "cuda"
        self.train_batches = None
        if train_set is not None:
            local_batch = args.batch_size // runtime.world_size
            self.train_batches = train_loader(
                train_set, local_batch, args.n_threads, runtime.rank, runtime.world_size, pin
            )
        self.test_batches = validation_loader(test_set, args.n_threads, runtime.rank, runtime.world_size, pin)

    # ----- resumable state -----

    def state(self, epoch: int) -> dict[str, Any]:
        """Everything a resumed run needs to continue after ``epoch`` exactly as if it had not stopped."""
        return {
            "format": STATE_FORMAT,
            "epoch": epoch,
            "options": run_options(self.args),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.step.scaler.state_dict(),
            "rng": capture_rng_state(),
            "history": self.history.to_dict(),
        }

    def restore(self, state: dict[str, Any]) -> int:
        """Load a `state`; returns the epoch it was taken after."""
        if state.get("format") != STATE_FORMAT:
            raise UserError(f"{self.experiment.state_path}: unknown state format {state.get('format')}")
        load_into(self.model, state["model"], str(self.experiment.state_path))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.step.scaler.is_enabled() and state["scaler"]:
            self.step.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        self.history = History.from_dict(state["history"])
        return state["epoch"]

    # ----- training -----

    def fit(self, first_epoch: int) -> None:
        """Train, validate and save from ``first_epoch`` (counting from 1) through --epochs."""
        for epoch in epochs_to_run(first_epoch, self.args.epochs):
            self.train_epoch(epoch)
            self.scheduler.step()
            self.validate(epoch)
            self.save(epoch)
            self.runtime.barrier()

    def learning_rate(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def train_epoch(self, epoch: int) -> None:
        args, runtime = self.args, self.runtime
        self.train_set.set_epoch(epoch)
        self.train_batches.sampler.set_epoch(epoch)
        self.loss.reseed(derived_seed(args.seed, epoch, runtime.rank))
        learning_rate = self.learning_rate()
        self.experiment.write_log(f"Epoch {epoch:3d} with Lr {decimal.Decimal(learning_rate):.2e}")
        self.network.train()

        sums = [0.0] * len(self.loss.names)
        batches = 0
        progress = tqdm(self.train_batches, desc=f"epoch {epoch}", disable=not runtime.is_main, dynamic_ncols=True)
        for batch, (blur, gt, _) in enumerate(progress):
            total, values = self.step.compute_loss(blur, gt)
            # every process must agree before backward, or DDP's gradient exchange would wait forever
            if not runtime.all_true(all(math.isfinite(value) for value in values)):
                self._stop_diverged(epoch, batch, values)
            self.step.optimise(total)
            sums = [running + value for running, value in zip(sums, values, strict=True)]
            batches += 1
            progress.set_postfix(loss=f"{sums[-1] / batches:.4f}", lr=f"{learning_rate:.2e}")
            if (batch + 1) % args.print_every == 0:
                terms = "".join(
                    f"[{name}: {running / batches:.4f}]" for name, running in zip(self.loss.names, sums, strict=True)
                )
                self.experiment.write_log(
                    f"[{(batch + 1) * args.batch_size}/{len(self.train_set)}]\tLoss : "
                    f"[total: {sums[-1] / batches:.4f}]{terms}[mid: {0.0:.4f}]"  # CDVD_TSP has no mid loss
                )
        totals = runtime.sum(torch.tensor([*sums, batches], dtype=torch.float64, device=runtime.device)).tolist()
        self.history.loss.append([running / totals[-1] for running in totals[:-1]])

    def _stop_diverged(self, epoch: int, batch: int, values: list[float]) -> None:
        local = all(math.isfinite(value) for value in values)
        terms = (
            "in another process"
            if local
            else ", ".join(f"{name} {value}" for name, value in zip(self.loss.names, values, strict=True))
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
        processes together); writes the images with --save_images."""
        args, runtime = self.args, self.runtime
        self.network.eval()
        center = args.n_sequence // 2
        sums = torch.zeros(3, dtype=torch.float64)
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
                    sums += torch.tensor(
                        [float_psnr(first, gt_center, args.rgb_range), float_psnr(final, gt_center, args.rgb_range), 1]
                    )
                    if args.save_images:
                        name = self.test_set.center_frame(int(index))
                        images = (name, window_images(blur[:, center], gt_center, first, final, args.rgb_range))
                if args.save_images:
                    self._write_images(images)
        psnr_stage1, psnr, count = runtime.sum(sums.to(runtime.device)).tolist()
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

    def test(self) -> tuple[float, float]:
        """--test_only: validate once and log the result."""
        self.experiment.write_log("\nEvaluation:")
        psnr_stage1, psnr = self.evaluate()
        self.experiment.write_log(
            f"[{self.args.data_test}]\taverage PSNR_iter1: {psnr_stage1:.3f} PSNR_iter2: {psnr:.3f}"
        )
        return psnr_stage1, psnr

    def save(self, epoch: int) -> None:
        """Commit ``epoch``'s checkpoint (one commit point: `Experiment.save_checkpoint`). Epoch 0 is the run's
        initial state, committed before training so that a run stopped in its first epoch can be resumed."""
        trained = epoch > 0
        self.experiment.save_checkpoint(
            self.state(epoch),
            with_n_sequence(self.model.state_dict(), self.model.n_sequence) if trained else None,
            self.optimizer.state_dict() if trained else None,
            self.history,
            epoch,
            is_best=trained and self.history.best()[1] == epoch,
            keep_epoch=trained and self.args.save_middle_models,
        )


def epochs_to_run(first_epoch: int, epochs: int) -> Iterator[int]:
    """Epochs ``first_epoch`` .. ``epochs`` (no end when ``epochs`` is 0, as in the release)."""
    epoch = first_epoch
    while epochs == 0 or epoch <= epochs:
        yield epoch
        epoch += 1
