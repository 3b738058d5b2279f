"""The settings of a run, recorded once: every setting is one `Setting` of `run_settings`, from which both the log's
header (``name: text`` lines, the release's first) and results.json's ``settings`` (``name: value``) are written.

A new setting goes into `run_settings`, once: its value for results.json, and the text the log shows when that is
not the value itself; a setting that only one of the two records says so.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from cdvd_tsp.infer.execution import ONNXRUNTIME, Execution
from cdvd_tsp.infer.planning import Deblurring, Evaluation, Plan
from cdvd_tsp.model.correlation import BACKEND_VARIABLE, SELECTOR, backend_choice
from cdvd_tsp.model.streaming import SIZE_MULTIPLE
from cdvd_tsp.utils.openmp import wait_policy

ENSEMBLE_TEXT = {
    None: "off",
    "x8": "x8 (the 8 flips and transpositions of every frame: 8x the model's time)",
    "x16": "x16 (the 8 flips and transpositions, forwards and backwards in time: 16x the model's time)",
}
RUNNER_TEXT = {"window": "window (every window from scratch)", "streaming": "streaming"}
CHANNELS_LAST_TEXT = {
    "off": "off (NCHW throughout)",
    "restoration": "restoration (the restoration net in channels_last, the flow net in NCHW)",
    "flow": "flow (the flow net and the warps in channels_last, the restoration net in NCHW)",
    "all": "all (the flow net, the warps and the restoration net in channels_last)",
}
SHIFTED, TILED = "PyTorch, shifted products", "PyTorch, tiled products"
EXPORTED = "ONNX, shifted products (exported)"


@dataclass(frozen=True)
class Setting:
    name: str
    value: object
    """Its value in results.json (a JSON value)."""
    text: str | None = None
    """How the log shows it, if not as ``str(value)``."""
    logged: bool = True
    recorded: bool = True
    """Whether results.json's ``settings`` has it."""

    @property
    def shown(self) -> str:
        return str(self.value) if self.text is None else self.text


def device_name(device: torch.device) -> str:
    return f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)


def planned_cost_volume(execution: Execution) -> str:
    """Which code will compute the run's cost volumes (model/correlation.py decides call by call; on CUDA the CuPy
    kernel is used once it has passed its check on the first call, so results.json says what it came to)."""
    if execution.backend == ONNXRUNTIME:
        return EXPORTED
    choice = backend_choice()
    given = f" ({BACKEND_VARIABLE}={choice})" if choice != "auto" else ""
    if execution.compile:
        return f"{SHIFTED} (under torch.compile)"
    if choice == "torch":
        return f"{SHIFTED}{given}"
    if choice == "tiled" or execution.device.type == "cpu":
        return f"{TILED}{given}"
    return f"the CuPy kernel once it passes its check, else {SHIFTED}{given}"


def cost_volume_code(execution: Execution) -> str:
    """Which code computed the cost volumes (known once the run has computed some): on CUDA what the selector came
    to, on the CPU the PyTorch formulation it uses there (the shifted products under torch.compile)."""
    if execution.backend == ONNXRUNTIME:
        return EXPORTED
    if execution.device.type == "cuda":
        return SELECTOR.describe()
    if execution.compile:
        return f"{SHIFTED} (under torch.compile)"
    return SHIFTED if backend_choice() == "torch" else TILED


def task_settings(task: Evaluation | Deblurring) -> Iterator[Setting]:
    """What was restored and where the results go; paths are only logged."""
    if isinstance(task, Deblurring):
        yield Setting("input", str(task.input), recorded=False)
        yield Setting("output", str(task.output), recorded=False)
        return
    yield Setting("save_image", task.save_image, recorded=False)
    yield Setting("data_path", str(task.data_path), recorded=False)
    yield Setting("result_path", str(task.result_path), recorded=False)
    yield Setting("layout", task.layout)
    yield Setting("split", task.split)
    yield Setting("gopro_blur", task.gopro_blur)
    yield Setting("videos", task.videos)


@dataclass(frozen=True)
class RunSettings:
    settings: tuple[Setting, ...]

    def header(self) -> dict[str, str]:
        """The log's header settings (report.write_header puts the release's first, in its order)."""
        return {setting.name: setting.shown for setting in self.settings if setting.logged}

    def to_json(self, cost_volume: str) -> dict[str, object]:
        """results.json's ``settings``, with the code that computed the cost volumes (known after the run)."""
        recorded = {setting.name: setting.value for setting in self.settings if setting.recorded}
        return {**recorded, "cost_volume": cost_volume}


def run_settings(plan: Plan, processes: int) -> RunSettings:
    """Every setting of ``plan`` run by ``processes`` processes, in the order the log's extra lines show them."""
    restoration, execution, metrics = plan.restoration, plan.execution, plan.metrics
    tile = restoration.tile
    tile_text = "off" if tile is None else f"{tile} (overlap {restoration.tile_overlap})"
    layouts = execution.channels_last
    return RunSettings(
        (
            *task_settings(plan.task),
            Setting("model_path", str(restoration.model_path), recorded=False),
            Setting("n_seq", restoration.n_sequence),
            Setting("border", restoration.border),
            Setting("border_mode", restoration.border_mode, text=restoration.border_mode or "off"),
            Setting("size_must_mode", SIZE_MULTIPLE, recorded=False),
            # the release logs the device's type; results.json names the device
            Setting("device", device_name(execution.device), text=execution.device.type),
            Setting("device_name", device_name(execution.device), recorded=False),
            Setting("backend", execution.backend),
            Setting("runner", restoration.runner, text=RUNNER_TEXT[restoration.runner]),
            Setting("metric_channel", metrics.channel),
            Setting("crop_border", metrics.crop_border),
            Setting("self_ensemble", restoration.self_ensemble, text=ENSEMBLE_TEXT[restoration.self_ensemble]),
            Setting("tile", tile, text=tile_text),
            Setting("tile_overlap", restoration.tile_overlap, logged=False),
            Setting("precision", execution.precision.name),
            Setting("channels_last", layouts, text=CHANNELS_LAST_TEXT[layouts]),
            Setting("batched_flows", execution.step_options.batch_flows),
            Setting("flow_bf16", execution.step_options.flow_in_bf16),
            Setting("layout_choice", execution.layout_reason),
            # results.json records the code that computed the cost volumes, known after the run (`to_json`)
            Setting("cost_volume", planned_cost_volume(execution), recorded=False),
            Setting("cuda_graphs", execution.cuda_graphs),
            Setting("compile", execution.compile),
            Setting("deterministic", execution.deterministic),
            Setting("threads", execution.threads),
            Setting("threads_choice", execution.threads_reason),
            Setting("openmp_wait", wait_policy()),
            Setting("workers", execution.workers),
            Setting("processes", processes),
        )
    )
