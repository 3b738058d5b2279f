"""Checks of the options: a one-line `UserError` naming the first flag whose value cannot work, and one-line
warnings for release flags that have no effect here. Neither changes the options."""

import argparse
import importlib.util

from cdvd_tsp.loss import parse_loss_spec
from cdvd_tsp.option.parser import MID_LOSS_WEIGHT, MODELS, NO_VALUE
from cdvd_tsp.utils.errors import UserError
from cdvd_tsp.utils.precision import NEEDS_CUDA, cpu_refusal


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


def check_options(args: argparse.Namespace) -> None:
    """Raise a one-line `UserError` for the first option whose value cannot work (after `option.derive.derive`)."""
    _require(args.model.upper() in MODELS, f"--model {args.model}: unknown model (known: {', '.join(MODELS)})")
    _require(args.n_stages >= 1, f"--n_stages {args.n_stages}: needs at least one stage")
    _require(args.n_feat >= 1 and args.n_resblock >= 1, "--n_feat and --n_resblock must be at least 1")
    _require(args.n_colors == 3, f"--n_colors {args.n_colors}: CDVD-TSP works on RGB frames, so it must be 3")
    _require(args.rgb_range > 0, f"--rgb_range {args.rgb_range}: must be positive")
    _require(args.size_must_mode >= 1, f"--size_must_mode {args.size_must_mode}: must be at least 1")
    _require(
        args.patch_size >= args.size_must_mode,
        f"--patch_size {args.patch_size}: must be at least --size_must_mode ({args.size_must_mode})",
    )
    _require(
        args.n_frames_per_video >= args.n_sequence,
        f"--n_frames_per_video {args.n_frames_per_video}: shorter than one window of {args.n_sequence} frames",
    )
    for name in ("batch_size", "test_every", "print_every", "lr_decay", "n_GPUs"):
        _require(getattr(args, name) >= 1, f"--{name} {getattr(args, name)}: must be at least 1")
    _require(args.n_threads >= 0, f"--n_threads {args.n_threads}: must be 0 or more")
    _require(args.epochs >= 0, f"--epochs {args.epochs}: must be 0 (no limit) or more")
    for name in ("lr", "epsilon"):
        _require(getattr(args, name) > 0, f"--{name} {getattr(args, name)}: must be positive")
    _require(args.flow_lr >= 0, f"--flow_lr {args.flow_lr}: must be 0 (frozen flow net) or more")
    _require(args.gamma > 0, f"--gamma {args.gamma}: must be positive")
    _require(args.weight_decay >= 0, f"--weight_decay {args.weight_decay}: must be 0 or more")
    for name in ("beta1", "beta2"):
        _require(0 <= getattr(args, name) < 1, f"--{name} {getattr(args, name)}: must be in [0, 1)")
    if args.cpu and args.amp != "off":
        reason = cpu_refusal(args.amp)
        _require(reason != NEEDS_CUDA, f"--amp {args.amp}: mixed precision needs CUDA; drop --cpu or --amp")
        _require(reason is None, f"--amp {args.amp} on the CPU: {reason}; drop --cpu or --amp")
    _require(
        not (args.compile and args.n_GPUs > 1),
        f"--compile and --n_GPUs {args.n_GPUs} exclude each other (DataParallel); use torchrun for several GPUs",
    )
    _require(
        not args.tensorboard or importlib.util.find_spec("tensorboard") is not None,
        "--tensorboard: the tensorboard package is not installed (pip install tensorboard)",
    )
    # --load implies --resume, so its own message comes first
    _require(not (args.test_only and args.load != NO_VALUE), "--test_only and --load exclude each other")
    _require(not (args.test_only and args.resume), "--test_only and --resume exclude each other")
    _require(args.save != "" and "/" not in args.save, f"--save {args.save!r}: must be a folder name, not a path")
    parse_loss_spec(args.loss)


def option_warnings(args: argparse.Namespace) -> list[str]:
    """One line for each option given a value that has no effect here."""
    warnings = []
    if args.mid_loss_weight != MID_LOSS_WEIGHT:
        warnings.append(
            f"--mid_loss_weight {args.mid_loss_weight}: has no effect, CDVD_TSP has no internal loss "
            "(nor had the release's)"
        )
    return warnings
