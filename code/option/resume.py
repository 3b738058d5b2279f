"""--resume's rules: which options a run saves with its checkpoints, and how a resumed start takes them back."""

import argparse
from typing import Any

from cdvd_tsp.option.derive import derive
from cdvd_tsp.option.parser import build_parser
from cdvd_tsp.utils.errors import UserError

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
        "channels_last",
        "optimizer_impl",
        "compile",
        "grad_checkpoint",
        "deterministic",
        "process",
        "dir_data",
        "dir_data_test",
        "print_every",
        "tensorboard",
        "save_images",
        "save_middle_models",
        "epochs",
    }
)
"""Options of a run that a resumed run may change (hardware, data location, logging, the epoch budget): a resumed
run takes them from its checkpoint unless they are given. Every other saved option defines the run: a resumed run
takes it from its checkpoint and refuses another value, so that it continues exactly the run that was stopped."""


SAVED_RESOLVED = {"dir_data": "train_dir", "dir_data_test": "test_dir"}
"""Folder options saved as the absolute folder they lead to (`option.derive`), so that a run resumed from another
working directory finds its data."""


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of the run (saved with every checkpoint, restored by --resume): all but `CONTROL_OPTIONS`."""
    names = set(vars(build_parser().parse_args([])))
    options = {name: getattr(args, name) for name in sorted(names - CONTROL_OPTIONS)}
    for name, folder in SAVED_RESOLVED.items():
        if options[name]:
            options[name] = str(getattr(args, folder))
    return options


def apply_saved_options(args: argparse.Namespace, saved: dict[str, Any]) -> list[str]:
    """For --resume: take the run's options from the checkpoint, except adjustable ones given on the command line;
    another value given for any other option is an error.

    The derived values (`option.derive`) are then computed again from the run's options. Returns the names of the
    options whose values came from the checkpoint and differ from this command's.
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
