"""`CDVD_TSP.align_both`: the batched path (one flow-net call and one warp on a batch of two) pairs each neighbour
with its own flow, from the center to that neighbour, exactly as the two separate calls do, in float64.

The real PWC-Net with random weights gives flows under a pixel, whose masks are nearly all ones and nearly the same
for both neighbours; a stand-in flow network (`PairFlow`: a flow that depends on which frame is first and which
second, several pixels large) makes every pairing visible: the neighbours swapped, a flow of the other direction,
or one neighbour's mask given to the other changes the outputs.
"""

from functools import cache

import pytest
import torch
from torch import Tensor

from cdvd_tsp.model.cdvd_tsp import CDVD_TSP, StepOptions

BOUND = 1e-12
"""float64: the batched and the separate calls differ by the order of the convolutions' sums only."""


class PairFlow(torch.nn.Module):
    """Stands for PWC-Net: flow / 20 for (first, second), per sample, asymmetric in its two frames."""

    def forward(self, first: Tensor, second: Tensor) -> Tensor:
        return 0.4 * (second[:, :2] - first[:, 1:]) + 0.1 * first[:, 2:3]


def frames(shape: tuple[int, int, int], seed: int) -> list[Tensor]:
    batch, height, width = shape
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(batch, 3, height, width, generator=generator, dtype=torch.float64) for _ in range(3)]


@cache
def model(n_sequence: int = 3, stand_in: bool = False) -> CDVD_TSP:
    """The full PWC-Net (or `PairFlow` instead) and a small restoration net, in float64; built once each."""
    with torch.random.fork_rng():
        torch.manual_seed(4)
        built = CDVD_TSP(n_sequence=n_sequence, n_feat=4, n_resblock=1).double().eval()
    if stand_in:
        built.flow_net.moduleNetwork = PairFlow()
    return built


def separately(net: CDVD_TSP, previous: Tensor, center: Tensor, following: Tensor) -> list[Tensor]:
    """What align_both must give: each neighbour warped with the flow from the center to it, and its mask."""
    flow_net = net.flow_net
    previous_aligned, previous_mask = flow_net.warp(previous, flow_net.estimate_flow(center, previous))
    following_aligned, following_mask = flow_net.warp(following, flow_net.estimate_flow(center, following))
    return [previous_aligned, previous_mask, following_aligned, following_mask]


def assert_close(actual: Tensor, expected: Tensor, what: str) -> None:
    assert actual.shape == expected.shape, what
    assert (actual - expected).abs().max() <= BOUND * max(expected.abs().max().item(), 1.0), what


NAMES = ("previous aligned", "previous mask", "following aligned", "following mask")


@pytest.mark.parametrize("shape", [(2, 20, 36)], ids=lambda shape: "x".join(map(str, shape)))
def test_batched_alignment_is_the_separate_one_with_the_real_flow_net(shape: tuple[int, int, int]) -> None:
    net = model()
    previous, center, following = frames(shape, seed=sum(shape))
    with torch.no_grad():
        expected = separately(net, previous, center, following)
        for batch in (False, True):
            for name, actual, wanted in zip(
                NAMES, net.align_both(previous, center, following, batch), expected, strict=True
            ):
                assert_close(actual, wanted, f"{name}, batch={batch}")
    assert not torch.allclose(expected[0], expected[2])  # the two neighbours' outputs can be told apart


@pytest.mark.parametrize("shape", [(1, 16, 24), (2, 24, 16), (3, 12, 40)], ids=lambda shape: "x".join(map(str, shape)))
def test_batched_alignment_pairs_each_neighbour_with_its_own_flow(shape: tuple[int, int, int]) -> None:
    net = model(stand_in=True)
    previous, center, following = frames(shape, seed=sum(shape) + 1)
    with torch.no_grad():
        expected = separately(net, previous, center, following)
        # the checks below see any other pairing: every output differs from the other neighbour's, and from what a
        # flow of the other direction (neighbour to center) would give
        backward = [
            net.flow_net.warp(frame, net.flow_net.estimate_flow(frame, center)) for frame in (previous, following)
        ]
        for ours, other in ((expected[0], expected[2]), (expected[1], expected[3])):
            assert not torch.allclose(ours, other)
        for index, (aligned, mask) in enumerate(backward):
            assert not torch.allclose(aligned, expected[2 * index]) and not torch.equal(mask, expected[2 * index + 1])
        for mask in (expected[1], expected[3]):
            assert 0.05 < 1 - mask.mean() < 0.95  # the flows reach outside the frame: masks have zeros and ones
        for batch in (False, True):
            for name, actual, wanted in zip(
                NAMES, net.align_both(previous, center, following, batch), expected, strict=True
            ):
                assert_close(actual, wanted, f"{name}, batch={batch}")


@pytest.mark.parametrize("n_sequence", [3, 5, 7])
def test_batched_flows_give_every_stage_output_of_the_plain_cascade(n_sequence: int) -> None:
    net = model(n_sequence, stand_in=True)
    clip = torch.rand(
        2, n_sequence, 3, 16, 24, generator=torch.Generator().manual_seed(n_sequence), dtype=torch.float64
    )
    with torch.no_grad():
        plain = net.forward_stages(clip)
        net.step_options = StepOptions(batch_flows=True)
        batched = net.forward_stages(clip)
        net.step_options = StepOptions()
        reversed_plain = net.forward_stages(clip.flip(1))  # not symmetric in time: a swap of neighbours shows
    assert [len(stage) for stage in batched] == [len(stage) for stage in plain]
    for stage, (ours, theirs) in enumerate(zip(batched, plain, strict=True)):
        for index, (actual, expected) in enumerate(zip(ours, theirs, strict=True)):
            assert_close(actual, expected, f"stage {stage + 1}, output {index}")
    assert not torch.allclose(reversed_plain[-1][0], plain[-1][0])
