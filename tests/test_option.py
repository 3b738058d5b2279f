"""Options: the release's flags, templates as defaults under the flags given, checks, and resume rules."""

import copy
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cdvd_tsp import main as train_main
from cdvd_tsp.option import (
    DERIVED,
    apply_saved_options,
    build_parser,
    check_options,
    derive,
    option_warnings,
    parse_args,
    read_options,
    run_options,
)
from cdvd_tsp.option.template import TEMPLATES
from cdvd_tsp.utils.errors import UserError
from cdvd_tsp.utils.paths import REPO_ROOT

RELEASE_FLAGS = [
    "--n_threads",
    "--cpu",
    "--n_GPUs",
    "--seed",
    "--dir_data",
    "--dir_data_test",
    "--data_train",
    "--data_test",
    "--process",
    "--patch_size",
    "--size_must_mode",
    "--rgb_range",
    "--n_colors",
    "--no_augment",
    "--model",
    "--pre_train",
    "--test_every",
    "--epochs",
    "--batch_size",
    "--test_only",
    "--loss",
    "--lr",
    "--lr_decay",
    "--gamma",
    "--beta1",
    "--beta2",
    "--epsilon",
    "--weight_decay",
    "--mid_loss_weight",
    "--experiment_dir",
    "--pretrain_models_dir",
    "--save",
    "--save_middle_models",
    "--load",
    "--resume",
    "--print_every",
    "--save_images",
    "--template",
]
NEW_FLAGS = ["--n_stages", "--no_flow_pretrain", "--amp", "--grad_checkpoint", "--deterministic"]


def test_every_flag_is_documented_in_help() -> None:
    parser = build_parser()
    documented = {option for action in parser._actions for option in action.option_strings if action.help}
    assert set(RELEASE_FLAGS + NEW_FLAGS) <= documented
    assert all(action.help for action in parser._actions)


def test_released_template_and_flags_given_win() -> None:
    args = parse_args([])
    assert (args.model, args.n_stages, args.n_sequence, args.n_frames_per_video) == ("CDVD_TSP", 2, 5, 100)
    assert (args.n_feat, args.n_resblock, args.size_must_mode, args.loss) == (32, 3, 4, "1*L1+2*HEM")
    assert (args.lr, args.lr_decay, args.gamma, args.epochs, args.batch_size, args.patch_size) == (
        1e-4,
        200,
        0.5,
        500,
        8,
        256,
    )
    assert args.flow_lr == 1e-6
    assert args.train_dir == REPO_ROOT / "dataset" / "DVD" / "train"
    assert args.test_dir == REPO_ROOT / "dataset" / "DVD" / "test"
    assert args.run_dir == REPO_ROOT / "experiment" / "CDVD_TSP_Video_Deblur"
    # unlike the release, whose template overwrote the command line, a flag given beats the template
    given = parse_args(["--lr", "3e-4", "--n_stages", "3", "--data_train", "GOPRO"])
    assert (given.lr, given.n_sequence, given.train_dir.parts[-2]) == (3e-4, 7, "GOPRO")


def test_the_short_demo_is_the_demo_made_short() -> None:
    """DEMO_SHORT: DEMO's recipe and data with one stage, one window per training clip and two epochs, so that an
    epoch is 48 steps (the demo's 192 training clips in batches of 4), not 480."""
    from cdvd_tsp.data.demo import SPLITS
    from cdvd_tsp.data.videodata import repeat_count

    args, demo = parse_args(["--template", "DEMO_SHORT"]), parse_args(["--template", "DEMO"])
    assert (args.n_stages, args.n_sequence, args.n_frames_per_video, args.epochs) == (1, 3, 3, 2)
    assert args.run_dir == REPO_ROOT / "experiment" / "CDVD_TSP_DEMO_SHORT"
    different = {name for name in vars(args) if getattr(args, name) != getattr(demo, name)}
    assert different == {"template", "n_stages", "n_sequence", "n_frames_per_video", "epochs", "save", "run_dir"}
    train = SPLITS["train"]
    windows = len(train.photos) * train.videos_per_photo * (args.n_frames_per_video - args.n_sequence + 1)
    assert repeat_count(windows, args.batch_size, args.test_every) == 1 and windows // args.batch_size == 48


def test_template_keys_are_options() -> None:
    destinations = {action.dest for action in build_parser()._actions}
    for name, values in TEMPLATES.items():
        assert set(values) <= destinations, f"template {name} sets unknown options"


def test_given_paths_are_relative_to_the_working_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = parse_args(["--dir_data", "train", "--experiment_dir", "runs", "--save", "x", "--pre_train", "w.pt"])
    assert args.train_dir == tmp_path / "train"
    assert args.run_dir == tmp_path / "runs" / "x"
    assert args.pre_train_path == tmp_path / "w.pt"


def test_load_continues_the_named_experiment() -> None:
    args = parse_args(["--load", "old_run"])
    assert (args.save, args.resume) == ("old_run", True)
    with pytest.raises(UserError, match=re.escape("--test_only and --load exclude each other")):
        parse_args(["--load", "old_run", "--test_only"])


def test_derived_values_are_added_and_the_flags_kept_as_given(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = read_options(["--dir_data", "train", "--n_stages", "3", "--experiment_dir", "runs", "--save", "x"])
    given = copy.deepcopy(vars(args))
    derive(args)
    assert {name: value for name, value in vars(args).items() if name not in DERIVED} == given
    assert (args.n_sequence, args.train_dir, args.run_dir) == (7, tmp_path / "train", tmp_path / "runs" / "x")
    assert args.dir_data == "train"  # the flag keeps what was given; train_dir is the folder
    before = copy.deepcopy(vars(args))
    check_options(args)
    assert vars(args) == before  # checks never change the options


def test_model_is_checked_in_any_case_and_never_rewritten() -> None:
    args = parse_args(["--model", "cdvd_tsp"])  # the release imported model.<name.lower()>
    assert args.model == "cdvd_tsp"
    assert parse_args([]).model == "CDVD_TSP"


def test_mid_loss_weight_other_than_the_default_draws_one_warning() -> None:
    assert option_warnings(parse_args([])) == []
    assert option_warnings(parse_args(["--mid_loss_weight", "1"])) == []
    assert option_warnings(parse_args(["--mid_loss_weight", "0.5"])) == [
        "--mid_loss_weight 0.5: has no effect, CDVD_TSP has no internal loss (nor had the release's)"
    ]


def test_main_shows_the_warning_in_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch) -> None:
    def stop(*_: object) -> int:
        raise SystemExit(0)

    monkeypatch.setattr(train_main, "run", stop)  # everything after the options and the runtime
    monkeypatch.setattr(train_main, "configure_logging", lambda is_main: None)
    with caplog.at_level(logging.WARNING), pytest.raises(SystemExit):
        train_main.main(["--cpu", "--mid_loss_weight", "2", "--experiment_dir", str(tmp_path)])
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == [
        "warning: --mid_loss_weight 2.0: has no effect, CDVD_TSP has no internal loss (nor had the release's)"
    ]


def test_save_images_is_off_by_default_unlike_the_release() -> None:
    """An intended difference (docs/faithfulness.md §11.5): the release always wrote the images."""
    assert parse_args([]).save_images is False
    assert parse_args(["--save_images"]).save_images is True
    assert all(template.get("save_images") is not True for template in TEMPLATES.values())


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--n_colors", "1"], "--n_colors 1"),
        (["--cpu", "--amp", "fp16"], "--amp fp16: mixed precision needs CUDA"),
        (["--loss", "1*L1+2*SSIM"], "unknown loss 'SSIM'"),
        (["--model", "EDVR"], "--model EDVR: unknown model"),
        (["--n_stages", "0"], "--n_stages 0"),
        (["--batch_size", "0"], "--batch_size 0"),
        (["--n_frames_per_video", "4"], "shorter than one window of 5 frames"),
        (["--test_only", "--resume"], "exclude each other"),
        (["--save", ".", "--resume"], "--resume needs the run's name (--save NAME or --load NAME), not '.'"),
        (["--save", "a/b"], "must be a folder name"),
        (["--beta1", "1"], "--beta1 1.0"),
        (["--flow_lr=-1e-6"], "--flow_lr -1e-06: must be 0 (frozen flow net) or more"),
        (["--lr", "0"], "--lr 0.0: must be positive"),
    ],
)
def test_bad_values_are_named(flags: list[str], message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        parse_args(flags)


def test_resume_takes_the_run_options_and_refuses_a_changed_one(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    saved = run_options(parse_args(["--patch_size", "64", "--lr", "2e-4", "--epochs", "3", "--dir_data", "d"]))
    assert "save" not in saved and "resume" not in saved and saved["dir_data"] == str(tmp_path / "d")
    monkeypatch.chdir(REPO_ROOT)
    resumed = parse_args(["--resume"])
    restored = apply_saved_options(resumed, saved)
    assert (resumed.patch_size, resumed.lr, resumed.epochs, resumed.train_dir) == (64, 2e-4, 3, tmp_path / "d")
    assert sorted(restored) == ["dir_data", "epochs", "lr", "patch_size"]
    longer = parse_args(["--resume", "--epochs", "9", "--n_threads", "1"])  # adjustable options may change
    apply_saved_options(longer, saved)
    assert (longer.epochs, longer.n_threads, longer.lr) == (9, 1, 2e-4)
    with pytest.raises(UserError, match=re.escape("--lr 0.001 differs from the run being resumed")):
        apply_saved_options(parse_args(["--resume", "--lr", "1e-3"]), saved)


def test_resume_accepts_the_whole_command_that_started_the_run(tmp_path) -> None:
    """torchrun's restarts repeat the first start's command line, --resume included: every option it gives has the
    value the run saved, so none is refused and none is reported as taken from the run."""
    command = ["--patch_size", "64", "--lr", "2e-4", "--dir_data", str(tmp_path / "d"), "--save", "run", "--resume"]
    saved = run_options(parse_args(command))
    restart = parse_args(command)
    assert apply_saved_options(restart, saved) == []
    assert (restart.patch_size, restart.lr, restart.train_dir) == (64, 2e-4, tmp_path / "d")


def test_cli_reports_a_bad_option_in_one_line_from_the_code_folder() -> None:
    result = subprocess.run(
        [sys.executable, "main.py", "--cpu", "--amp", "fp16"],
        cwd=REPO_ROOT / "code",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: --amp fp16: mixed precision needs CUDA; drop --cpu or --amp"]
