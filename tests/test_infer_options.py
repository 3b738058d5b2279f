"""inference.py's command line: what is left for the plan to decide (None) and the defaults it shows."""

import pytest

from cdvd_tsp.infer.checks import RELEASED_N_STAGES
from cdvd_tsp.infer.options import default_workers, parse_args
from cdvd_tsp.model.tiling import DEFAULT_OVERLAP


def test_settings_that_depend_on_the_run_are_left_to_the_plan() -> None:
    args = parse_args([])
    undecided = ("border", "border_mode", "n_stages", "tile_overlap", "gopro_blur", "precision", "cuda_graphs")
    assert all(getattr(args, name) is None for name in (*undecided, "showcase", "tile", "self_ensemble"))
    assert (args.default_data, args.metric_channel, args.crop_border) == ("DVD", "rgb", 4)
    assert args.workers == default_workers() and args.save_image and not args.window


def test_the_default_workers_follow_the_cores_between_4_and_16() -> None:
    assert [default_workers(cores) for cores in (1, 2, 6, 7, 16, 18, 64)] == [4, 4, 4, 5, 14, 16, 16]


def test_self_ensemble_alone_is_x8_and_border_modes_are_the_three() -> None:
    assert parse_args(["--self_ensemble"]).self_ensemble == "x8"
    assert parse_args(["--self_ensemble", "x16"]).self_ensemble == "x16"
    for mode in ("release", "replicate", "reflect"):
        assert parse_args(["--border_mode", mode]).border_mode == mode
    with pytest.raises(SystemExit):
        parse_args(["--border_mode", "mirror"])


def test_the_help_shows_the_defaults_the_plan_uses(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default {DEFAULT_OVERLAP})" in text and f"(default {RELEASED_N_STAGES}, the released files')" in text
    assert "(default 32)" in text and "(default 2, the released files')" in text


def test_the_speed_settings_default_to_what_the_plan_picks_and_refuse_unknown_values() -> None:
    args = parse_args([])
    assert (args.channels_last, args.batched_flows, args.release_step) == ("auto", "auto", False)
    assert (args.threads, args.deterministic, args.compile) == (None, False, False)
    given = parse_args(["--channels_last", "all", "--batched_flows", "on", "--threads", "3", "--deterministic"])
    assert (given.channels_last, given.batched_flows, given.threads, given.deterministic) == ("all", "on", 3, True)
    assert [parse_args(["--channels_last", name]).channels_last for name in ("off", "restoration", "flow")] == [
        "off",
        "restoration",
        "flow",
    ]
    for argv in (["--channels_last", "nhwc"], ["--batched_flows", "yes"], ["--threads", "two"]):
        with pytest.raises(SystemExit):
            parse_args(argv)
