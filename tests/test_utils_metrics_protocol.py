"""The evaluation protocol's numbers written out as numbers (docs/faithfulness.md §9): a 4 px crop on every side,
PSNR with a 255 peak, and the smallest image the metrics take. Nothing here reads the module's constants, so these
tests fail if a constant changes."""

import math

import numpy as np
import pytest

from cdvd_tsp.utils.metrics import psnr, ssim

SIZE = 32


def flat(value: int = 100, height: int = SIZE, width: int = SIZE) -> np.ndarray:
    return np.full((height, width, 3), value, np.uint8)


def test_differences_in_the_outer_4_pixels_are_not_measured() -> None:
    reference = flat()
    output = reference.copy()
    output[:4] = output[-4:] = 255  # rows 0-3 and 28-31
    output[:, :4] = output[:, -4:] = 0  # columns 0-3 and 28-31
    assert psnr(output, reference) == math.inf
    assert ssim(output, reference) == pytest.approx(1.0, abs=1e-12)


def test_the_fifth_row_is_measured_and_gives_the_hand_computed_psnr() -> None:
    reference = flat()
    output = reference.copy()
    output[4, 4:28] = 110  # row 4, inside the crop: 24 pixels x 3 channels off by 10 among 24 x 24 x 3 values
    # MSE = 72 * 10^2 / 1728 = 4.1667; PSNR = 20 log10(255 / sqrt(MSE)) = 41.9329 dB. A 3 px crop would give
    # 72 * 100 / 2028 -> 42.6282 dB, a 5 px crop would not see the row at all (inf).
    assert psnr(output, reference) == pytest.approx(41.932916025795166, rel=1e-12)
    assert psnr(output, reference) == pytest.approx(20 * math.log10(255 / math.sqrt(7200 / 1728)), rel=1e-12)
    assert ssim(output, reference) < 1.0


def test_the_smallest_image_is_19_pixels_the_crop_and_one_ssim_window() -> None:
    assert psnr(flat(height=19, width=19), flat(height=19, width=19)) == math.inf  # 2 x 4 + 11
    for height, width in ((18, 19), (19, 18)):
        with pytest.raises(ValueError, match="at least 19 x 19"):
            psnr(flat(height=height, width=width), flat(height=height, width=width))
