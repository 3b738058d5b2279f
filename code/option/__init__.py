"""Command-line options of `main.py`: the release's flags with their meanings, plus this project's additions.

A template (`option.template`) supplies defaults; flags given on the command line override them. `parse_args`
returns the options with a few derived values added (`n_sequence`, resolved data folders); it checks every value and
raises a one-line `UserError` naming the flag.
"""

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from loss import parse_loss_spec
from option.template import DEFAULT_TEMPLATE, TEMPLATES, template_defaults
from utils.errors import UserError
from utils.paths import from_repo

MODELS = ("CDVD_TSP",)
AMP_MODES = ("off", "bf16", "fp16")
NO_VALUE = "."
"""The release's way to say 'none' for --pre_train, --load and --save."""

CONTROL_OPTIONS = frozenset(
    {"save", "load", "resume", "test_only", "experiment_dir", "pretrain_models_dir", "no_flow_pretrain", "pre_train"}
)
"""Options about this start only: where the run lives, what to do with it, where training starts from. Never saved
with a run (a resumed run takes its weights from its checkpoint)."""

ADJUSTABLE_OPTIONS = frozenset(
    {
        "n_threads",
        "cpu",
        "n_GPUs",
        "amp",
        "grad_checkpoint",
        "deterministic",
        "process",
        "dir_data",
        "dir_data_test",
        "print_every",
        "save_images",
        "save_middle_models",
        "epochs",
    }
)
"""Options of a run that a resumed run may change (hardware, data location, logging, the epoch budget): a resumed
run takes them from its checkpoint unless they are given. Every other saved option defines the run: a resumed run
takes it from its checkpoint and refuses another value, so that it continues exactly the run that was stopped."""


def build_parser(suppress_defaults: bool = False) -> argparse.ArgumentParser:
    """The parser; with ``suppress_defaults`` only the flags actually given appear in the result."""
    parser = argparse.ArgumentParser(
        prog="main.py",
        description="Train, fine-tune or validate CDVD-TSP video deblurring (python code/main.py ...).",
        argument_default=argparse.SUPPRESS if suppress_defaults else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )

    def add(group: argparse._ActionsContainer, *flags: str, **kwargs: Any) -> None:
        if suppress_defaults:
            kwargs.pop("default", None)
        group.add_argument(*flags, **kwargs)

    add(
        parser,
        "--template",
        default=DEFAULT_TEMPLATE,
        choices=sorted(TEMPLATES),
        help="named recipe (option/template.py) whose values replace the defaults below; flags given here win",
    )

    hardware = parser.add_argument_group("hardware")
    add(hardware, "--n_threads", type=int, default=4, help="data-loading worker processes (0: load in the main one)")
    add(hardware, "--cpu", action="store_true", help="use the CPU only (without it, training needs CUDA)")
    add(hardware, "--n_GPUs", type=int, default=1, help="GPUs for DataParallel in one process (use torchrun for DDP)")
    add(hardware, "--seed", type=int, default=1, help="random seed (weights, crops, flips, batch order, HEM)")
    add(
        hardware,
        "--deterministic",
        action="store_true",
        help="deterministic algorithms: bit-identical reruns and resumes on the CPU; on CUDA as far as kernels allow",
    )
    add(
        hardware,
        "--amp",
        default="off",
        choices=AMP_MODES,
        help="mixed precision on CUDA: bf16 autocast, or fp16 autocast with loss scaling",
    )
    add(
        hardware,
        "--grad_checkpoint",
        action="store_true",
        help="recompute each stage step in the backward pass: less memory for more compute",
    )

    data = parser.add_argument_group("data")
    add(data, "--dir_data", default=None, help="training set folder (default: dataset/<data_train>/train)")
    add(data, "--dir_data_test", default=None, help="validation set folder (default: dataset/<data_test>/test)")
    add(data, "--data_train", default="DVD", help="training set name (used for the default folder and the logs)")
    add(data, "--data_test", default="DVD", help="validation set name (default folder, logs, result/<name>/)")
    add(data, "--process", action="store_true", help="load every frame into RAM once before training")
    add(data, "--patch_size", type=int, default=256, help="side of the random square crop for training")
    add(data, "--size_must_mode", type=int, default=1, help="crop frames down to multiples of this number")
    add(data, "--rgb_range", type=int, default=1, help="maximum pixel value of the tensors (1: range [0, 1])")
    add(data, "--n_colors", type=int, default=3, help="colour channels (the model takes RGB: 3)")
    add(data, "--no_augment", action="store_true", help="no random flips and rotation")
    add(data, "--n_frames_per_video", type=int, default=100, help="training uses the first N frames of each video")

    model = parser.add_argument_group("model")
    add(model, "--model", default=NO_VALUE, help=f"model name ({', '.join(MODELS)})")
    add(model, "--pre_train", default=NO_VALUE, help="checkpoint to start from (loaded strictly), '.' for none")
    add(model, "--n_stages", type=int, default=2, help="cascade stages T; each sample is 2T+1 frames")
    add(model, "--n_feat", type=int, default=32, help="feature channels of the restoration net")
    add(model, "--n_resblock", type=int, default=3, help="residual blocks per group in the restoration net")
    add(
        model,
        "--no_flow_pretrain",
        action="store_true",
        help="start PWC-Net from random weights instead of <pretrain_models_dir>/network-default.pytorch",
    )

    training = parser.add_argument_group("training")
    add(training, "--test_every", type=int, default=1000, help="batches per epoch (the release's repeat rule)")
    add(training, "--epochs", type=int, default=500, help="epochs to train (0: no limit)")
    add(training, "--batch_size", type=int, default=8, help="samples per step, over all processes together")
    add(training, "--test_only", action="store_true", help="validate once and stop (no training)")

    optimisation = parser.add_argument_group("optimisation")
    add(optimisation, "--loss", default="1*L1", help="weighted terms joined by '+', e.g. '1*L1+2*HEM' (L1, MSE, HEM)")
    add(optimisation, "--lr", type=float, default=1e-4, help="learning rate of the restoration net")
    add(
        optimisation,
        "--flow_lr",
        type=float,
        default=1e-6,
        help="learning rate of the flow net (PWC-Net); 0 freezes it (no gradients for its weights, faster steps)",
    )
    add(optimisation, "--lr_decay", type=int, default=200, help="multiply the learning rates by gamma every N epochs")
    add(optimisation, "--gamma", type=float, default=0.5, help="learning rate decay factor")
    add(optimisation, "--beta1", type=float, default=0.9, help="Adam beta1")
    add(optimisation, "--beta2", type=float, default=0.999, help="Adam beta2")
    add(optimisation, "--epsilon", type=float, default=1e-8, help="Adam epsilon")
    add(optimisation, "--weight_decay", type=float, default=0.0, help="weight decay")
    add(
        optimisation,
        "--mid_loss_weight",
        type=float,
        default=1.0,
        help="weight of a model's internal loss; CDVD_TSP has none, so it has no effect (kept from the release)",
    )

    logging_group = parser.add_argument_group("logging")
    add(logging_group, "--experiment_dir", default="experiment", help="folder of the experiment folders")
    add(logging_group, "--pretrain_models_dir", default="pretrain_models", help="folder of network-default.pytorch")
    add(
        logging_group,
        "--save",
        default="CDVD_TSP_Video_Deblur",
        help="experiment name: results go to <experiment_dir>/<save>/ ('.': a time stamp); an existing run is "
        "never overwritten, continue it with --resume",
    )
    add(logging_group, "--save_middle_models", action="store_true", help="also keep model/model_<epoch>.pt")
    add(logging_group, "--load", default=NO_VALUE, help="experiment to continue: the same as --save NAME --resume")
    add(logging_group, "--resume", action="store_true", help="continue the run in <save> from its last complete epoch")
    add(logging_group, "--print_every", type=int, default=100, help="batches between the log lines of an epoch")
    add(logging_group, "--save_images", action="store_true", help="write the validation images to result/")
    return parser


def explicit_options(argv: Sequence[str]) -> set[str]:
    """Names of the options given on the command line."""
    return set(vars(build_parser(suppress_defaults=True).parse_args(argv)))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse, apply the template under the flags given, check every value, and add the derived values."""
    argv = sys.argv[1:] if argv is None else list(argv)
    template_only = argparse.ArgumentParser(add_help=False)
    template_only.add_argument("--template", default=DEFAULT_TEMPLATE, choices=sorted(TEMPLATES))
    chosen, _ = template_only.parse_known_args(argv)
    parser = build_parser()
    parser.set_defaults(**template_defaults(chosen.template))
    args = parser.parse_args(argv)
    args.explicit = sorted(explicit_options(argv))
    check_options(args)
    if args.load != NO_VALUE:
        args.save, args.resume = args.load, True
    if args.save == NO_VALUE:
        args.save = datetime.now().strftime("%Y%m%d_%H%M%S")
    derive(args)
    return args


def derive(args: argparse.Namespace) -> None:
    """Add the values that follow from the options: ``n_sequence`` and absolute paths.

    Paths given on the command line are relative to the working directory; the defaults are relative to the
    repository, so that ``python code/main.py`` and ``cd code && python main.py`` find the same folders.
    """
    args.n_sequence = 2 * args.n_stages + 1
    args.train_dir = _resolve(args, "dir_data", Path("dataset") / args.data_train / "train")
    args.test_dir = _resolve(args, "dir_data_test", Path("dataset") / args.data_test / "test")
    # absolute, so that a run resumed from another working directory finds its data
    args.dir_data = str(args.train_dir) if args.dir_data else None
    args.dir_data_test = str(args.test_dir) if args.dir_data_test else None
    args.experiment_root = _resolve(args, "experiment_dir") / args.save
    args.pretrain_dir = _resolve(args, "pretrain_models_dir")
    args.pre_train_path = None if args.pre_train == NO_VALUE else Path(args.pre_train).expanduser().absolute()


def _resolve(args: argparse.Namespace, name: str, fallback: Path | None = None) -> Path:
    value = getattr(args, name) or fallback
    if name in args.explicit and getattr(args, name):
        return Path(value).expanduser().absolute()
    return from_repo(value)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


def check_options(args: argparse.Namespace) -> None:
    """One-line `UserError` for the first option whose value cannot work."""
    _require(args.model.upper() in MODELS, f"--model {args.model}: unknown model (known: {', '.join(MODELS)})")
    args.model = args.model.upper()
    _require(args.n_stages >= 1, f"--n_stages {args.n_stages}: needs at least one stage")
    _require(args.n_feat >= 1 and args.n_resblock >= 1, "--n_feat and --n_resblock must be at least 1")
    _require(args.n_colors == 3, f"--n_colors {args.n_colors}: CDVD-TSP works on RGB frames, so it must be 3")
    _require(args.rgb_range > 0, f"--rgb_range {args.rgb_range}: must be positive")
    _require(args.size_must_mode >= 1, f"--size_must_mode {args.size_must_mode}: must be at least 1")
    _require(
        args.patch_size >= args.size_must_mode,
        f"--patch_size {args.patch_size}: must be at least --size_must_mode ({args.size_must_mode})",
    )
    n_sequence = 2 * args.n_stages + 1
    _require(
        args.n_frames_per_video >= n_sequence,
        f"--n_frames_per_video {args.n_frames_per_video}: shorter than one window of {n_sequence} frames",
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
    _require(not (args.cpu and args.amp != "off"), f"--amp {args.amp}: mixed precision needs CUDA; drop --cpu or --amp")
    _require(not (args.test_only and args.resume), "--test_only and --resume exclude each other")
    _require(not (args.test_only and args.load != NO_VALUE), "--test_only and --load exclude each other")
    _require(args.save != "" and "/" not in args.save, f"--save {args.save!r}: must be a folder name, not a path")
    parse_loss_spec(args.loss)


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of the run (saved with every checkpoint, restored by --resume): all but `CONTROL_OPTIONS`."""
    names = set(vars(build_parser().parse_args([])))
    return {name: getattr(args, name) for name in sorted(names - CONTROL_OPTIONS)}


def apply_saved_options(args: argparse.Namespace, saved: dict[str, Any]) -> list[str]:
    """For --resume: take the run's options from the checkpoint, except adjustable ones given on the command line;
    another value given for any other option is an error.

    Returns the names of the options whose values came from the checkpoint and differ from this command's.
    """
    explicit = set(args.explicit)
    restored = []
    for name, value in saved.items():
        current = getattr(args, name, None)
        if current == value or (name in explicit and name in ADJUSTABLE_OPTIONS):
            continue
        if name in explicit:
            raise UserError(
                f"--resume: --{name} {current} differs from the run being resumed ({value}); "
                "start a new run (another --save) to change it"
            )
        setattr(args, name, value)
        restored.append(name)
    derive(args)
    return restored
