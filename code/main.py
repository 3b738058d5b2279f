"""Train, fine-tune or validate CDVD-TSP: ``python code/main.py [options]`` (``--help`` lists them).

One process trains on one device (or several through --n_GPUs and DataParallel); under
``torchrun --nproc_per_node N code/main.py ...`` N processes train with DistributedDataParallel, on one node or many.

``--resume`` continues the run in the folder, or starts it where none has committed yet, so that the same command
serves the first start and every restart (torchrun --max-restarts, a requeued job). SIGTERM, SIGUSR1 and Ctrl-C stop
training at the next step boundary, having committed the point reached, with exit status 128 + the signal's number
(143, 138, 130); a second Ctrl-C stops at once. Outside training (setting up, --test_only) they interrupt the command
as Ctrl-C does (docs/training.md).
"""

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from cdvd_tsp.data.demo import make_demo_data
from cdvd_tsp.data.loaders import build_datasets
from cdvd_tsp.logger.experiment import Experiment, state_to_continue
from cdvd_tsp.loss import Loss
from cdvd_tsp.model.checkpoint import load_weights
from cdvd_tsp.option import apply_saved_options, option_warnings, parse_args
from cdvd_tsp.trainer.model_setup import build_model, model_summary
from cdvd_tsp.trainer.randomness import seed_everything
from cdvd_tsp.trainer.trainer import Trainer
from cdvd_tsp.utils.determinism import use_deterministic_algorithms
from cdvd_tsp.utils.errors import UserError, run_cli
from cdvd_tsp.utils.runtime import Ranks, Runtime, join, leave, pick_device
from cdvd_tsp.utils.signals import TRAINING_STOP_SIGNALS, StopRequests

logger = logging.getLogger(__name__)


class TqdmHandler(logging.Handler):
    """Log lines printed above the progress bars instead of through them."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stdout)


def configure_logging(is_main: bool) -> None:
    handler = TqdmHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.basicConfig(level=logging.INFO if is_main else logging.WARNING, handlers=[handler], force=True)


def main(argv: Sequence[str] | None = None) -> int:
    # SIGTERM and SIGUSR1 interrupt as Ctrl-C does, except while training (Trainer.fit records them, and Ctrl-C, and
    # stops at a step boundary)
    with StopRequests(raise_in_main=True):
        return start(argv)


def start(argv: Sequence[str] | None) -> int:
    args = parse_args(argv)
    # a resumed run's options (the device among them) come from its checkpoint, before anything is set up
    state = state_to_continue(args.run_dir, args.resume, args.test_only, args.pre_train_path is not None)
    restored = apply_saved_options(args, state["options"]) if state else []
    runtime = start_runtime(args.cpu, args.n_GPUs)
    configure_logging(runtime.is_main)
    for warning in option_warnings(args) if runtime.is_main else []:
        logger.warning("warning: %s", warning)
    if args.resume and not state:
        logger.info("--resume: %s holds no run yet; starting it (the same command continues it)", args.run_dir)
    try:
        return run(args, runtime, state, restored)
    finally:
        leave()


def start_runtime(cpu: bool, n_gpus: int) -> Runtime:
    """The device (the CPU with ``cpu``, else the GPU of this process's local rank) and, under torchrun, the
    process group (gloo on the CPU, NCCL on GPUs) of DistributedDataParallel; --n_GPUs (DataParallel) checked."""
    ranks = Ranks.from_environment()
    if ranks.distributed and n_gpus > 1:
        raise UserError("--n_GPUs > 1 (DataParallel) and torchrun (DistributedDataParallel) exclude each other")
    choice, instead = ("cpu" if cpu else "cuda"), "pass --cpu to train on the CPU"
    device = pick_device(choice, ranks.local_rank, asked="training on CUDA", instead=instead)
    if device.type == "cuda" and n_gpus > torch.cuda.device_count():
        raise UserError(f"--n_GPUs {n_gpus}: only {torch.cuda.device_count()} CUDA devices are visible")
    return join(ranks, device, backend="gloo" if cpu else "nccl")


def checkpoint_position(state: dict[str, Any] | None) -> list[int]:
    """Which commit a process read: (-1, -1) for none, else (epoch, batches done inside the next epoch)."""
    if state is None:
        return [-1, -1]
    return [state["epoch"], state["inside"]["batches"] if state.get("inside") else 0]


def run(args: argparse.Namespace, runtime: Runtime, state: dict[str, Any] | None, restored: list[str]) -> int:
    """Everything after the options and the processes are set up; ``state`` is the checkpoint to resume from."""
    if args.batch_size % runtime.world_size:
        raise UserError(f"--batch_size {args.batch_size} does not split over {runtime.world_size} processes")
    if not runtime.same_everywhere(checkpoint_position(state)):
        raise UserError(
            f"the processes read different commits of {args.run_dir}: it must be one folder that every node sees "
            "(a shared file system)"
        )
    experiment = Experiment(args.run_dir, writes=runtime.is_main)
    # rank 0 locks the folder, finishes or undoes a checkpoint that a killed run left half-made and deletes its
    # temporary files, before any process reads the folder
    experiment.prepare()
    runtime.barrier()
    try:
        return train_or_validate(args, runtime, state, restored, experiment)
    finally:
        experiment.close()


def train_or_validate(
    args: argparse.Namespace,
    runtime: Runtime,
    state: dict[str, Any] | None,
    restored: list[str],
    experiment: Experiment,
) -> int:
    if args.deterministic:
        use_deterministic_algorithms(warn_only=True)  # on CUDA grid_sample's backward has no deterministic kernel
    seed_everything(args.seed)

    weights = starting_weights(args, resumed=bool(state))
    model = build_model(args, weights_follow=bool(state) or weights is not None)
    if weights is not None:
        # training may start from a model trained on windows of another length; validating one may not
        load_weights(model, weights, other_n_sequence=not args.test_only)
    if runtime.is_main:  # the embedded demo splits the run reads (dataset/DEMO/...), made once
        make_demo_data([args.test_dir] if args.test_only else [args.train_dir, args.test_dir])
    runtime.barrier()
    train_set, test_set = build_datasets(args, train=not args.test_only)
    runtime.barrier()  # every process has checked the folder, the weights and the data before rank 0 writes

    experiment.open(state.get("log_lines") if state else None)
    trainer = Trainer(args, runtime, model, Loss(args.loss), train_set, test_set, experiment)
    last_epoch, progress = trainer.start(state)
    first_epoch = progress.epoch if progress else last_epoch + 1
    if last_epoch == 0 and progress is None:
        # the model, as the release's log.txt began; here once per run (a resume from epoch 0 has dropped them)
        experiment.write_log(f"{model}\n{model_summary(model)}", show=False)
        logger.info(model_summary(model))
    experiment.write_config(args, first_epoch)
    if args.test_only:
        trainer.test()
        return 0
    if progress:
        experiment.write_log(
            f"Continue from epoch {last_epoch}, inside epoch {progress.epoch} after batch {progress.batches} "
            f"(stopped by {progress.resumed_after})..."
        )
    elif state:
        experiment.write_log(f"Continue from epoch {last_epoch}...")
    if state and restored:
        experiment.write_log(f"options taken from the run being resumed: {', '.join(restored)}")
    if args.epochs and first_epoch > args.epochs:
        experiment.write_log(f"the run has finished its {args.epochs} epochs; raise --epochs to train longer")
        return 0
    # from here on a stop signal, Ctrl-C included, is honoured at the next step boundary; a second Ctrl-C at once
    with StopRequests(TRAINING_STOP_SIGNALS, again_raises=[signal.SIGINT], notices=ctrl_c_notice(runtime)) as requests:
        trainer.fit(first_epoch, requests, progress)
    return 0


def starting_weights(args: argparse.Namespace, resumed: bool) -> Path | None:
    """The checkpoint the model's weights come from before training or validating: --pre_train's (unless the run is
    resumed: its state has the weights), the run's best model with --test_only, else None."""
    if args.pre_train_path is not None and not resumed:
        return args.pre_train_path
    if not args.test_only:
        return None
    best = args.run_dir / "model" / "model_best.pt"
    if not best.is_file():
        raise UserError(f"--test_only: {best} not found; pass --pre_train <checkpoint> or the --save of a run")
    return best


def ctrl_c_notice(runtime: Runtime) -> dict[int, str]:
    """The line rank 0 writes when Ctrl-C is first recorded in training."""
    if not runtime.is_main:
        return {}
    return {signal.SIGINT: "Ctrl-C: training stops after this step, committing it; Ctrl-C again stops at once"}


def cli() -> None:
    """The installed command (``cdvd-tsp-train``): main.py (train) as from a clone."""
    run_cli(main)


if __name__ == "__main__":
    cli()
