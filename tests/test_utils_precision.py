"""Precision settings (utils/precision.py) and the model's own choices under autocast: PWC-Net stays in float32
under bfloat16, and sampling grids are never built in 16 bits."""

from typing import ClassVar

import pytest
import torch

from conftest import run_frames, seeded_model
from model.acceleration import GRAPH_WARMUP_CALLS, MAX_GRAPHS, GraphedStep, accelerated_step
from model.flow_pwc import sampling_grid, warp_features
from model.streaming import Step, StreamingRunner
from utils.errors import UserError
from utils.precision import PRECISIONS, autocast, get_precision, tf32_switched

CPU = torch.device("cpu")


def test_the_cpu_takes_fp32_only() -> None:
    assert get_precision("fp32", CPU) is PRECISIONS["fp32"]
    for name in ("tf32", "fp16", "bf16"):
        expected = rf"^--precision {name}: needs a CUDA device; on the CPU use --precision fp32$"
        with pytest.raises(UserError, match=expected):
            get_precision(name, CPU)
    with pytest.raises(UserError, match=r"^--precision fp8: unknown; use one of fp32, tf32, fp16, bf16$"):
        get_precision("fp8", torch.device("cuda"))


def test_the_table_says_what_each_setting_is() -> None:
    assert {name: (p.autocast_dtype, p.tf32) for name, p in PRECISIONS.items()} == {
        "fp32": (None, False),
        "tf32": (None, True),
        "fp16": (torch.float16, True),
        "bf16": (torch.bfloat16, True),
    }


def test_tf32_switch_is_restored_after_the_block() -> None:
    before = torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision
    with tf32_switched(False):
        assert (torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision) == ("ieee",) * 2
        with tf32_switched(True):
            assert torch.backends.cudnn.conv.fp32_precision == "tf32"
        assert torch.backends.cudnn.conv.fp32_precision == "ieee"
    assert (torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision) == before


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return seeded_model(seed=3)


def frames(count: int, height: int = 32, width: int = 48, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, height, width, generator=generator) for _ in range(count)]


def test_pwc_net_runs_in_float32_under_bfloat16_autocast(model: torch.nn.Module) -> None:
    first, second = frames(2)
    with torch.no_grad():
        plain = model.flow_net.estimate_flow(first, second)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            under_bf16 = model.flow_net.estimate_flow(first, second)
            restored = model.restore_center(*frames(3, seed=1))
    assert under_bf16.dtype == torch.float32 and torch.equal(under_bf16, plain)
    assert restored.dtype == torch.bfloat16  # the restoration net itself does run in bfloat16


def test_pwc_net_under_float16_autocast_is_not_forced_to_float32(model: torch.nn.Module) -> None:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        flow = model.flow_net.estimate_flow(*frames(2))
    assert flow.dtype == torch.float16


def test_sampling_grids_keep_pixel_positions_exact_for_16_bit_flows() -> None:
    # 3000 pixels wide: float16 cannot represent the odd positions above 2048
    flow = torch.zeros(1, 2, 2, 3000, dtype=torch.float16)
    grid = sampling_grid(flow)
    assert grid.dtype == torch.float32
    assert torch.equal(grid, sampling_grid(flow.float()))
    assert torch.equal(grid, sampling_grid(flow.to(torch.bfloat16)))


def test_16_bit_warps_sample_in_float32_and_return_their_dtype(model: torch.nn.Module) -> None:
    generator = torch.Generator().manual_seed(2)
    frame = torch.rand(1, 3, 20, 300, generator=generator)
    flow = (torch.randn(1, 2, 20, 300, generator=generator) * 3).half()
    warped, mask = model.flow_net.warp(frame.half(), flow)
    expected, expected_mask = model.flow_net.warp(frame.half().float(), flow.float())
    assert warped.dtype == mask.dtype == torch.float16
    assert torch.equal(warped, expected.half()) and torch.equal(mask, expected_mask.half())

    features = torch.rand(1, 4, 20, 300, generator=generator).half()
    warped_features = warp_features(features, flow)
    assert warped_features.dtype == torch.float16
    assert torch.equal(warped_features, warp_features(features.float(), flow.float()).half())


def test_the_accelerated_step_keeps_the_inputs_dtype(model: torch.nn.Module) -> None:
    step = accelerated_step(model, PRECISIONS["bf16"], CPU)
    with torch.no_grad():
        output = step(*frames(3, seed=4))
        with autocast(PRECISIONS["bf16"], CPU):
            expected = model.restore_center(*frames(3, seed=4))
    assert output.dtype == torch.float32 and torch.equal(output, expected.float())


class FakeCapture:
    """Stands in for a CUDA graph on the CPU: records captures and replays the step eagerly."""

    captured: ClassVar[list[tuple]] = []

    def __init__(self, step: Step, inputs: tuple[torch.Tensor, ...]) -> None:
        self.step = step
        FakeCapture.captured.append(tuple(inputs[1].shape))

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.step(*inputs) + 1000.0  # marks replayed results


def test_graphed_step_warms_up_then_captures_once_per_shape_and_keeps_two() -> None:
    FakeCapture.captured = []
    step = GraphedStep(lambda previous, center, following: center * 2, capture=FakeCapture)
    small, large, wide = (torch.ones(1, 3, *size) for size in ((4, 4), (8, 8), (4, 12)))
    with torch.no_grad():
        results = [step(small, small, small)[0, 0, 0, 0].item() for _ in range(4)]
        assert results == [2.0] * GRAPH_WARMUP_CALLS + [1002.0] * (4 - GRAPH_WARMUP_CALLS)
        for tensor in (large, large, large, wide, wide, wide):
            step(tensor, tensor, tensor)
    assert FakeCapture.captured == [(1, 3, 4, 4), (1, 3, 8, 8), (1, 3, 4, 12)]
    assert len(step.graphs) == MAX_GRAPHS == 2  # the oldest size was dropped
    with torch.enable_grad():  # a graph cannot record autograd: eager
        assert step(small, small, small)[0, 0, 0, 0].item() == 2.0


def test_cuda_graphs_need_a_cuda_device(model: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        accelerated_step(model, PRECISIONS["fp32"], CPU, cuda_graphs=True)


GRAPH_BOUNDS = {"fp32": 1e-4, "tf32": 1e-2, "fp16": 0.0, "bf16": 0.0}
"""Largest relative difference (max |graphed - eager| / max |eager|) between outputs replayed from CUDA graphs and
eager outputs. On an H200 (PyTorch 2.11, cuDNN 9.19) the 16-bit settings gave identical outputs, while float32
convolutions differed slightly: cuDNN may pick other algorithms while a graph is captured (at 720p at most one grey
level, 96 dB apart with fp32). The float32 bounds are the CUDA parity bounds of test_model_parity.py."""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", list(GRAPH_BOUNDS))
def test_streaming_from_cuda_graphs_equals_eager_streaming(name: str) -> None:
    device = torch.device("cuda")
    model = seeded_model(seed=5).to(device)
    precision = PRECISIONS[name]
    clip = [frame.to(device) for frame in frames(7, height=64, width=96, seed=6)]
    outputs = {}
    with tf32_switched(precision.tf32), torch.inference_mode():
        for graphs in (False, True):
            step = accelerated_step(model, precision, device, cuda_graphs=graphs)
            outputs[graphs] = run_frames(StreamingRunner(model, step=step), clip)
            if graphs:
                assert len(step.graphs) == 1  # stage 1 and stage 2 share one graph
    assert len(outputs[True]) == len(clip) - 4
    for eager, graphed in zip(outputs[False], outputs[True], strict=True):
        assert graphed.dtype == torch.float32
        difference = ((graphed - eager).abs().max() / eager.abs().max()).item()
        assert difference <= GRAPH_BOUNDS[name]
