"""Export the model's per-stage step to ONNX and check the file before it is kept.

The exported unit is the step the streaming runner calls (`CDVD_TSP.restore_center`: previous, center, following
[1, 3, H, W] -> the restored center), with H and W dynamic (any multiples of 4), through torch.onnx's dynamo
exporter at opset `DEFAULT_OPSET` (17 or 18: TensorRT computes GridSample wrongly at opset 20). The flow net's cost
volumes are `model.correlation.cost_volume_stacked` (standard operators, no custom one; 18 slices where the shifted
products take 81: a graph of 2,230 nodes instead of 11,940, exported 2.3 to 3 times faster), and
its resize to multiples of 64 is exported for every size (`model.flow_pwc`, under export). The file records the
number of stages (`model.onnx_step.N_STAGES_KEY`) so that the backend builds the right runner.

`check_export` runs the file with onnxruntime on the CPU on frames of two sizes and compares it with the PyTorch
step; `export_onnx` deletes a file that fails the check and says so in one line.
"""

import copy
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from cdvd_tsp.model.cdvd_tsp import CDVD_TSP
from cdvd_tsp.model.onnx_step import (
    EXPORTED_OPTIONS,
    INPUT_NAMES,
    N_STAGES_KEY,
    OUTPUT_NAME,
    OnnxModel,
    import_optional,
)

OPSETS = (17, 18)
DEFAULT_OPSET = 18
TRACE_SIZE = (200, 264)
"""The frames [H, W] the exporter traces with: the flow net's coarsest level is then 4 x 5 (at 64 x 64 it would be
1 x 1, and a size of 1 is specialised by the tracer, which breaks every other size)."""
CHECK_SIZES = ((48, 64), (72, 96))
"""Frames [H, W] the check runs the exported step on: two sizes, neither a multiple of 64 (the flow net resizes)."""
CHECK_TOLERANCE = 1e-4
"""Largest |onnxruntime - PyTorch| the check accepts on outputs in [0, 1] (float32)."""
HALF_CHECK_TOLERANCE = 2e-3
"""The same for a float16 export against the float32 PyTorch step (half a grey level; seen: 4.2e-4)."""
MAX_SIDE = 8192


class StepModule(nn.Module):
    """`CDVD_TSP.restore_center` as a module's forward, the unit the exporter traces."""

    def __init__(self, model: CDVD_TSP) -> None:
        super().__init__()
        self.model = model

    def forward(self, previous: Tensor, center: Tensor, following: Tensor) -> Tensor:
        return self.model.restore_center(previous, center, following, EXPORTED_OPTIONS)


@dataclass(frozen=True)
class ExportReport:
    path: Path
    opset: int
    seconds: float
    """The export's wall time (the check's not included)."""
    check_seconds: float
    differences: dict[tuple[int, int], float]
    """The check's largest |onnxruntime - PyTorch| per frame size [H, W]."""
    half: bool = False
    """float16 (``--half``), else float32."""

    @property
    def dtype_name(self) -> str:
        return "float16" if self.half else "float32"

    @property
    def tolerance(self) -> float:
        """What the check accepted."""
        return HALF_CHECK_TOLERANCE if self.half else CHECK_TOLERANCE

    @property
    def size_mb(self) -> float:
        return self.path.stat().st_size / 1e6


def dynamic_shapes() -> dict[str, dict[int, object]]:
    """H and W of every input: any multiples of 4, the same for the three frames."""
    height = torch.export.Dim("height_4", min=2, max=MAX_SIDE // 4)
    width = torch.export.Dim("width_4", min=2, max=MAX_SIDE // 4)
    return {name: {2: 4 * height, 3: 4 * width} for name in INPUT_NAMES}


def sample_frames(size: tuple[int, int], seed: int) -> tuple[Tensor, ...]:
    """Three frames [1, 3, H, W] in [0, 1]: smooth content that moves a little from frame to frame."""
    generator = torch.Generator().manual_seed(seed)
    height, width = size
    base = torch.rand(1, 3, height // 4 + 3, width // 4 + 3, generator=generator)
    smooth = torch.nn.functional.interpolate(base, scale_factor=4, mode="bilinear", align_corners=False)
    return tuple(smooth[:, :, index : index + height, index : index + width].contiguous() for index in range(3))


def export_step(model: CDVD_TSP, destination: Path, opset: int = DEFAULT_OPSET, half: bool = False) -> float:
    """Write ``model``'s step to ``destination`` as ONNX (float32, or float16 weights, inputs and computation with
    ``half``; ``model`` itself is left as it is); returns the export's seconds."""
    onnx = import_optional("onnx", "--format onnx")
    import_optional("onnxscript", "--format onnx")
    if opset not in OPSETS:
        raise ValueError(f"opset {opset}: export at {' or '.join(map(str, OPSETS))}")
    step = StepModule((copy.deepcopy(model).half() if half else model.float()).eval()).eval()
    frames = tuple(frame.half() if half else frame for frame in sample_frames(TRACE_SIZE, seed=0))
    started = time.perf_counter()
    with torch.no_grad():
        program = torch.onnx.export(
            step,
            frames,
            dynamo=True,
            dynamic_shapes=dynamic_shapes(),
            opset_version=opset,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            optimize=False,
            verify=False,
            report=False,
        )
    proto = program.model_proto
    onnx.helper.set_model_props(proto, {N_STAGES_KEY: str(model.n_stages)})
    destination.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, os.fspath(destination))
    return time.perf_counter() - started


def check_export(
    model: CDVD_TSP, path: Path, sizes: tuple[tuple[int, int], ...] = CHECK_SIZES
) -> dict[tuple[int, int], float]:
    """The largest |onnxruntime - PyTorch| of the exported step at each of ``sizes`` (onnxruntime on the CPU)."""
    exported = OnnxModel(path)
    differences = {}
    for seed, size in enumerate(sizes):
        frames = sample_frames(size, seed)
        with torch.no_grad():
            expected = model.restore_center(*frames)
        actual = exported.step(*frames)
        differences[size] = (actual - expected).abs().max().item()
    return differences
