"""The temporal sharpness prior (model/prior.py): the box filter's border, the formula on numbers worked by hand,
which masks zero it, and that it stays out of the gradient (docs/faithfulness.md §5)."""

import math

import pytest
import torch

from cdvd_tsp.model.prior import box_filter, temporal_sharpness_prior


def test_the_box_filter_divides_by_25_at_the_border_too() -> None:
    ones = torch.ones(1, 2, 7, 7, dtype=torch.float64)
    mean = box_filter(ones)
    assert mean.shape == ones.shape
    assert torch.equal(mean[0, 0], mean[0, 1])  # per channel, alike
    assert mean[0, 0, 3, 3].item() == pytest.approx(1.0, abs=1e-15)  # the whole window inside
    assert mean[0, 0, 0, 0].item() == pytest.approx(9 / 25, abs=1e-15)  # a corner: 3 x 3 of the 5 x 5 inside
    assert mean[0, 0, 0, 3].item() == pytest.approx(15 / 25, abs=1e-15)  # an edge: 3 x 5
    assert mean[0, 0, 1, 1].item() == pytest.approx(16 / 25, abs=1e-15)


def test_the_box_filter_keeps_channels_apart() -> None:
    image = torch.zeros(1, 3, 5, 5, dtype=torch.float64)
    image[0, 1, 2, 2] = 25.0
    mean = box_filter(image)
    assert torch.equal(mean[0, 0], torch.zeros(5, 5, dtype=torch.float64))
    assert torch.allclose(mean[0, 1], torch.ones(5, 5, dtype=torch.float64))


def test_the_prior_is_exp_of_minus_the_root_of_half_the_summed_squares() -> None:
    center = torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    before, after = center.clone(), center.clone()
    before[0, 0, 1, 2] = 0.5  # one channel of one pixel differs in each neighbour
    after[0, 2, 1, 2] = -0.5
    after[0, 1, 3, 3] = 0.6
    prior = temporal_sharpness_prior([before, center, after], [None, None, None], smooth=False)
    assert prior.shape == (1, 1, 4, 4)
    # (0.25 + 0.25) / 2 = 0.25, its root 0.5
    assert prior[0, 0, 1, 2].item() == pytest.approx(math.exp(-0.5), abs=1e-15)
    assert prior[0, 0, 3, 3].item() == pytest.approx(math.exp(-math.sqrt(0.36 / 2)), abs=1e-15)
    untouched = torch.ones(4, 4, dtype=torch.float64)
    untouched[1, 2] = untouched[3, 3] = 0
    assert torch.equal(prior[0, 0][untouched.bool()], torch.ones(14, dtype=torch.float64))  # agree: S = 1


def test_the_middle_frame_is_the_center() -> None:
    frames = [torch.full((1, 1, 2, 2), value, dtype=torch.float64) for value in (0.0, 1.0, 3.0)]
    prior = temporal_sharpness_prior(frames, [None] * 3, smooth=False)
    # against the middle frame (1.0): (1 + 4) / 2; against the first it would be (1 + 9) / 2
    assert prior[0, 0, 0, 0].item() == pytest.approx(math.exp(-math.sqrt(2.5)), abs=1e-15)


def test_smoothing_filters_the_frames_before_comparing_them() -> None:
    center = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    neighbour = center.clone()
    neighbour[0, 0, 2, 2] = 2.5
    prior = temporal_sharpness_prior([neighbour, center, center], [None] * 3)
    # the spike spreads to 2.5 / 25 = 0.1 over its 5 x 5 window: (0.01 / 2) everywhere here
    assert torch.allclose(prior, torch.full_like(prior, math.exp(-math.sqrt(0.005))), atol=1e-15)


def test_a_pixel_is_zeroed_where_the_product_of_the_masks_is_zero_in_every_channel() -> None:
    frames = [torch.zeros(1, 3, 1, 3, dtype=torch.float64) for _ in range(3)]
    first = torch.ones(1, 3, 1, 3, dtype=torch.float64)
    second = torch.ones(1, 3, 1, 3, dtype=torch.float64)
    first[0, :, 0, 0] = 0  # pixel 0: invalid in every channel of one mask
    first[0, 0, 0, 1] = 0  # pixel 1: one channel of one mask invalid: kept
    first[0, :2, 0, 2] = 0  # pixel 2: the masks are invalid in complementary channels: their product is zero
    second[0, 2, 0, 2] = 0
    prior = temporal_sharpness_prior(frames, [first, None, second], smooth=False)
    assert prior[0, 0, 0].tolist() == [0.0, 1.0, 0.0]


def test_the_prior_is_outside_the_gradient() -> None:
    frames = [torch.rand(1, 3, 6, 6, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    prior = temporal_sharpness_prior(frames, [None] * 3)
    assert not prior.requires_grad
