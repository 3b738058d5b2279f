"""The commands' parser: one-line errors with the nearest option suggested, and help grouped with every default."""

import argparse

import pytest

from cdvd_tsp.infer.options import build_parser as inference_parser
from cdvd_tsp.option.parser import build_parser as training_parser
from cdvd_tsp.utils.cli import CommandParser

GROUPS = ("what to read", "what to write", "the model", "evaluation protocol", "device and speed", "distributed")


def error_line(parser: argparse.ArgumentParser, argv: list[str], capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(argv)
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


@pytest.mark.parametrize(
    "parser, typo, meant",
    [
        (inference_parser, "--otput", "--output"),
        (inference_parser, "--inptu=clip.mp4", "--input"),
        (inference_parser, "--modelpath", "--model_path"),
        (training_parser, "--epoch_s", "--epochs"),
        (training_parser, "--tensorbord", "--tensorboard"),
    ],
)
def test_a_typo_gets_one_line_naming_the_nearest_option(parser, typo, meant, capsys) -> None:
    line = error_line(parser(), [typo, "x"], capsys)
    assert line.startswith(f"error: unknown argument {typo} (did you mean {meant}?)")
    assert "--help" in line


def test_an_option_far_from_every_known_one_gets_no_guess_and_every_unknown_one_is_named(capsys) -> None:
    line = error_line(inference_parser(), ["--zzzz", "--yyyy", "value"], capsys)
    assert "did you mean" not in line
    assert "--zzzz" in line and "--yyyy" in line


def test_a_bad_value_is_one_line_too(capsys) -> None:
    line = error_line(inference_parser(), ["--default_data", "DMEO"], capsys)
    assert "--default_data" in line and "DMEO" in line and "DEMO" in line


def option_helps(parser: argparse.ArgumentParser) -> dict[str, str]:
    formatter = parser._get_formatter()
    helps = {}
    for action in parser._actions:
        if action.option_strings and action.help is not argparse.SUPPRESS:
            helps[action.option_strings[-1]] = formatter._get_help_string(action)
    return helps


def test_inference_help_groups_the_options_in_order_and_every_option_says_its_default() -> None:
    parser = inference_parser()
    text = parser.format_help()
    positions = [text.index(f"\n{group}:") for group in GROUPS]
    assert positions == sorted(positions)
    groups = text[text.index("\nwhat to read:") :]
    assert groups.index("--input") < groups.index("--default_data") < groups.index("--output")
    negatives = {"--no_save_image", "--no_showcase", "--no_border", "--no_cuda_graphs", "--help"}
    for flag, help_text in option_helps(parser).items():
        if flag not in negatives:
            assert "default" in help_text, flag
    helps = option_helps(parser)
    assert helps["--crop_border"].endswith("(default: 4)")
    assert helps["--compile"].endswith("(default: off)")
    assert helps["--save_image"].endswith("(default: on)")
    ungrouped = [action for action in parser._optionals._group_actions if action.dest != "help"]
    assert ungrouped == []


def test_the_defaults_formatter_shows_values_and_leaves_unset_ones_to_the_help() -> None:
    parser = CommandParser(prog="x")
    parser.add_argument("--rate", type=float, default=0.5, help="a rate")
    parser.add_argument("--said", default=3, help="three (default: three)")
    parser.add_argument("--unset", help="when not given, the preset's")
    parser.add_argument("--flag", action="store_true", help="a switch")
    helps = option_helps(parser)
    assert helps["--rate"] == "a rate (default: 0.5)"
    assert helps["--said"] == "three (default: three)"
    assert helps["--unset"] == "when not given, the preset's"
    assert helps["--flag"] == "a switch (default: off)"
