"""The protocol's PSNR and SSIM against cases with a known answer and an independent SSIM implementation."""

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity
from tiny_clips import blurred, sharp_frames

from utils.metrics import CROP_BORDER, MIN_SIZE, psnr, score_frame, ssim


@pytest.fixture
def sharp() -> np.ndarray:
    return sharp_frames(1, 40, 56, seed=3)[0]


def test_identical_images_give_infinite_psnr_and_ssim_one(sharp: np.ndarray) -> None:
    assert psnr(sharp, sharp.copy()) == math.inf
    assert ssim(sharp, sharp.copy()) == pytest.approx(1.0, abs=1e-12)


def test_a_known_mse_gives_the_known_psnr() -> None:
    rng = np.random.default_rng(0)
    reference = rng.integers(10, 240, (30, 40, 3), dtype=np.uint8)
    signs = rng.choice(np.array([-3, 3]), size=reference.shape)
    output = (reference.astype(np.int16) + signs).astype(np.uint8)  # |difference| = 3 everywhere: MSE = 9
    assert psnr(output, reference) == pytest.approx(20 * math.log10(255 / 3), abs=1e-12)


def test_psnr_is_measured_after_cropping_four_pixels_on_every_side(sharp: np.ndarray) -> None:
    damaged = sharp.copy()
    damaged[:CROP_BORDER] = 0
    damaged[-CROP_BORDER:] = 255
    damaged[:, :CROP_BORDER] = 0
    damaged[:, -CROP_BORDER:] = 255
    assert psnr(damaged, sharp) == math.inf
    assert ssim(damaged, sharp) == pytest.approx(1.0, abs=1e-12)
    damaged[CROP_BORDER, CROP_BORDER] = sharp[CROP_BORDER, CROP_BORDER] ^ 0xFF
    assert psnr(damaged, sharp) < math.inf


def test_ssim_equals_the_matlab_style_reference_implementation(sharp: np.ndarray) -> None:
    output = blurred(sharp)
    crop = (slice(CROP_BORDER, -CROP_BORDER), slice(CROP_BORDER, -CROP_BORDER))
    expected = structural_similarity(
        sharp[crop],
        output[crop],
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
        channel_axis=2,
    )
    assert 0.5 < expected < 0.99  # a case that exercises the formula, not a trivial one
    assert ssim(output, sharp) == pytest.approx(expected, abs=1e-10)


def test_psnr_is_computed_in_float64_without_uint8_wraparound() -> None:
    reference = np.zeros((MIN_SIZE, MIN_SIZE, 3), dtype=np.uint8)
    output = np.full_like(reference, 255)
    assert psnr(output, reference) == pytest.approx(0.0, abs=1e-12)


def test_score_frame_scores_output_and_blurred_input_against_the_sharp_frame(sharp: np.ndarray) -> None:
    blurry = blurred(sharp)
    scores = score_frame(sharp, blurry, sharp)
    assert (scores.psnr, scores.ssim) == (math.inf, pytest.approx(1.0))
    assert scores.input_psnr == psnr(blurry, sharp)
    assert scores.input_ssim == ssim(blurry, sharp)


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        ((20, 20, 3), (20, 21, 3), "differ in shape"),
        ((MIN_SIZE - 1, 30, 3), (MIN_SIZE - 1, 30, 3), "at least"),
    ],
)
def test_mismatched_or_too_small_images_are_refused(first: tuple, second: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        psnr(np.zeros(first, np.uint8), np.zeros(second, np.uint8))


def test_float_images_are_refused() -> None:
    image = np.zeros((MIN_SIZE, MIN_SIZE, 3))
    with pytest.raises(ValueError, match="uint8"):
        ssim(image, image)
