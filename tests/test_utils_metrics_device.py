"""The torch metrics of utils/metrics_device.py against the numpy protocol metrics of utils/metrics.py."""

import math

import cv2
import numpy as np
import pytest
import torch

from cdvd_tsp.utils import metrics_device
from cdvd_tsp.utils.metrics import CROP_BORDER, MIN_SIZE, SSIM_SIGMA, SSIM_WINDOW, FrameScores, psnr, score_frame, ssim
from cdvd_tsp.utils.metrics_device import psnr_tensor, score_frame_tensor, ssim_tensor
from conftest import blurred, sharp_frames

GAUSSIAN = cv2.getGaussianKernel(SSIM_WINDOW, SSIM_SIGMA, cv2.CV_64F)

PSNR_TOLERANCE = 1e-6  # dB
SSIM_TOLERANCE = 1e-8


def shifted(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.roll(image, (1, 2), axis=(0, 1)))


def noisy(image: np.ndarray, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, 8.0, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def random_image(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def pair(kind: str, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(output, reference) of one kind: unrelated random images, or a smooth scene and a degraded copy."""
    if kind == "random":
        return random_image(height, width, 1), random_image(height, width, 2)
    sharp = sharp_frames(1, height, width, seed=5)[0]
    degrade = {"blurred": blurred, "shifted": shifted, "noisy": noisy}[kind]
    return degrade(sharp), sharp


def assert_matches_numpy(output: np.ndarray, reference: np.ndarray, device: str = "cpu") -> None:
    first, second = torch.from_numpy(output).to(device), torch.from_numpy(reference).to(device)
    psnr_value, ssim_value = psnr_tensor(first, second), ssim_tensor(first, second)
    for value in (psnr_value, ssim_value):
        assert value.shape == () and value.dtype == torch.float64 and value.device == first.device
    assert abs(psnr_value.item() - psnr(output, reference)) <= PSNR_TOLERANCE
    assert abs(ssim_value.item() - ssim(output, reference)) <= SSIM_TOLERANCE


@pytest.mark.parametrize("kind", ["random", "blurred", "shifted", "noisy"])
@pytest.mark.parametrize(("height", "width"), [(MIN_SIZE, MIN_SIZE), (37, 51), (48, 64), (MIN_SIZE, 45)])
def test_psnr_and_ssim_equal_the_numpy_protocol_metrics(kind: str, height: int, width: int) -> None:
    output, reference = pair(kind, height, width)
    assert 0.0 < psnr(output, reference) < 50.0  # a case with a finite, non-trivial answer
    assert_matches_numpy(output, reference)


def test_a_720p_frame_gives_the_numpy_protocol_metrics() -> None:
    sharp = sharp_frames(1, 720, 1280, seed=7)[0]
    output = blurred(sharp)
    assert 0.5 < ssim(output, sharp) < 0.99
    assert_matches_numpy(output, sharp)


def test_the_metrics_differ_from_the_plain_uncropped_ones() -> None:
    """A guard for the equality tests: the cases they use tell the protocol's crop apart from none."""
    output, reference = pair("blurred", 48, 64)
    difference = output.astype(np.float64) - reference.astype(np.float64)
    uncropped = 20.0 * math.log10(255.0 / math.sqrt(np.mean(difference * difference)))
    assert abs(psnr_tensor(torch.from_numpy(output), torch.from_numpy(reference)).item() - uncropped) > 1e-3


def test_equal_images_give_infinite_psnr_and_ssim_one() -> None:
    image = torch.from_numpy(sharp_frames(1, 40, 56, seed=3)[0])
    assert psnr_tensor(image, image.clone()).item() == math.inf
    assert ssim_tensor(image, image.clone()).item() == pytest.approx(1.0, abs=1e-12)


def test_differences_inside_the_crop_border_are_ignored() -> None:
    sharp = sharp_frames(1, 40, 56, seed=3)[0]
    damaged = sharp.copy()
    damaged[:CROP_BORDER] = 0
    damaged[-CROP_BORDER:, :] = 255
    damaged[:, :CROP_BORDER] = 0
    damaged[:, -CROP_BORDER:] = 255
    first, second = torch.from_numpy(damaged), torch.from_numpy(sharp)
    assert psnr_tensor(first, second).item() == math.inf
    assert ssim_tensor(first, second).item() == pytest.approx(1.0, abs=1e-12)
    damaged[CROP_BORDER, CROP_BORDER] ^= 0xFF
    assert psnr_tensor(first, second).item() < math.inf  # ``first`` shares the array's memory
    assert_matches_numpy(damaged, sharp)


@pytest.mark.parametrize(("height", "width"), [(MIN_SIZE, MIN_SIZE), (41, 58)])
def test_score_frame_tensor_equals_score_frame_field_by_field(height: int, width: int) -> None:
    sharp = sharp_frames(1, height, width, seed=11)[0]
    output, blurry = noisy(sharp), blurred(sharp)
    scores = score_frame_tensor(*(torch.from_numpy(image) for image in (output, blurry, sharp)))
    assert scores.shape == (4,) and scores.dtype == torch.float64
    actual, expected = FrameScores(*scores.tolist()), score_frame(output, blurry, sharp)
    assert abs(actual.psnr - expected.psnr) <= PSNR_TOLERANCE
    assert abs(actual.ssim - expected.ssim) <= SSIM_TOLERANCE
    assert abs(actual.input_psnr - expected.input_psnr) <= PSNR_TOLERANCE
    assert abs(actual.input_ssim - expected.input_ssim) <= SSIM_TOLERANCE
    assert actual.psnr != actual.input_psnr and actual.ssim != actual.input_ssim  # the two pairs are not mixed up


def test_score_frame_tensor_of_the_sharp_frame_itself_is_infinite_and_one() -> None:
    sharp = sharp_frames(1, 40, 56, seed=3)[0]
    blurry = blurred(sharp)
    scores = FrameScores(*score_frame_tensor(*(torch.from_numpy(image) for image in (sharp, blurry, sharp))).tolist())
    assert scores.psnr == math.inf
    assert scores.ssim == pytest.approx(1.0, abs=1e-12)
    assert abs(scores.input_psnr - psnr(blurry, sharp)) <= PSNR_TOLERANCE
    assert abs(scores.input_ssim - ssim(blurry, sharp)) <= SSIM_TOLERANCE


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        (torch.zeros(20, 20, 3, dtype=torch.uint8), torch.zeros(20, 21, 3, dtype=torch.uint8), "differ in shape"),
        (torch.zeros(MIN_SIZE, MIN_SIZE, 3), torch.zeros(MIN_SIZE, MIN_SIZE, 3), "uint8"),
        (torch.zeros(30, 30, 3, dtype=torch.uint8), torch.zeros(30, 30, 3, dtype=torch.int16), "uint8"),
        (
            torch.zeros(MIN_SIZE - 1, 30, 3, dtype=torch.uint8),
            torch.zeros(MIN_SIZE - 1, 30, 3, dtype=torch.uint8),
            "at least",
        ),
        (
            torch.zeros(30, MIN_SIZE - 1, 3, dtype=torch.uint8),
            torch.zeros(30, MIN_SIZE - 1, 3, dtype=torch.uint8),
            "at least",
        ),
        (torch.zeros(30, 30, dtype=torch.uint8), torch.zeros(30, 30, dtype=torch.uint8), "H x W x C"),
    ],
)
def test_mismatched_or_unsuitable_images_are_refused(first: torch.Tensor, second: torch.Tensor, message: str) -> None:
    for metric in (psnr_tensor, ssim_tensor):
        with pytest.raises(ValueError, match=message):
            metric(first, second)
    with pytest.raises(ValueError, match=message):
        score_frame_tensor(first, first, second)
    with pytest.raises(ValueError, match=message):
        score_frame_tensor(second, first, second)  # the blurred input is checked as well


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.filterwarnings("ignore:Synchronization debug mode is a prototype")
def test_the_metrics_on_the_gpu_equal_the_numpy_ones_without_synchronizing() -> None:
    sharp = sharp_frames(1, 64, 96, seed=13)[0]
    output, blurry = noisy(sharp), blurred(sharp)
    assert_matches_numpy(output, sharp, "cuda")
    images = [torch.from_numpy(image).cuda() for image in (output, blurry, sharp)]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any synchronizing call inside raises
    try:
        scores = score_frame_tensor(*images)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert scores.device == images[0].device and scores.dtype == torch.float64
    actual, expected = FrameScores(*scores.tolist()), score_frame(output, blurry, sharp)
    for field, tolerance in zip(
        ("psnr", "ssim", "input_psnr", "input_ssim"), (PSNR_TOLERANCE, SSIM_TOLERANCE) * 2, strict=True
    ):
        assert abs(getattr(actual, field) - getattr(expected, field)) <= tolerance


def test_the_cuda_filtering_by_convolution_equals_the_shifted_sums() -> None:
    """CUDA filters by convolution, other devices by shifted sums: both give the Gaussian 'valid' filter."""
    planes = torch.from_numpy(random_image(40, 57, seed=3)).permute(2, 0, 1).to(torch.float64)
    by_convolution, by_sums = metrics_device._convolved(planes), metrics_device._shifted_sums(planes)
    expected = cv2.sepFilter2D(planes[0].numpy(), cv2.CV_64F, GAUSSIAN, GAUSSIAN)[5:-5, 5:-5]
    assert by_convolution.shape == by_sums.shape == (3, 30, 47)
    assert (by_convolution - by_sums).abs().max().item() < 1e-12
    assert np.abs(by_sums[0].numpy() - expected).max() < 1e-12


@pytest.mark.parametrize("channel", ["rgb", "y"])
@pytest.mark.parametrize("crop", [0, 2, 4, 7])
@pytest.mark.parametrize("kind", ["blurred", "noisy", "random"])
def test_channel_and_crop_options_equal_the_numpy_metrics(channel: str, crop: int, kind: str) -> None:
    output, reference = pair(kind, 41, 53)
    first, second = torch.from_numpy(output), torch.from_numpy(reference)
    options = {"channel": channel, "crop_border": crop}
    assert abs(psnr_tensor(first, second, **options).item() - psnr(output, reference, **options)) <= PSNR_TOLERANCE
    assert abs(ssim_tensor(first, second, **options).item() - ssim(output, reference, **options)) <= SSIM_TOLERANCE
    blurry = blurred(reference)
    scores = FrameScores(*score_frame_tensor(first, torch.from_numpy(blurry), second, **options).tolist())
    expected = score_frame(output, blurry, reference, **options)
    for field, tolerance in zip(
        ("psnr", "ssim", "input_psnr", "input_ssim"), (PSNR_TOLERANCE, SSIM_TOLERANCE) * 2, strict=True
    ):
        assert abs(getattr(scores, field) - getattr(expected, field)) <= tolerance


def test_y_channel_differs_from_rgb_and_defaults_are_unchanged() -> None:
    sharp = sharp_frames(1, 40, 56, seed=3)[0]
    first, second = torch.from_numpy(blurred(sharp)), torch.from_numpy(sharp)
    # the values of the version before channel and crop_border existed
    assert psnr_tensor(first, second).item() == 41.46585130410307
    assert ssim_tensor(first, second).item() == 0.9754456061876308
    assert score_frame_tensor(first, first, second).tolist() == [41.46585130410307, 0.9754456061876308] * 2
    assert abs(psnr_tensor(first, second, channel="y").item() - psnr_tensor(first, second).item()) > 1e-3


def test_crop_sets_the_smallest_size_and_bad_options_are_refused() -> None:
    image = torch.zeros(11, 11, 3, dtype=torch.uint8)
    assert psnr_tensor(image, image, crop_border=0).item() == math.inf
    with pytest.raises(ValueError, match="at least 13 x 13"):
        ssim_tensor(image, image, crop_border=1)
    with pytest.raises(ValueError, match="channel"):
        score_frame_tensor(image, image, image, channel="Y", crop_border=0)
