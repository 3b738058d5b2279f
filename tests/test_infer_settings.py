"""The settings record of a run: one list, written as the log's header and as results.json's settings."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from cdvd_tsp.infer import execution
from cdvd_tsp.infer.options import parse_args
from cdvd_tsp.infer.planning import make_plan
from cdvd_tsp.infer.report import RELEASE_HEADER, RunLog, write_header
from cdvd_tsp.infer.settings import Setting, cost_volume_code, planned_cost_volume, run_settings
from cdvd_tsp.model import acceleration
from cdvd_tsp.model.acceleration import recommended_choice
from cdvd_tsp.utils import precision
from cdvd_tsp.utils.cpu import Bf16Support, thread_choice
from cdvd_tsp.utils.openmp import wait_policy
from conftest import evaluation_argv, make_dataset, save_seeded_weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_seeded_weights(tmp_path_factory.mktemp("weights") / "model.pt", seed=2)


def test_one_record_gives_the_log_header_and_the_results_settings(tmp_path: Path, weights: Path) -> None:
    data = make_dataset(tmp_path / "data", {"a": 3}, height=22, width=26)
    result = tmp_path / "result"
    flags = ["--border", "--border_mode", "replicate", "--tile", "64", "--self_ensemble", "--workers", "2"]
    flags += ["--channels_last", "all", "--batched_flows", "on", "--deterministic"]
    settings = run_settings(make_plan(parse_args([*evaluation_argv(data, weights, result), *flags])), processes=3)
    recommended = recommended_choice(torch.device("cpu"), precision.PRECISIONS["fp32"]).reason
    layout_choice = f"--channels_last all, --batched_flows on; otherwise {recommended}"
    assert settings.header() == {
        "save_image": "True",
        "data_path": str(data),
        "result_path": str(result),
        "layout": "release",
        "split": "None",
        "gopro_blur": "blur",
        "videos": "None",
        "model_path": str(weights),
        "n_seq": "5",
        "border": "True",
        "border_mode": "replicate",
        "size_must_mode": "4",
        "device": "cpu",
        "device_name": "cpu",
        "backend": "pytorch",
        "runner": "streaming",
        "metric_channel": "rgb",
        "crop_border": "4",
        "self_ensemble": "x8 (the 8 flips and transpositions of every frame: 8x the model's time)",
        "tile": "64 (overlap 32)",
        "precision": "fp32",
        "channels_last": "all (the flow net, the warps and the restoration net in channels_last)",
        "batched_flows": "True",
        "flow_bf16": "False",
        "layout_choice": layout_choice,
        "cost_volume": "PyTorch, tiled products",
        "cuda_graphs": "False",
        "compile": "False",
        "deterministic": "True",
        "threads": str(torch.get_num_threads()),
        "threads_choice": thread_choice().reason,
        "openmp_wait": wait_policy(),
        "workers": "2",
        "processes": "3",
    }
    assert settings.to_json("PyTorch") == {
        "layout": "release",
        "split": None,
        "gopro_blur": "blur",
        "videos": None,
        "n_seq": 5,
        "border": True,
        "border_mode": "replicate",
        "device": "cpu",
        "backend": "pytorch",
        "runner": "streaming",
        "metric_channel": "rgb",
        "crop_border": 4,
        "self_ensemble": "x8",
        "tile": 64,
        "tile_overlap": 32,
        "precision": "fp32",
        "channels_last": "all",
        "batched_flows": True,
        "flow_bf16": False,
        "layout_choice": layout_choice,
        "cuda_graphs": False,
        "compile": False,
        "deterministic": True,
        "threads": torch.get_num_threads(),
        "threads_choice": thread_choice().reason,
        "openmp_wait": wait_policy(),
        "workers": 2,
        "processes": 3,
        "cost_volume": "PyTorch",
    }
    names = [setting.name for setting in settings.settings]
    assert len(names) == len(set(names))


def test_the_log_header_has_the_release_s_lines_first_then_the_others_as_extra_lines(
    tmp_path: Path, weights: Path
) -> None:
    data = make_dataset(tmp_path / "data", {"a": 5}, height=22, width=26)
    settings = run_settings(make_plan(parse_args(evaluation_argv(data, weights, tmp_path / "result"))), processes=1)
    with RunLog(tmp_path) as log:
        write_header(log, settings.header(), weights)
    lines = log.path.read_text().splitlines()
    assert [line.split(": ")[0] for line in lines[1 : 1 + len(RELEASE_HEADER)]] == list(RELEASE_HEADER)
    assert lines[1:3] == ["save_image: True", "border: False"]
    extras = lines[1 + len(RELEASE_HEADER) : -1]
    assert all(line.startswith("+ ") for line in extras) and "+ border_mode: off" in extras
    assert lines[-1] == f"Loading model from {weights}"


def test_a_deblurring_run_logs_its_input_and_output_and_records_no_paths(tmp_path: Path, weights: Path) -> None:
    folder = make_dataset(tmp_path / "data", {"a": 3}, height=22, width=26, gt=False) / "blur" / "a"
    argv = ["--input", str(folder), "--output", str(tmp_path / "out"), "--model_path", str(weights), "--device", "cpu"]
    settings = run_settings(make_plan(parse_args(argv)), processes=1)
    header = settings.header()
    assert (header["input"], header["output"], header["border_mode"]) == (str(folder), str(tmp_path / "out"), "release")
    assert "save_image" not in header and "layout" not in header
    recorded = settings.to_json("PyTorch")
    assert not {"input", "output", "model_path", "layout"} & set(recorded)
    assert (recorded["border"], recorded["tile"], recorded["tile_overlap"]) == (True, None, None)


def test_a_setting_shows_its_value_unless_it_has_a_text() -> None:
    assert Setting("tile", None).shown == "None"
    assert Setting("tile", None, text="off").shown == "off"


def test_the_cost_volume_recorded_is_the_code_the_run_uses(
    tmp_path: Path, weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_dataset(tmp_path / "data", {"a": 5}, height=22, width=26)
    plan = make_plan(parse_args(evaluation_argv(data, weights, tmp_path / "result")))
    assert (planned_cost_volume(plan.execution), cost_volume_code(plan.execution)) == ("PyTorch, tiled products",) * 2
    compiled = replace(plan.execution, compile=True)
    under_compile = "PyTorch, shifted products (under torch.compile)"
    assert (planned_cost_volume(compiled), cost_volume_code(compiled)) == (under_compile,) * 2
    cuda = replace(plan.execution, device=torch.device("cuda", 0))  # a device object only: nothing runs on it
    assert planned_cost_volume(cuda) == "the CuPy kernel once it passes its check, else PyTorch, shifted products"
    monkeypatch.setenv("CDVD_COST_VOLUME", "torch")
    assert planned_cost_volume(plan.execution) == "PyTorch, shifted products (CDVD_COST_VOLUME=torch)"
    assert cost_volume_code(plan.execution) == "PyTorch, shifted products"
    monkeypatch.setenv("CDVD_COST_VOLUME", "tiled")
    assert planned_cost_volume(cuda) == "PyTorch, tiled products (CDVD_COST_VOLUME=tiled)"
    exported = replace(plan.execution, backend="onnxruntime")  # the exported graph's code, whatever the variable
    assert (planned_cost_volume(exported), cost_volume_code(exported)) == ("ONNX, shifted products (exported)",) * 2


def test_the_settings_record_the_step_options_the_plan_picked(tmp_path: Path, weights: Path) -> None:
    data = make_dataset(tmp_path / "data", {"a": 5}, height=22, width=26)
    argv = [*evaluation_argv(data, weights, tmp_path / "result"), "--release_step"]
    recorded = run_settings(make_plan(parse_args(argv)), processes=1).to_json("PyTorch")
    assert (recorded["channels_last"], recorded["batched_flows"], recorded["deterministic"]) == ("off", False, False)
    argv = [*evaluation_argv(data, weights, tmp_path / "result"), "--channels_last", "flow"]
    header = run_settings(make_plan(parse_args(argv)), processes=1).header()
    assert header["channels_last"] == "flow (the flow net and the warps in channels_last, the restoration net in NCHW)"


@pytest.mark.parametrize("native", [True, False], ids=["native bf16", "no bf16"])
def test_deblurring_records_bf16_on_a_cpu_with_native_bf16_and_evaluation_fp32(
    tmp_path: Path, weights: Path, monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    support = Bf16Support(native, "as this test says")
    for module in (execution, precision, acceleration):
        monkeypatch.setattr(module, "bf16_support", lambda: support)
    data = make_dataset(tmp_path / "data", {"a": 3}, height=22, width=26)
    evaluation = run_settings(
        make_plan(parse_args([*evaluation_argv(data, weights, tmp_path / "r"), "--border"])), processes=1
    )
    folder = data / "blur" / "a"
    argv = ["--input", str(folder), "--output", str(tmp_path / "out"), "--model_path", str(weights), "--device", "cpu"]
    deblurring = run_settings(make_plan(parse_args(argv)), processes=1)
    assert evaluation.to_json("PyTorch")["precision"] == "fp32"
    assert deblurring.to_json("PyTorch")["precision"] == ("bf16" if native else "fp32")
    assert deblurring.header()["precision"] == ("bf16" if native else "fp32")


@pytest.mark.parametrize(
    ("unit", "layouts"), [("AMX-BF16", "restoration"), ("AVX512-BF16", "off")], ids=["AMX", "AVX512-BF16 alone"]
)
def test_the_layout_picked_for_the_cpu_s_bf16_unit_and_why_are_recorded(
    tmp_path: Path, weights: Path, monkeypatch: pytest.MonkeyPatch, unit: str, layouts: str
) -> None:
    support = Bf16Support(True, "as this test says")
    for module in (execution, precision, acceleration):
        monkeypatch.setattr(module, "bf16_support", lambda: support)
    monkeypatch.setattr(acceleration, "this_bf16_unit", lambda: unit)
    monkeypatch.setattr(acceleration, "cpu_capability", lambda: "AVX512")
    folder = make_dataset(tmp_path / "data", {"a": 3}, height=22, width=26) / "blur" / "a"
    argv = ["--input", str(folder), "--output", str(tmp_path / "out"), "--model_path", str(weights), "--device", "cpu"]
    settings = run_settings(make_plan(parse_args(argv)), processes=1)
    recorded, header = settings.to_json("PyTorch"), settings.header()
    evidence = acceleration.MEASURED_OPTIONS[(unit, "bf16")].evidence
    assert (recorded["precision"], recorded["channels_last"]) == ("bf16", layouts)
    assert recorded["layout_choice"] == header["layout_choice"] == f"for {unit} in bf16, measured ({evidence})"
    settings = run_settings(make_plan(parse_args([*argv, "--channels_last", "all"])), processes=1)
    assert settings.to_json("PyTorch")["channels_last"] == "all"  # the flag overrides the choice, and says so
    assert settings.header()["layout_choice"].startswith("--channels_last all; otherwise for ")


def test_the_thread_choice_and_the_wait_policy_are_recorded(
    tmp_path: Path, weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cdvd_tsp.utils import cpu

    data = make_dataset(tmp_path / "data", {"a": 5}, height=22, width=26)
    monkeypatch.setattr(cpu, "LAST_CHOICE", cpu.ThreadChoice(torch.get_num_threads(), "2 usable cores, 0.4 idle"))
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    settings = run_settings(make_plan(parse_args(evaluation_argv(data, weights, tmp_path / "r"))), processes=1)
    recorded = settings.to_json("PyTorch")
    assert (recorded["threads_choice"], recorded["openmp_wait"]) == ("2 usable cores, 0.4 idle", "passive")
