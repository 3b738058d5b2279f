"""The loss spec parser and HEM (docs/faithfulness.md §8) on hand-made cases."""

import io

import pytest
import torch
import torch.nn.functional as F

from cdvd_tsp.loss import Loss, parse_loss_spec
from cdvd_tsp.loss.hem import HEM
from cdvd_tsp.utils.atomic import torch_bytes
from cdvd_tsp.utils.errors import UserError


def test_spec_parses_weights_and_types() -> None:
    terms = parse_loss_spec("1*L1+2*HEM")
    assert [(term.weight, term.name) for term in terms] == [(1.0, "L1"), (2.0, "HEM")]
    assert Loss("1*L1+2*HEM").names == ["L1", "HEM", "Total"]
    assert Loss("0.5*MSE").names == ["MSE"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("L1", "'L1' is not a term"),
        ("1*L1+", "'' is not a term"),
        ("1*L1*2", "'1\\*L1\\*2' is not a term"),
        ("x*L1", "weight 'x' of 'x\\*L1' is not a number"),
        ("-1*L1", "must be a positive finite number"),
        ("1*VGG54", "unknown loss 'VGG54' \\(known: L1, MSE, HEM\\)"),
        ("1*L1+1*L1", "'L1' appears twice"),
    ],
)
def test_bad_spec_is_refused_with_the_reason(spec: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_loss_spec(spec)


def hand_made_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """Two samples of 12 channels, 4 x 4 pixels, with known per-pixel residuals summed over the channels.

    Sample 0: pixel p (row-major) has residual p + 1, all of it in channel p % 12.
    Sample 1: the reverse order, spread evenly over the 12 channels.
    """
    y = torch.zeros(2, 12, 4, 4)
    x = torch.zeros(2, 12, 4, 4)
    for pixel in range(16):
        row, column = divmod(pixel, 4)
        x[0, pixel % 12, row, column] = pixel + 1
        x[1, :, row, column] = (16 - pixel) / 12
    return x, y


def test_hem_selects_pixels_above_the_median_rank_per_sample() -> None:
    x, y = hand_made_pair()
    mask = HEM(random_share=0.0).mask(x, y)
    assert mask.shape == (2, 1, 4, 4)
    # rank int(0.5 * 16) = 8 of the descending residuals is the 9th largest: residual 8; strictly above it: 9..16
    expected_0 = (torch.arange(1, 17) > 8).float().reshape(4, 4)
    assert torch.equal(mask[0, 0], expected_0)
    assert torch.equal(mask[1, 0], expected_0.flip(0).flip(1))  # one mask per sample, from its own residuals


def test_hem_ties_at_the_threshold_are_not_hard() -> None:
    x = torch.ones(1, 12, 4, 4)
    x[0, :, 0, 0] = 2.0  # one pixel above, fifteen tied at the threshold value
    mask = HEM(random_share=0.0).mask(x, torch.zeros_like(x))
    assert mask.sum() == 1 and mask[0, 0, 0, 0] == 1


def test_hem_adds_a_random_tenth_of_the_pixels_reproducibly() -> None:
    x = torch.rand(3, 12, 20, 20, generator=torch.Generator().manual_seed(0))
    y = torch.zeros_like(x)
    hem = HEM()
    hem.reseed(7)
    hard = HEM(random_share=0.0).mask(x, y)
    mask = hem.mask(x, y)
    extra = mask - hard
    assert torch.all(extra >= 0)  # the hard pixels are all kept
    random_count = int(0.1 * 400)  # 40 pixels chosen, some of which may already be hard
    for sample in range(3):
        assert 0 < extra[sample].sum() <= random_count
        assert hard[sample].sum() == 200  # 400 distinct residuals: the 200 above the 201st largest (rank 200)
    hem.reseed(7)
    assert torch.equal(hem.mask(x, y), mask)
    hem.reseed(8)
    assert not torch.equal(hem.mask(x, y), mask)


def test_hem_random_pixels_are_exactly_a_tenth_and_uniform() -> None:
    x = torch.zeros(2, 12, 10, 10)  # no residual: nothing is hard, only the random pixels count
    hem = HEM()
    counts = torch.zeros(100)
    for seed in range(200):
        hem.reseed(seed)
        mask = hem.mask(x, x)
        assert mask.sum(dim=(1, 2, 3)).tolist() == [10.0, 10.0]
        counts += mask[0, 0].flatten()
    assert counts.min() > 5 and counts.max() < 40  # each pixel about 20 times in 200 draws of 10 of 100


def test_hem_counts_round_down_on_an_odd_number_of_pixels() -> None:
    # 7 x 7 = 49 pixels: int(0.1 * 49) = 4 random pixels and int(0.5 * 49) = 24 hard ones (not 5 and 25)
    x = torch.zeros(1, 3, 7, 7)
    assert HEM().mask(x, x).sum().item() == 4
    y = torch.arange(49, dtype=torch.float32).reshape(1, 1, 7, 7).expand(1, 3, 7, 7)
    assert HEM(random_share=0.0).mask(x, y).sum().item() == 24


def test_hem_loss_is_l1_mean_of_masked_tensors_over_all_elements() -> None:
    x, y = hand_made_pair()
    x.requires_grad_(True)
    hem = HEM()
    hem.reseed(3)
    mask = hem.mask(x.detach(), y)
    hem.reseed(3)
    value = hem(x, y)
    assert torch.allclose(value, (x * mask - y * mask).abs().sum() / x.numel())
    value.backward()
    assert torch.equal(x.grad != 0, (mask.expand_as(x) > 0) & (x.detach() != y))


def test_weighted_sum_and_logged_values() -> None:
    x = torch.rand(2, 12, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.rand(2, 12, 8, 8, generator=torch.Generator().manual_seed(2))
    loss = Loss("1*L1+2*HEM")
    loss.reseed(5)
    total, values = loss(x, y)
    hem = HEM()
    hem.reseed(5)
    expected_hem = 2 * hem(x, y)
    assert torch.allclose(values, torch.stack([F.l1_loss(x, y), expected_hem, F.l1_loss(x, y) + expected_hem]))
    assert torch.allclose(total, values[-1])
    mse_total, mse_values = Loss("3*MSE")(x, y)
    assert torch.allclose(mse_total, 3 * F.mse_loss(x, y)) and mse_values.shape == (1,)


def test_hem_random_state_continues_the_masks_where_they_were() -> None:
    """A commit inside an epoch saves HEM's generator as it is; a fresh loss continues the same masks from it."""
    x = torch.zeros(2, 12, 10, 10)  # no residual: only the random pixels are in the masks
    loss = Loss("1*L1+2*HEM")
    loss.reseed(11)
    first = loss.functions[1].mask(x, x)  # the epoch's first step draws its mask
    state = loss.random_state()
    assert state[0] is None and state[1]["seed"] == 11
    expected = [loss.functions[1].mask(x, x) for _ in range(2)]  # what the uninterrupted run draws next
    assert not torch.equal(expected[0], first)

    resumed = Loss("1*L1+2*HEM")
    resumed.reseed(11)  # a reseed alone starts the epoch over: it repeats the first mask
    assert torch.equal(resumed.functions[1].mask(x, x), first)
    resumed.set_random_state(torch.load(io.BytesIO(torch_bytes(state)), weights_only=True))  # as state.pt holds it
    assert all(torch.equal(resumed.functions[1].mask(x, x), mask) for mask in expected)
    with pytest.raises(ValueError, match="2 random states for a loss of 1 terms"):
        Loss("1*L1").set_random_state(state)
