"""The protocol's PSNR and SSIM against cases with a known answer and an independent SSIM implementation."""

import math

import cv2
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from cdvd_tsp.utils.metrics import CROP_BORDER, MIN_SIZE, psnr, score_frame, ssim
from conftest import blurred, sharp_frames


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


# Other papers' conventions: the Y channel (BasicSR's test_y_channel) and the crop border.


def basicsr_y(image: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """BasicSR's to_y_channel, written from its formulas: uint8 -> float32 / 255, Y = 16 + 65.481 R + 128.553 G +
    24.966 B (in float64 by the dot product with a Python list), / 255 back to float32, x 255 (float32). With
    ``dtype=np.float64`` the same formulas without the float32 roundings."""
    rgb = image.astype(dtype) / 255.0
    y = rgb @ np.array([65.481, 128.553, 24.966]) + 16.0
    return (y / 255.0).astype(dtype) * dtype(255.0)


def basicsr_psnr(first: np.ndarray, second: np.ndarray, crop: int, dtype: type = np.float32) -> float:
    """BasicSR's calculate_psnr(..., crop_border=crop, test_y_channel=True)."""
    if crop:
        first, second = first[crop:-crop, crop:-crop], second[crop:-crop, crop:-crop]
    difference = basicsr_y(first, dtype).astype(np.float64) - basicsr_y(second, dtype).astype(np.float64)
    return 10.0 * math.log10(255.0 * 255.0 / np.mean(difference**2))


def basicsr_ssim(first: np.ndarray, second: np.ndarray, crop: int, dtype: type = np.float32) -> float:
    """BasicSR's calculate_ssim(..., crop_border=crop, test_y_channel=True): a 2-D 11 x 11 Gaussian (sigma 1.5)
    window, statistics kept where it lies inside the image, the SSIM map's mean."""
    if crop:
        first, second = first[crop:-crop, crop:-crop], second[crop:-crop, crop:-crop]
    a, b = basicsr_y(first, dtype).astype(np.float64), basicsr_y(second, dtype).astype(np.float64)
    kernel = cv2.getGaussianKernel(11, 1.5)
    window = np.outer(kernel, kernel)

    def filtered(plane: np.ndarray) -> np.ndarray:
        return cv2.filter2D(plane, -1, window)[5:-5, 5:-5]

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = filtered(a), filtered(b)
    var_a, var_b = filtered(a * a) - mu_a**2, filtered(b * b) - mu_b**2
    cov = filtered(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


@pytest.mark.parametrize("crop", [0, 4, 6])
@pytest.mark.parametrize("degrade", ["blurred", "noisy"])
def test_y_channel_metrics_equal_basicsr_convention(crop: int, degrade: str) -> None:
    sharp = sharp_frames(1, 45, 61, seed=8)[0]
    if degrade == "blurred":
        output = blurred(sharp)
    else:
        noise = np.random.default_rng(2).normal(0.0, 6.0, sharp.shape)
        output = np.clip(sharp + noise, 0, 255).astype(np.uint8)
    expected_psnr, expected_ssim = basicsr_psnr(output, sharp, crop), basicsr_ssim(output, sharp, crop)
    assert 20.0 < expected_psnr < 60.0 and 0.5 < expected_ssim < 0.999
    actual_psnr = psnr(output, sharp, channel="y", crop_border=crop)
    actual_ssim = ssim(output, sharp, channel="y", crop_border=crop)
    # BasicSR rounds Y to float32, which moves its PSNR by 1e-6 to 3e-6 dB here; the same formulas in float64 agree
    # to rounding error
    assert actual_psnr == pytest.approx(expected_psnr, abs=1e-5)
    assert actual_ssim == pytest.approx(expected_ssim, abs=1e-6)
    assert actual_psnr == pytest.approx(basicsr_psnr(output, sharp, crop, np.float64), abs=1e-9)
    assert actual_ssim == pytest.approx(basicsr_ssim(output, sharp, crop, np.float64), abs=1e-10)
    # and the Y result is not the RGB one: the test tells the channels apart
    assert abs(psnr(output, sharp, crop_border=crop) - expected_psnr) > 1e-3


def test_luma_is_bt601_on_the_16_to_235_scale() -> None:
    from cdvd_tsp.utils.metrics import luma

    corners = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 0, 255]]], dtype=np.uint8)
    np.testing.assert_allclose(luma(corners), [[16.0, 235.0, 16.0 + 65.481, 16.0 + 24.966]], atol=1e-12)


def ring_pair() -> tuple[np.ndarray, np.ndarray]:
    """21 x 21 grey images: the output is 10 brighter on the outermost ring and 21 brighter at the center pixel."""
    reference = np.full((21, 21, 3), 100, dtype=np.uint8)
    output = reference.copy()
    output[0], output[-1], output[:, 0], output[:, -1] = 110, 110, 110, 110
    output[10, 10] = 121
    return output, reference


@pytest.mark.parametrize(
    ("crop", "channel", "expected"),
    [
        # crop 0: MSE = (80 ring pixels x 10^2 + 21^2) / 21^2 = 8441 / 441
        (0, "rgb", 35.31125050066067),
        # crop 1: only the center pixel differs, MSE = 441 / 19^2; crop 2: 441 / 17^2
        (1, "rgb", 47.261489733057296),
        (2, "rgb", 46.2953961415662),
        # Y of a grey step d is d x 219 / 255 (the weights sum to 219)
        (0, "y", 36.6331718125374),
        (1, "y", 48.58341104493404),
    ],
)
def test_crop_border_gives_the_hand_computed_psnr(crop: int, channel: str, expected: float) -> None:
    output, reference = ring_pair()
    assert psnr(output, reference, channel=channel, crop_border=crop) == pytest.approx(expected, abs=1e-9)


def test_defaults_are_the_protocol_and_unchanged() -> None:
    """The numbers the metrics gave before channel and crop_border existed (written out from that version)."""
    sharp = sharp_frames(1, 40, 56, seed=3)[0]
    output = blurred(sharp)
    assert psnr(output, sharp) == 41.46585130410307
    assert ssim(output, sharp) == 0.9754456061876268
    assert psnr(output, sharp) == psnr(output, sharp, channel="rgb", crop_border=CROP_BORDER)
    assert score_frame(output, output, sharp) == score_frame(output, output, sharp, "rgb", CROP_BORDER)


def test_the_smallest_size_follows_the_crop() -> None:
    from cdvd_tsp.utils.metrics import min_size

    image = np.zeros((11, 11, 3), dtype=np.uint8)
    assert min_size(0) == 11 and min_size() == MIN_SIZE
    assert psnr(image, image, crop_border=0) == math.inf
    with pytest.raises(ValueError, match="at least 13 x 13"):
        psnr(image, image, crop_border=1)


@pytest.mark.parametrize(("channel", "crop", "message"), [("ycbcr", 4, "channel"), ("rgb", -1, "crop_border")])
def test_unknown_channel_or_negative_crop_is_refused(channel: str, crop: int, message: str) -> None:
    image = np.zeros((MIN_SIZE, MIN_SIZE, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=message):
        ssim(image, image, channel=channel, crop_border=crop)
