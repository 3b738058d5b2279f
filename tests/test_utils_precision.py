"""Precision settings (utils/precision.py), for inference and training alike (bf16 on the CPU only where the CPU
computes it natively: both cases mocked), and the model's own choices under autocast: PWC-Net stays in float32
under bfloat16, and sampling grids are never built in 16 bits."""

import pytest
import torch

from cdvd_tsp.loss import Loss
from cdvd_tsp.model.acceleration import accelerated_step
from cdvd_tsp.model.cdvd_tsp import CDVD_TSP
from cdvd_tsp.model.flow_pwc import sampling_grid, warp_features
from cdvd_tsp.option import parse_args
from cdvd_tsp.trainer.step import TrainStep
from cdvd_tsp.utils import precision
from cdvd_tsp.utils.cpu import Bf16Support, bf16_support
from cdvd_tsp.utils.errors import UserError
from cdvd_tsp.utils.precision import PRECISIONS, get_precision, tf32_switched
from conftest import seeded_model

CPU = torch.device("cpu")


NATIVE = Bf16Support(True, "native bfloat16 (amx_bf16)")
EMULATED = Bf16Support(False, "this CPU (AMD EPYC) has no native bfloat16 arithmetic (no amx_bf16 or avx512_bf16)")


@pytest.mark.parametrize("support", [NATIVE, EMULATED], ids=["native bf16", "emulated bf16"])
def test_the_cpu_takes_fp32_and_bf16_where_the_cpu_computes_it(
    monkeypatch: pytest.MonkeyPatch, support: Bf16Support
) -> None:
    monkeypatch.setattr(precision, "bf16_support", lambda: support)
    assert get_precision("fp32", CPU) is PRECISIONS["fp32"]
    for name in ("tf32", "fp16"):
        expected = rf"^--precision {name}: needs a CUDA device; on the CPU use --precision fp32$"
        with pytest.raises(UserError, match=expected):
            get_precision(name, CPU)
    if support.native:
        assert get_precision("bf16", CPU) is PRECISIONS["bf16"]
    else:
        expected = (
            r"^--precision bf16: this CPU \(AMD EPYC\) has no native bfloat16 arithmetic \(no amx_bf16 or "
            r"avx512_bf16\), and emulated bfloat16 is many times slower than float32; on the CPU use --precision fp32$"
        )
        with pytest.raises(UserError, match=expected):
            get_precision("bf16", CPU)
    for name in PRECISIONS:  # CUDA takes every setting, whatever the CPU
        assert get_precision(name, torch.device("cuda")) is PRECISIONS[name]
    with pytest.raises(UserError, match=r"^--precision fp8: unknown; use one of fp32, tf32, fp16, bf16$"):
        get_precision("fp8", torch.device("cuda"))


@pytest.mark.parametrize("support", [NATIVE, EMULATED], ids=["native bf16", "emulated bf16"])
def test_training_amp_bf16_on_the_cpu_follows_the_same_rule(
    monkeypatch: pytest.MonkeyPatch, support: Bf16Support
) -> None:
    monkeypatch.setattr(precision, "bf16_support", lambda: support)
    with pytest.raises(UserError, match=r"^--amp fp16: mixed precision needs CUDA; drop --cpu or --amp$"):
        parse_args(["--cpu", "--amp", "fp16"])
    if support.native:
        assert parse_args(["--cpu", "--amp", "bf16"]).amp == "bf16"
    else:
        with pytest.raises(UserError, match=r"^--amp bf16 on the CPU: this CPU \(AMD EPYC\) has no native bfloat16"):
            parse_args(["--cpu", "--amp", "bf16"])


def test_a_training_step_under_bf16_autocast_on_the_cpu_keeps_pwc_net_in_float32() -> None:
    """What --amp bf16 runs on a CPU (here at a tiny size, so that emulated bfloat16 is quick enough too)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = CDVD_TSP(n_sequence=3, n_feat=4, n_resblock=1)
    dtypes: dict[str, set[torch.dtype]] = {"flow_net": set(), "recons_net": set()}
    for component, seen in dtypes.items():
        for module in getattr(model, component).modules():
            if isinstance(module, torch.nn.Conv2d):
                module.register_forward_hook(lambda _, inputs, output, seen=seen: seen.add(output.dtype))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    step = TrainStep(model, Loss("1*L1"), optimizer, CPU, amp="bf16")
    clip = torch.rand(1, 3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    before = [parameter.detach().clone() for parameter in model.recons_net.parameters()]
    total, values = step.compute_loss(clip, clip)
    step.optimise(total)
    assert dtypes == {"flow_net": {torch.float32}, "recons_net": {torch.bfloat16}}
    assert total.dtype == torch.float32 and all(value == value for value in values)  # finite, not NaN
    assert any(not torch.equal(a, b) for a, b in zip(before, model.recons_net.parameters(), strict=True))


@pytest.mark.skipif(
    not bf16_support().native, reason="needs a CPU with native bfloat16 (" + bf16_support().reason + ")"
)
def test_bf16_on_a_native_cpu_is_close_to_float32(model: torch.nn.Module) -> None:
    inputs = frames(3, height=64, width=96, seed=7)
    step = accelerated_step(model, get_precision("bf16", CPU), CPU)
    with torch.no_grad():
        under_bf16 = step(*inputs)
        reference = model.restore_center(*inputs)
    assert under_bf16.dtype == torch.float32
    assert ((under_bf16 - reference).abs().max() / reference.abs().max()).item() < 3e-2


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
