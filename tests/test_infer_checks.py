"""The checks of a run's plan, one by one: the precision and acceleration defaults (on a CUDA device object: nothing
runs on it), the number of stages, the border, the frames that get an output, sizes and tiles, the model file, and
whose results a default place holds."""

import argparse
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from cdvd_tsp.infer import execution
from cdvd_tsp.infer.checks import (
    RELEASED_N_STAGES,
    check_default_place,
    check_model_file,
    check_size,
    frames_with_output,
    pick_border,
    pick_n_stages,
    pick_tiles,
)
from cdvd_tsp.infer.execution import pick_acceleration, pick_precision, pick_step_choice, pick_step_options
from cdvd_tsp.model import acceleration
from cdvd_tsp.model.acceleration import BF16_FLOW, BF16_FLOW_CHANNELS_LAST_RESTORATION, RELEASE_OPTIONS
from cdvd_tsp.model.cdvd_tsp import StepOptions
from cdvd_tsp.model.checkpoint import with_n_sequence
from cdvd_tsp.utils import precision
from cdvd_tsp.utils.committed import Unit
from cdvd_tsp.utils.cpu import Bf16Support
from cdvd_tsp.utils.errors import UserError
from cdvd_tsp.utils.precision import PRECISIONS

CUDA, CPU = torch.device("cuda", 0), torch.device("cpu")
NATIVE_BF16 = Bf16Support(True, "native bfloat16 (amx_bf16)")
NO_BF16 = Bf16Support(False, "this CPU (a test CPU) has no native bfloat16 arithmetic")


@pytest.fixture(params=[NATIVE_BF16, NO_BF16], ids=["native bf16", "no bf16"])
def cpu_bf16(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Bf16Support:
    """This test run as on a CPU with native bfloat16 and as on one without (whichever this machine is)."""
    for module in (execution, precision, acceleration):
        monkeypatch.setattr(module, "bf16_support", lambda: request.param)
    return request.param


@pytest.mark.parametrize(
    ("device", "evaluation", "expected"),
    [(CUDA, True, "tf32"), (CUDA, False, "fp16"), (CPU, True, "fp32")],
)
def test_the_default_precision_is_tf32_for_evaluation_and_fp16_for_deblurring_on_cuda(
    device: torch.device, evaluation: bool, expected: str, cpu_bf16: Bf16Support
) -> None:
    assert pick_precision(None, device, evaluation).name == expected


def test_deblurring_on_the_cpu_is_bf16_where_the_cpu_has_it_natively_and_fp32_elsewhere(
    cpu_bf16: Bf16Support,
) -> None:
    assert pick_precision(None, CPU, evaluation=False).name == ("bf16" if cpu_bf16.native else "fp32")
    if cpu_bf16.native:
        assert pick_precision("bf16", CPU, evaluation=True).name == "bf16"  # evaluation may ask for it
    else:
        with pytest.raises(UserError, match=r"^--precision bf16: this CPU \(a test CPU\) has no native bfloat16"):
            pick_precision("bf16", CPU, evaluation=False)


def test_a_precision_given_is_taken_where_the_device_runs_it() -> None:
    assert pick_precision("bf16", CUDA, evaluation=True).name == "bf16"
    assert pick_precision("fp32", CUDA, evaluation=False).name == "fp32"
    with pytest.raises(UserError, match="--precision fp16: needs a CUDA device"):
        pick_precision("fp16", CPU, evaluation=False)


def flags(**given: object) -> argparse.Namespace:
    defaults = {"window": False, "compile": False, "cuda_graphs": None, "release_step": False}
    levers = {"channels_last": "auto", "batched_flows": "auto", "flow_bf16": "auto"}
    return argparse.Namespace(**{**defaults, **levers, **given})


def test_cuda_graphs_are_on_by_default_on_cuda_for_the_streaming_runner_only() -> None:
    assert pick_acceleration(flags(), CUDA) == (True, False)
    assert pick_acceleration(flags(), CPU) == (False, False)
    assert pick_acceleration(flags(window=True), CUDA) == (False, False)
    assert pick_acceleration(flags(cuda_graphs=False, compile=True), CUDA) == (False, True)
    with pytest.raises(UserError, match="--cuda_graphs: needs a CUDA device"):
        pick_acceleration(flags(cuda_graphs=True), CPU)


def checkpoint(path: Path, n_sequence: int | None) -> Path:
    state = OrderedDict(weight=torch.zeros(1))
    torch.save(state if n_sequence is None else with_n_sequence(state, n_sequence), path)
    return path


def test_the_stages_are_the_recorded_ones_else_the_given_else_the_released(tmp_path: Path) -> None:
    recorded, plain = checkpoint(tmp_path / "t3.pt", 7), checkpoint(tmp_path / "plain.pt", None)
    assert RELEASED_N_STAGES == 2
    assert (pick_n_stages(recorded, None), pick_n_stages(recorded, 3)) == (3, 3)
    assert (pick_n_stages(plain, None), pick_n_stages(plain, 1), pick_n_stages(plain, 4)) == (2, 1, 4)
    with pytest.raises(UserError) as refused:
        pick_n_stages(recorded, 2)
    assert str(refused.value) == f"--n_stages 2: {recorded} records n_sequence 7 (--n_stages 3); leave --n_stages out"
    with pytest.raises(UserError, match=r"^--n_stages 0: give 1 or more"):
        pick_n_stages(plain, 0)


def test_the_border_mode_is_release_by_default_and_only_with_a_border() -> None:
    assert pick_border(None, None, default=True) == "release"
    assert pick_border(True, "reflect", default=False) == "reflect"
    assert pick_border(None, None, default=False) is None
    assert pick_border(False, None, default=True) is None
    with pytest.raises(UserError, match=r"^--border_mode replicate: pads the border frames, which this run leaves out"):
        pick_border(None, "replicate", default=False)


@pytest.mark.parametrize(
    ("count", "mode", "stages", "expected"),
    [
        (7, None, 2, [2, 3, 4]),
        (5, None, 2, [2]),
        (3, None, 1, [1]),
        (7, None, 3, [3]),
        (2, "release", 2, [0, 1]),
        (1, "replicate", 3, [0]),
        (3, "reflect", 2, [0, 1, 2]),
        (4, "reflect", 3, [0, 1, 2, 3]),
    ],
)
def test_frames_with_output(count: int, mode: str | None, stages: int, expected: list[int]) -> None:
    assert frames_with_output(count, mode, "v", stages) == expected


@pytest.mark.parametrize(
    ("count", "mode", "stages", "message"),
    [
        (4, None, 2, "v: has 4 frame(s); without --border a video needs at least 5 (2 stages"),
        (6, None, 3, "v: has 6 frame(s); without --border a video needs at least 7 (3 stages"),
        (1, "release", 2, "v: has 1 frame(s); --border_mode release needs at least 2 (2 stages)"),
        (2, "reflect", 2, "v: has 2 frame(s); --border_mode reflect needs at least 3 (2 stages)"),
        (0, "replicate", 1, "v: has 0 frame(s); --border_mode replicate needs at least 1 (1 stages)"),
    ],
)
def test_videos_too_short_are_refused(count: int, mode: str | None, stages: int, message: str) -> None:
    with pytest.raises(UserError) as refused:
        frames_with_output(count, mode, "v", stages)
    assert str(refused.value).startswith(message)


def test_the_smallest_frame_is_the_metrics_after_the_crop_or_4_pixels() -> None:
    check_size("v", (24, 20), crop=True, scored=True, crop_border=4)
    with pytest.raises(UserError) as refused:
        check_size("v", (24, 19), crop=True, scored=True, crop_border=4)  # 16 wide once cropped to 4s
    assert str(refused.value) == (
        "v: frames of 19x24 are too small; at least 19x19 needed to be scored with --crop_border 4 (the border left "
        "out on both sides and one SSIM window; these are 16x24 once cropped to multiples of 4)"
    )
    check_size("v", (12, 12), crop=True, scored=True, crop_border=0)  # 11 = one SSIM window
    check_size("v", (4, 4), crop=False, scored=False, crop_border=4)
    with pytest.raises(UserError) as refused:
        check_size("v", (3, 9), crop=False, scored=False, crop_border=4)
    assert str(refused.value) == "v: frames of 9x3 are too small; at least 4x4 needed by the model"


def test_the_tile_overlap_defaults_to_32_with_tiles_only() -> None:
    assert pick_tiles(None, None) is None
    assert pick_tiles(64, None) == 32
    assert pick_tiles(16, 8) == 8
    with pytest.raises(UserError, match=r"^--tile_overlap goes with --tile"):
        pick_tiles(None, 32)
    with pytest.raises(UserError) as refused:  # the overlap is the default: the tile is what to change
        pick_tiles(32, None)
    assert str(refused.value) == (
        "--tile 32: not larger than the tiles' default overlap, 32 pixels; give a larger --tile, or --tile_overlap "
        "below 32 (a multiple of 4)"
    )
    with pytest.raises(UserError, match=r"^--tile_overlap 32: give a multiple of 4 from 0 to less than --tile 32$"):
        pick_tiles(32, 32)  # an overlap given is the one to blame


def committed_results(folder: Path, meta: dict) -> Path:
    """A results.json committed into ``folder`` with ``meta`` in its manifest, as a run of inference.py commits."""
    folder.mkdir(parents=True)
    with Unit.open(folder, "results.json") as unit:
        stage = unit.begin()
        stage.write("results.json", b"{}")
        stage.commit(meta)
    return folder / "results.json"


def test_a_default_place_takes_results_of_the_input_it_holds_only(tmp_path: Path) -> None:
    input_path = tmp_path / "a" / "frames"
    check_default_place(tmp_path / "new", tmp_path / "new" / "results.json", input_path, "--output")  # nothing there
    results = committed_results(tmp_path / "same", {"tool": "inference.py", "input": str(input_path)})
    check_default_place(results.parent, results, input_path, "--output")
    unrecorded = committed_results(tmp_path / "unrecorded", {"tool": "inference.py"})  # before inputs were recorded
    with pytest.raises(UserError) as refused:
        check_default_place(unrecorded.parent, unrecorded, input_path, "--output")
    assert str(refused.value) == (
        f"{unrecorded.parent}: the default place of this run's results holds results whose input is not recorded, "
        f"and this run's input is {input_path}; give --output to put them elsewhere, or move the earlier results away"
    )


def test_a_model_path_that_is_no_file_is_named_for_what_it_is(tmp_path: Path) -> None:
    with pytest.raises(UserError) as refused:
        check_model_file(tmp_path)
    assert (
        str(refused.value) == f"--model_path {tmp_path}: is a folder, not a checkpoint file; give the .pt file itself"
    )
    for name in ("c.pt", "a.pt", "b.pt", "d.pt", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(UserError, match=r"give the \.pt file itself \(it holds a\.pt, b\.pt, c\.pt and 1 more\)$"):
        check_model_file(tmp_path)
    with pytest.raises(UserError) as refused:
        check_model_file(Path("/dev/null"))
    assert str(refused.value) == (
        "--model_path /dev/null: is not a regular file (a device, a pipe or a socket), not a checkpoint"
    )


@pytest.mark.parametrize(("capability", "unit"), [("AVX2", None), ("AVX512", "AMX-BF16"), ("AVX512", "AVX512-BF16")])
def test_the_step_options_are_the_recommended_ones_on_a_cpu_that_has_measurements(
    monkeypatch: pytest.MonkeyPatch, capability: str, unit: str | None, cpu_bf16: Bf16Support
) -> None:
    monkeypatch.setattr(acceleration, "cpu_capability", lambda: capability)
    monkeypatch.setattr(acceleration, "this_bf16_unit", lambda: unit)
    fp32 = pick_precision("fp32", CPU, evaluation=False)
    recommended = StepOptions(channels_last_restoration=True)  # measured faster on each (acceleration.py)
    assert pick_step_options(flags(), CPU, fp32) == recommended  # evaluation and deblurring alike
    if cpu_bf16.native:
        bf16 = pick_precision(None, CPU, evaluation=False)
        # bf16 in channels_last only with AMX's tile units; NCHW with AVX512-BF16 alone; nothing measured on AVX2;
        # with native bf16, PWC-Net in bf16 too
        expected = {"AMX-BF16": BF16_FLOW_CHANNELS_LAST_RESTORATION, "AVX512-BF16": BF16_FLOW}.get(
            unit, RELEASE_OPTIONS
        )
        choice = pick_step_choice(flags(), CPU, bf16)
        assert choice.options == expected
        assert choice.reason.startswith(f"for {unit} in bf16, measured" if unit else "the release's: nothing measured")


def test_the_layout_s_reason_names_the_flags_that_overrode_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(acceleration, "cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(acceleration, "this_bf16_unit", lambda: None)
    fp32 = pick_precision("fp32", CPU, evaluation=False)
    measured = (
        "for AVX2 in fp32, measured (AMD EPYC Zen 3, AVX2: the fp32 restoration net 1.2x faster in channels_last)"
    )
    assert pick_step_choice(flags(), CPU, fp32).reason == measured
    given = pick_step_choice(flags(channels_last="off", batched_flows="on"), CPU, fp32)
    assert given.reason == f"--channels_last off, --batched_flows on; otherwise {measured}"
    assert given.options == StepOptions(batch_flows=True)
    assert pick_step_choice(flags(release_step=True), CPU, fp32).reason == "--release_step"


def test_each_lever_overrides_the_recommended_options_and_the_release_step_is_the_release_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(acceleration, "cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(acceleration, "this_bf16_unit", lambda: None)
    fp32 = pick_precision("fp32", CPU, evaluation=False)

    def picked(**given: object) -> StepOptions:
        return pick_step_options(flags(**given), CPU, fp32)

    assert picked(channels_last="off") == RELEASE_OPTIONS
    assert picked(channels_last="flow") == StepOptions(channels_last_flow=True)
    assert picked(channels_last="all") == StepOptions(channels_last_flow=True, channels_last_restoration=True)
    assert picked(batched_flows="on") == StepOptions(batch_flows=True, channels_last_restoration=True)
    assert picked(batched_flows="on", channels_last="off") == StepOptions(batch_flows=True)
    assert picked(release_step=True) == RELEASE_OPTIONS
    assert picked(window=True) == RELEASE_OPTIONS  # the window runner runs the whole model the release's way
    tf32 = pick_precision("tf32", CUDA, evaluation=True)
    assert pick_step_options(flags(), CUDA, tf32) == RELEASE_OPTIONS  # nothing measured yet
    assert pick_step_options(flags(batched_flows="on"), CUDA, tf32) == StepOptions(batch_flows=True)


def test_pwc_net_runs_in_bf16_where_native_bf16_runs_the_step_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(acceleration, "cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(acceleration, "this_bf16_unit", lambda: "AMX-BF16")
    monkeypatch.setattr(acceleration, "bf16_support", lambda: Bf16Support(True, "mocked"))
    bf16 = PRECISIONS["bf16"]
    assert pick_step_options(flags(), CPU, bf16).flow_in_bf16
    off = pick_step_choice(flags(flow_bf16="off"), CPU, bf16)
    assert not off.options.flow_in_bf16 and off.options.channels_last_restoration
    assert off.reason.startswith("--flow_bf16 off; otherwise for AMX-BF16 in bf16, measured")
    fp32 = pick_precision("fp32", CPU, evaluation=False)
    assert not pick_step_options(flags(), CPU, fp32).flow_in_bf16
    with pytest.raises(UserError, match=r"^--flow_bf16 on: runs PWC-Net in bfloat16 under --precision bf16, and this"):
        pick_step_options(flags(flow_bf16="on"), CPU, fp32)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"release_step": True, "flow_bf16": "on"}, "--flow_bf16 on: --release_step runs the release's step"),
        ({"release_step": True, "channels_last": "all"}, "--channels_last all: --release_step runs the release's step"),
        ({"release_step": True, "batched_flows": "off"}, "--batched_flows off: --release_step runs the release's"),
        ({"window": True, "channels_last": "off"}, "--channels_last off: --window runs the whole model the release's"),
    ],
)
def test_a_lever_with_the_release_s_way_is_refused(given: dict, message: str) -> None:
    fp32 = pick_precision("fp32", CPU, evaluation=True)
    with pytest.raises(UserError, match=f"^{message}"):
        pick_step_options(flags(**given), CPU, fp32)


def test_the_onnxruntime_backend_refuses_the_pytorch_step_s_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    from cdvd_tsp.infer.options import parse_args

    pytest.importorskip("onnxruntime")
    assert execution.check_backend(parse_args([])) == "pytorch"
    assert execution.check_backend(parse_args(["--backend", "onnxruntime"])) == "onnxruntime"
    refused = {
        "--window": ["--window"],
        "--compile": ["--compile"],
        "--cuda_graphs": ["--cuda_graphs"],
        "--precision": ["--precision", "fp32"],
        "--release_step": ["--release_step"],
        "--channels_last": ["--channels_last", "off"],
        "--batched_flows": ["--batched_flows", "on"],
    }
    for flag, given in refused.items():
        with pytest.raises(UserError, match=f"^{flag} applies to the PyTorch backend; leave it out with --backend"):
            execution.check_backend(parse_args(["--backend", "onnxruntime", *given]))
    with pytest.raises(UserError, match=r"^--backend onnxruntime runs on the CPU; leave out --device cuda"):
        execution.check_backend(parse_args(["--backend", "onnxruntime", "--device", "cuda"]))
    assert execution.check_backend(parse_args(["--backend", "onnxruntime", "--no_cuda_graphs", "--device", "cpu"]))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(UserError, match=r"^--backend onnxruntime needs the package onnxruntime, which is not install"):
        execution.check_backend(parse_args(["--backend", "onnxruntime"]))
    assert execution.check_backend(parse_args([])) == "pytorch"  # the default backend never imports it
