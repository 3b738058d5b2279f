"""trainer/validation.py: the release's float PSNR during training (on numbers worked by hand), the images it
saved per window, and the rule that flags a collapsed validation."""

import math

import numpy as np
import pytest
import torch

from cdvd_tsp.logger.experiment import History
from cdvd_tsp.trainer.validation import (
    COLLAPSE_BELOW_INPUT_DB,
    PSNR_OF_IDENTICAL,
    SHAVE,
    collapse,
    float_psnr,
    window_images,
)


def test_the_float_psnr_shaves_4_pixels_and_takes_peak_1() -> None:
    assert SHAVE == 4
    target = torch.zeros(1, 3, 16, 16, dtype=torch.float64)
    output = target.clone()
    output[..., 4:12, 4:12] = 0.1  # the inner 8 x 8: an error of 0.1 everywhere
    output[..., :4, :] = 5.0  # the shaved border does not count
    assert float_psnr(output, target) == pytest.approx(20.0, abs=1e-12)  # -10 log10(0.01)
    half = target.clone()
    half[..., 4:8, 4:12] = 0.1  # half of the inner pixels
    assert float_psnr(half, target) == pytest.approx(-10 * math.log10(0.005), abs=1e-12)


def test_the_float_psnr_is_of_the_float_output_and_divides_by_the_range() -> None:
    target = torch.full((1, 1, 12, 12), 100.0, dtype=torch.float64)
    output = target + 2.55  # 0.01 of a 255 range; not rounded, not clamped
    assert float_psnr(output, target, rgb_range=255.0) == pytest.approx(40.0, abs=1e-6)
    assert float_psnr(target, target) == PSNR_OF_IDENTICAL == 100.0


def test_frames_too_small_to_shave_are_refused() -> None:
    with pytest.raises(ValueError, match=r"frames of \[8, 20\] pixels leave nothing after shaving 4 per side"):
        float_psnr(torch.zeros(1, 3, 8, 20), torch.zeros(1, 3, 8, 20))


def test_the_window_images_are_the_four_the_release_saved_as_uint8() -> None:
    frames = [torch.full((1, 3, 2, 2), value) for value in (0.5, 1.0, 300.0, -4.0)]
    images = window_images(*frames, rgb_range=255.0)
    assert list(images) == ["gt", "blur", "deblur_iter1", "deblur_iter2"]
    assert {kind: image.shape for kind, image in images.items()} == dict.fromkeys(images, (2, 2, 3))
    assert images["blur"].dtype == np.uint8
    assert [int(images[kind][0, 0, 0]) for kind in images] == [1, 0, 255, 0]  # x255/255, clamped, rounded


def test_a_collapse_is_a_psnr_not_finite_or_more_than_10_db_below_the_blurred_input() -> None:
    assert COLLAPSE_BELOW_INPUT_DB == 10.0
    # what the DEMO recipe's first epoch from scratch scored (input 24.62 dB): low, not collapsed
    assert collapse({"PSNR_iter1": 22.498, "PSNR_iter2": 21.055}, blurred=24.62) == ""
    assert collapse({"PSNR_iter1": 14.63, "PSNR_iter2": 14.63}, blurred=24.62) == ""  # just within 10 dB
    why = "not finite or more than 10 dB below the blurred input's"
    # what a resumed DEMO run once validated, with no warning
    assert collapse({"PSNR_iter1": -12.8, "PSNR_iter2": -28.0}, blurred=24.62) == f"PSNR_iter1 and PSNR_iter2 {why}"
    assert collapse({"PSNR_iter1": 25.0, "PSNR_iter2": 14.6}, blurred=24.62) == f"PSNR_iter2 {why}"
    for value in (math.nan, -math.inf, math.inf):
        assert collapse({"PSNR_iter1": 25.0, "PSNR_iter2": value}, blurred=24.62) == f"PSNR_iter2 {why}"


def test_a_psnr_that_is_not_a_number_is_never_the_best() -> None:
    """numpy's argmax takes NaN for the largest: model_best.pt would get a collapsed epoch's weights."""
    history = History(loss_names=["L1"], psnr=[21.0, math.nan, 23.0, -math.inf])
    assert history.best() == (23.0, 3)
    assert History(loss_names=["L1"], psnr=[21.0, math.nan]).best() == (21.0, 1)
