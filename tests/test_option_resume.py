"""--resume's rules, option by option (docs/training.md, "Resume exactly"): what a run saves of its options, which
ones a resumed run takes from the run whatever the command says (those that define the run: another value is
refused), and which ones it may change (hardware, data location, logging, the epoch budget: taken from the command
when given, else from the run). The lists are written out here, from the docs, not taken from option/resume.py."""

from pathlib import Path
from typing import Any

import pytest

from cdvd_tsp.option import apply_saved_options, parse_args, run_options
from cdvd_tsp.utils.errors import UserError

NEVER_SAVED = {
    *("save", "load", "resume", "test_only", "experiment_dir", "pretrain_models_dir", "no_flow_pretrain", "pre_train")
}
"""About one start only: where the run lives, what to do, where its weights start from."""

ADJUSTABLE = {
    # option: (the run's flags, the resumed command's flags, the value the resumed run then has)
    "n_threads": (["--n_threads", "2"], ["--n_threads", "7"], 7),
    "cpu": ([], ["--cpu"], True),
    "n_GPUs": ([], ["--n_GPUs", "2"], 2),
    "amp": ([], ["--amp", "bf16"], "bf16"),
    "channels_last": (["--channels_last", "flow"], ["--channels_last", "all"], "all"),
    "optimizer_impl": (["--optimizer_impl", "for"], ["--optimizer_impl", "foreach"], "foreach"),
    "compile": ([], ["--compile"], True),
    "grad_checkpoint": ([], ["--grad_checkpoint"], True),
    "deterministic": ([], ["--deterministic"], True),
    "process": ([], ["--process"], True),
    "dir_data": (["--dir_data", "old_train"], ["--dir_data", "new_train"], "new_train"),
    "dir_data_test": (["--dir_data_test", "old_test"], ["--dir_data_test", "new_test"], "new_test"),
    "print_every": (["--print_every", "5"], ["--print_every", "3"], 3),
    "tensorboard": ([], ["--tensorboard"], True),
    "save_images": ([], ["--save_images"], True),
    "save_middle_models": ([], ["--save_middle_models"], True),
    "epochs": (["--epochs", "3"], ["--epochs", "900"], 900),
}

DEFINING: dict[str, tuple[list[str], list[str]]] = {
    # option: (the run's flags, the resumed command's flags giving another value)
    "template": ([], ["--template", "DEMO"]),
    "seed": (["--seed", "5"], ["--seed", "6"]),
    "data_train": (["--data_train", "GOPRO"], ["--data_train", "DVD"]),
    "data_test": (["--data_test", "GOPRO"], ["--data_test", "DVD"]),
    "patch_size": (["--patch_size", "64"], ["--patch_size", "32"]),
    "size_must_mode": (["--size_must_mode", "8"], ["--size_must_mode", "4"]),
    "rgb_range": (["--rgb_range", "255"], ["--rgb_range", "1"]),
    "n_colors": ([], ["--n_colors", "3"]),  # the run is given another value below (3 is the only one accepted now)
    "no_augment": ([], ["--no_augment"]),
    "n_frames_per_video": (["--n_frames_per_video", "50"], ["--n_frames_per_video", "60"]),
    "model": ([], ["--model", "CDVD_TSP"]),  # likewise
    "n_stages": (["--n_stages", "3"], ["--n_stages", "1"]),
    "n_feat": (["--n_feat", "8"], ["--n_feat", "16"]),
    "n_resblock": (["--n_resblock", "1"], ["--n_resblock", "2"]),
    "test_every": (["--test_every", "10"], ["--test_every", "20"]),
    "batch_size": (["--batch_size", "4"], ["--batch_size", "2"]),
    "loss": (["--loss", "1*L1"], ["--loss", "1*L1+2*HEM"]),
    "lr": (["--lr", "2e-4"], ["--lr", "1e-3"]),
    "flow_lr": (["--flow_lr", "0"], ["--flow_lr", "1e-5"]),
    "lr_decay": (["--lr_decay", "10"], ["--lr_decay", "20"]),
    "gamma": (["--gamma", "0.1"], ["--gamma", "0.2"]),
    "beta1": (["--beta1", "0.8"], ["--beta1", "0.7"]),
    "beta2": (["--beta2", "0.99"], ["--beta2", "0.98"]),
    "epsilon": (["--epsilon", "1e-6"], ["--epsilon", "1e-7"]),
    "weight_decay": (["--weight_decay", "1e-4"], ["--weight_decay", "1e-3"]),
    "mid_loss_weight": (["--mid_loss_weight", "0.5"], ["--mid_loss_weight", "0.25"]),
}
STORED_OTHERWISE = {"n_colors": 4, "model": "CDVD_TSP_v0"}
"""Options the parser accepts one value of: the run is given as saved by a version that took another."""


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the data folders given are relative to the working directory


def saved_run(flags: list[str]) -> dict[str, Any]:
    return run_options(parse_args([*flags, "--save", "run"]))


def resumed(saved: dict[str, Any], flags: list[str]) -> tuple[Any, list[str]]:
    args = parse_args(["--save", "run", "--resume", *flags])
    return args, apply_saved_options(args, saved)


def test_a_run_saves_every_option_but_those_of_one_start() -> None:
    saved = saved_run([])
    every = set(vars(parse_args([]))) - {"explicit", "n_sequence", "train_dir", "test_dir", "run_dir"}
    every -= {"pretrain_dir", "pre_train_path"}  # derived, computed again from the options
    assert set(saved) == every - NEVER_SAVED
    assert set(saved) == set(ADJUSTABLE) | set(DEFINING)  # each saved option is one kind or the other


def test_a_run_resumed_from_another_folder_of_runs_or_weights_is_the_same_run(tmp_path: Path) -> None:
    saved = saved_run(["--experiment_dir", "runs", "--pretrain_models_dir", "weights", "--no_flow_pretrain"])
    moved = ["--experiment_dir", "moved", "--pretrain_models_dir", "elsewhere", "--pre_train", "model.pt"]
    args, restored = resumed(saved, moved)
    assert restored == []
    assert args.run_dir == tmp_path / "moved" / "run" and args.pretrain_dir == tmp_path / "elsewhere"
    assert not args.no_flow_pretrain and args.pre_train_path == tmp_path / "model.pt"


@pytest.mark.parametrize("name", sorted(ADJUSTABLE))
def test_an_adjustable_option_is_the_commands_when_given_else_the_runs(name: str, tmp_path: Path) -> None:
    run_flags, new_flags, new_value = ADJUSTABLE[name]
    saved = saved_run(run_flags)
    args, restored = resumed(saved, new_flags)
    assert name not in restored
    if name.startswith("dir_data"):
        folder = {"dir_data": "train_dir", "dir_data_test": "test_dir"}[name]
        assert getattr(args, folder) == tmp_path / new_value
    else:
        assert getattr(args, name) == new_value
    # not given: the run's value (a flag's True too)
    run_value = saved_run(run_flags or new_flags)[name]
    args, restored = resumed(saved_run(run_flags or new_flags), [])
    assert getattr(args, name) == run_value
    assert name in restored


@pytest.mark.parametrize("name", sorted(DEFINING))
def test_an_option_that_defines_the_run_comes_from_the_run_and_another_value_is_refused(name: str) -> None:
    run_flags, other_flags = DEFINING[name]
    saved = saved_run(run_flags)
    if name in STORED_OTHERWISE:
        saved[name] = STORED_OTHERWISE[name]
    with pytest.raises(UserError, match=rf"^--resume: --{name} \S+ differs from the run being resumed \("):
        resumed(saved, other_flags)
    args, restored = resumed(saved, [])
    assert getattr(args, name) == saved[name]
    assert (name in restored) == (saved[name] != getattr(parse_args([]), name))


def test_a_resumed_run_takes_every_defining_option_at_once_and_derives_from_them(tmp_path: Path) -> None:
    run_flags = [flag for name in sorted(DEFINING) if name != "template" for flag in DEFINING[name][0]]
    saved = saved_run([*run_flags, "--dir_data", "train"])
    args, restored = resumed(saved, ["--epochs", "7"])
    for name in DEFINING:
        assert getattr(args, name) == saved[name], name
    assert args.n_sequence == 7  # --n_stages 3 of the run
    assert args.train_dir == tmp_path / "train" and args.epochs == 7
    defaults = parse_args([])
    assert sorted(restored) == sorted(name for name in saved if saved[name] != getattr(defaults, name))
    assert "epochs" not in restored


def test_the_same_value_given_again_is_accepted_for_every_option() -> None:
    """torchrun's restarts repeat the first start's command: no option is refused or reported as restored."""
    run_flags = [flag for name in sorted(DEFINING) if name != "template" for flag in DEFINING[name][0]]
    run_flags += [flag for name in sorted(ADJUSTABLE) for flag in ADJUSTABLE[name][0]]
    saved = saved_run(run_flags)
    args, restored = resumed(saved, run_flags)
    assert restored == []
    assert (args.n_stages, args.lr, args.epochs, args.print_every) == (3, 2e-4, 3, 5)
