"""The values that follow from the options, each computed here and only here.

One name per thing: the flags keep the release's names and hold what was given (never rewritten); the folders and
files they lead to are added under these names:

- ``n_sequence``: frames in a window, ``2 * n_stages + 1``;
- ``train_dir``, ``test_dir``: the training and validation sets (--dir_data and --dir_data_test, or
  ``dataset/<data_train>/train`` and ``dataset/<data_test>/test``);
- ``run_dir``: the run's folder, ``<experiment_dir>/<save>`` (--experiment_dir is the folder of all runs, --save
  the run's name);
- ``pretrain_dir``: --pretrain_models_dir, where ``network-default.pytorch`` is;
- ``pre_train_path``: the --pre_train file, or None.
"""

import argparse
from pathlib import Path

from cdvd_tsp.option.parser import NO_VALUE
from cdvd_tsp.utils.paths import from_repo

DERIVED = ("n_sequence", "train_dir", "test_dir", "run_dir", "pretrain_dir", "pre_train_path")


def derive(args: argparse.Namespace) -> None:
    """Set the `DERIVED` values on ``args`` from its options (which it leaves as they are).

    Paths given on the command line are relative to the working directory; the defaults are relative to the
    repository, so that ``python code/main.py`` and ``cd code && python main.py`` find the same folders.
    """
    args.n_sequence = 2 * args.n_stages + 1
    args.train_dir = _folder(args, "dir_data", Path("dataset") / args.data_train / "train")
    args.test_dir = _folder(args, "dir_data_test", Path("dataset") / args.data_test / "test")
    args.run_dir = _folder(args, "experiment_dir") / args.save
    args.pretrain_dir = _folder(args, "pretrain_models_dir")
    args.pre_train_path = None if args.pre_train == NO_VALUE else Path(args.pre_train).expanduser().absolute()


def _folder(args: argparse.Namespace, name: str, fallback: Path | None = None) -> Path:
    """Option ``name`` as an absolute path: given ones from the working directory, others from the repository."""
    value = getattr(args, name) or fallback
    if name in args.explicit and getattr(args, name):
        return Path(value).expanduser().absolute()
    return from_repo(value)
