"""The parser of `main.py`'s command line: the release's flags with their meanings, plus this project's additions.

A template (`option.template`) supplies defaults; flags given on the command line override them. `read_options`
returns the options as given (no derived values, nothing checked), with the release's aliases applied.
"""

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cdvd_tsp.option.template import DEFAULT_TEMPLATE, TEMPLATES, template_defaults
from cdvd_tsp.utils.cli import CommandParser
from cdvd_tsp.utils.errors import UserError

MODELS = ("CDVD_TSP",)
AMP_MODES = ("off", "bf16", "fp16")
CHANNELS_LAST_MODES = ("off", "restoration", "flow", "all")
"""--channels_last: the nets of the training step that run in channels_last (NHWC) layout (`StepOptions`)."""
OPTIMIZER_IMPLEMENTATIONS = ("default", "for", "foreach", "fused")
"""--optimizer_impl: how Adam updates the weights; ``default`` is PyTorch's own choice (the release's), the others
force its per-tensor loop, its multi-tensor (foreach) kernels or its fused kernel."""
NO_VALUE = "."
"""The release's way to say 'none' for --pre_train, --load and --save."""
MID_LOSS_WEIGHT = 1.0
"""--mid_loss_weight's default: the release's, and the only value that does not draw a warning."""


def build_parser(suppress_defaults: bool = False) -> argparse.ArgumentParser:
    """The parser; with ``suppress_defaults`` only the flags actually given appear in the result."""
    parser = CommandParser(
        usage="%(prog)s [--template NAME] [--save NAME] [--resume] [options]",
        description="Train, fine-tune or validate CDVD-TSP video deblurring (python code/main.py ...).",
        argument_default=argparse.SUPPRESS if suppress_defaults else None,
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
        help="mixed precision: bf16 autocast (CUDA, or a CPU with native bfloat16), or fp16 autocast with loss "
        "scaling (CUDA); PWC-Net stays in float32 under bf16",
    )
    add(
        hardware,
        "--channels_last",
        default="off",
        choices=CHANNELS_LAST_MODES,
        help="run the restoration net, the flow net (PWC-Net, its cost volumes, the warps) or both in channels_last "
        "(NHWC) layout; the same results up to float rounding",
    )
    add(
        hardware,
        "--optimizer_impl",
        default="default",
        choices=OPTIMIZER_IMPLEMENTATIONS,
        help="Adam's implementation: PyTorch's default choice, its per-tensor loop (for), its multi-tensor kernels "
        "(foreach) or its fused kernel (fused); the same update up to float rounding",
    )
    add(
        hardware,
        "--compile",
        action="store_true",
        help="torch.compile the model's forward pass in training (the first steps compile; each new input shape "
        "compiles again)",
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
    add(model, "--model", default=MODELS[0], help=f"model name, any case ({', '.join(MODELS)}: the only one)")
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
        default=MID_LOSS_WEIGHT,
        help="weight of a model's internal loss, kept from the release; CDVD_TSP has none, so another value only "
        "draws a warning",
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
    add(
        logging_group,
        "--resume",
        action="store_true",
        help="continue the run in <save> from its last commit (an epoch, or the step where a signal stopped it); "
        "where the folder holds no run yet, start it: one command line for the first start and every restart",
    )
    add(logging_group, "--print_every", type=int, default=100, help="batches between the log lines of an epoch")
    add(
        logging_group,
        "--tensorboard",
        action="store_true",
        help="also write TensorBoard event files to <experiment_dir>/<save>/tensorboard/ (the loss terms, learning "
        "rates and step time of every step; each validation's PSNRs and a few of its images)",
    )
    add(
        logging_group,
        "--save_images",
        action="store_true",
        help="write every validation window's images to result/ (off unlike the release, where they were always "
        "written: four PNGs per window every epoch)",
    )
    return parser


def explicit_options(argv: Sequence[str]) -> set[str]:
    """Names of the options given on the command line."""
    return set(vars(build_parser(suppress_defaults=True).parse_args(argv)))


def read_options(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options: the template's values under the flags given (``argv``, default ``sys.argv[1:]``).

    Adds ``explicit`` (the names given on the command line) and applies the release's two aliases: ``--load NAME``
    is ``--save NAME --resume``, and ``--save .`` names the run by the time it starts.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    template_only = argparse.ArgumentParser(add_help=False)
    template_only.add_argument("--template", default=DEFAULT_TEMPLATE, choices=sorted(TEMPLATES))
    chosen, _ = template_only.parse_known_args(argv)
    parser = build_parser()
    parser.set_defaults(**template_defaults(chosen.template))
    args = parser.parse_args(argv)
    args.explicit = sorted(explicit_options(argv))
    if args.load != NO_VALUE:
        args.save, args.resume = args.load, True
    if args.save == NO_VALUE:
        if args.resume:
            raise UserError("--resume needs the run's name (--save NAME or --load NAME), not '.' (a new time stamp)")
        args.save = datetime.now().strftime("%Y%m%d_%H%M%S")
    return args
