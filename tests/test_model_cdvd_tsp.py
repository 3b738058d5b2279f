"""The cascade for T stages, its outputs by stage, dtype/device following, and the step's options (batched flows,
channels_last layouts), which give the plain step's numbers."""

from unittest import mock

import pytest
import torch

from cdvd_tsp.model.cdvd_tsp import CDVD_TSP, StepOptions
from cdvd_tsp.model.correlation import BACKEND_VARIABLE
from cdvd_tsp.model.stages import CascadeOutputs


def small_clip(frames: int, dtype: torch.dtype = torch.float32, height: int = 32, width: int = 48) -> torch.Tensor:
    return torch.rand(1, frames, 3, height, width, generator=torch.Generator().manual_seed(frames), dtype=dtype)


@pytest.mark.parametrize("n_stages", [1, 3])
def test_t_stages_take_2t_plus_1_frames_and_give_right_shapes(n_stages: int) -> None:
    n_sequence = 2 * n_stages + 1
    model = CDVD_TSP(n_sequence=n_sequence, n_feat=4, n_resblock=1).eval()
    clip = small_clip(n_sequence)
    with torch.no_grad():
        stages = model.forward_stages(clip)
        outputs = model(clip)
    assert [len(stage) for stage in stages] == list(range(n_sequence - 2, 0, -2))
    for stage in stages:
        for frame in stage:
            assert frame.shape == (1, 3, 32, 48)
    # forward: every output of the stages before the last, the final output, then None
    assert len(outputs) == sum(len(stage) for stage in stages) + 1
    assert outputs[-1] is None
    assert torch.equal(outputs[-2], stages[-1][0])


@pytest.mark.parametrize(("n_stages", "targets"), [(1, [1]), (2, [1, 2, 3, 2]), (3, [1, 2, 3, 4, 5, 2, 3, 4, 3])])
def test_split_outputs_is_the_inverse_of_forward_and_names_the_targets(n_stages: int, targets: list[int]) -> None:
    model = CDVD_TSP(n_sequence=2 * n_stages + 1, n_feat=4, n_resblock=1).eval()
    clip = small_clip(2 * n_stages + 1, height=16, width=16)
    with torch.no_grad():
        split = model.split_outputs(model(clip))
        stages = model.forward_stages(clip)
    assert [len(stage) for stage in split.stages] == [len(stage) for stage in stages]
    for ours, theirs in zip(split.flat(), [frame for stage in stages for frame in stage], strict=True):
        assert torch.equal(ours, theirs)
    assert torch.equal(split.final, stages[-1][0])
    assert torch.equal(split.stage1_center, stages[0][n_stages - 1])  # the centre frame's stage-1 output
    assert split.target_frames() == targets  # T = 2: the release's cat([gt1, gt2, gt3, gt2])
    window = torch.arange(2 * n_stages + 1).view(1, -1, 1, 1, 1)
    assert [int(frame) for frame in split.targets(window)] == targets
    with pytest.raises(ValueError, match="not the output of a"):
        CascadeOutputs.from_forward(model(clip)[1:], n_stages)


def test_stages_share_weights_so_one_stage_repeated_is_the_cascade() -> None:
    model = CDVD_TSP(n_sequence=5, n_feat=4, n_resblock=1).eval()
    clip = small_clip(5)
    with torch.no_grad():
        recons_1, recons_2, recons_3, out, mid_loss = model(clip)
        frames = list(clip.unbind(1))
        first = [model.restore_center(*frames[index - 1 : index + 2]) for index in (1, 2, 3)]
        second = model.restore_center(*first)
    assert mid_loss is None
    for ours, theirs in zip((recons_1, recons_2, recons_3, out), (*first, second), strict=True):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("n_sequence", [1, 4, 6])
def test_n_sequence_must_be_odd_and_at_least_three(n_sequence: int) -> None:
    with pytest.raises(ValueError, match="n_sequence"):
        CDVD_TSP(n_sequence=n_sequence)


def test_wrong_number_of_frames_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\[B, 5, C, H, W\]"):
        CDVD_TSP()(small_clip(3))


def test_double_precision_follows_the_model() -> None:
    model = CDVD_TSP(n_sequence=3).double().eval()
    with torch.no_grad():
        out, _ = model(small_clip(3, torch.float64))
    assert out.dtype == torch.float64


OPTION_CASES = [
    StepOptions(batch_flows=True),
    StepOptions(channels_last_flow=True),
    StepOptions(channels_last_restoration=True),
    StepOptions(batch_flows=True, channels_last_flow=True, channels_last_restoration=True),
]
STEP_OPTIONS_BOUND = 1e-12
"""float64: the layouts change only the order of the convolutions' sums (measured about 1e-15 relative)."""


@pytest.fixture(scope="module")
def double_model() -> CDVD_TSP:
    """The full PWC-Net and a small restoration net, in float64."""
    with torch.random.fork_rng():
        torch.manual_seed(2)
        return CDVD_TSP(n_sequence=3, n_feat=4, n_resblock=1).double().eval()


@pytest.mark.parametrize("options", OPTION_CASES, ids=lambda options: str(options)[12:-1])
def test_every_step_option_gives_the_plain_step_in_float64(double_model: CDVD_TSP, options: StepOptions) -> None:
    frames = list(small_clip(3, torch.float64, height=36, width=68).unbind(1))
    with torch.no_grad():
        plain = double_model.restore_center(*frames)
        laid_out = double_model.restore_center(*frames, options=options)
    assert laid_out.is_contiguous()  # the output has the center's layout whatever ran inside
    if options == StepOptions(batch_flows=True) and torch.get_num_threads() == 1:
        assert torch.equal(laid_out, plain)  # the same operations on a batch of two (threads may split sums otherwise)
    assert (laid_out - plain).abs().max() / plain.abs().max() < STEP_OPTIONS_BOUND


def test_every_step_option_gives_the_plain_steps_gradients_in_float64(double_model: CDVD_TSP) -> None:
    frames = [frame.requires_grad_() for frame in small_clip(3, torch.float64, height=20, width=36).unbind(1)]
    weights = torch.randn(1, 3, 20, 36, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    leaves = [*frames, *double_model.parameters()]
    gradients = {}
    for options in (StepOptions(), OPTION_CASES[-1]):
        loss = (double_model.restore_center(*frames, options=options) * weights).sum()
        gradients[options] = [
            torch.zeros_like(leaf) if grad is None else grad
            for leaf, grad in zip(leaves, torch.autograd.grad(loss, leaves, allow_unused=True), strict=True)
        ]
    plain, laid_out = gradients.values()
    assert sum(int(grad.abs().sum() > 0) for grad in plain) > 50  # the flow net's parameters get gradients too
    for expected, actual in zip(plain, laid_out, strict=True):
        assert (actual - expected).abs().max() <= STEP_OPTIONS_BOUND * expected.abs().max().clamp_min(1e-300)


def test_batched_flows_call_the_flow_net_and_the_warp_once(double_model: CDVD_TSP) -> None:
    frames = list(small_clip(3, torch.float64, height=16, width=16).unbind(1))
    calls = {}
    for batch in (False, True):
        with (
            mock.patch.object(
                double_model.flow_net, "estimate_flow", wraps=double_model.flow_net.estimate_flow
            ) as flow,
            mock.patch.object(double_model.flow_net, "warp", wraps=double_model.flow_net.warp) as warp,
            torch.no_grad(),
        ):
            double_model.restore_center(*frames, options=StepOptions(batch_flows=batch))
        calls[batch] = (flow.call_count, warp.call_count, [call.args[0].shape[0] for call in flow.call_args_list])
    assert calls == {False: (2, 2, [1, 1]), True: (1, 1, [2])}


def convolution_inputs(model: CDVD_TSP) -> dict[str, list[bool]]:
    """Hooks that record, per component, whether each convolution's input is in channels_last layout."""
    seen: dict[str, list[bool]] = {"flow_net": [], "recons_net": []}
    for component, records in seen.items():
        for module in getattr(model, component).modules():
            if isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
                module.register_forward_pre_hook(
                    lambda _, inputs, records=records: records.append(
                        inputs[0].is_contiguous(memory_format=torch.channels_last)
                    )
                )
    return seen


@pytest.mark.parametrize("cost_volume", ["tiled", "torch"])
@pytest.mark.parametrize(("flow", "restoration"), [(True, False), (False, True), (True, True)])
def test_channels_last_reaches_every_convolution_of_its_component(
    monkeypatch: pytest.MonkeyPatch, cost_volume: str, flow: bool, restoration: bool
) -> None:
    monkeypatch.setenv(BACKEND_VARIABLE, cost_volume)  # each formulation of the cost volume keeps the layout
    model = CDVD_TSP(n_sequence=3, n_feat=4, n_resblock=1).eval()
    seen = convolution_inputs(model)
    # PWC-Net's coarsest level is 2 x 2 here: at 1 x 1 both layouts are the same, and PyTorch calls that NCHW
    frames = list(small_clip(3, height=128, width=128).unbind(1))
    with torch.no_grad():
        output = model.restore_center(
            *frames, options=StepOptions(channels_last_flow=flow, channels_last_restoration=restoration)
        )
    assert len(seen["flow_net"]) > 100 and len(seen["recons_net"]) == 18
    assert set(seen["flow_net"]) == {flow} and set(seen["recons_net"]) == {restoration}
    assert output.is_contiguous()


def test_forward_uses_the_models_step_options(double_model: CDVD_TSP) -> None:
    clip = small_clip(3, torch.float64, height=16, width=16)
    with torch.no_grad():
        plain = double_model(clip)[-2]
        double_model.step_options = StepOptions(batch_flows=True)
        try:
            with mock.patch.object(
                double_model.flow_net, "estimate_flow", wraps=double_model.flow_net.estimate_flow
            ) as flow:
                batched = double_model(clip)[-2]
        finally:
            double_model.step_options = StepOptions()
    assert flow.call_count == 1
    assert (batched - plain).abs().max() / plain.abs().max() < STEP_OPTIONS_BOUND
    assert torch.equal(batched, plain) or torch.get_num_threads() > 1  # exact on one thread (see above)
