"""The evaluation protocol's metrics (docs/faithfulness.md §9) on uint8 RGB images.

Both metrics compare H x W x 3 uint8 images with ``CROP_BORDER`` pixels cropped on every side. PSNR is computed in
float64 over all channels; SSIM is MATLAB's: an 11 x 11 Gaussian window with sigma 1.5, statistics filtered per
channel and kept only where the window lies inside the image ('valid'), the map averaged over pixels and channels.
Filtering is separable (cv2.sepFilter2D in float64): the same numbers as a 2-D filter to about 1e-13, several times
faster.

Other papers' conventions are parameters, the protocol stays the default: ``channel="y"`` scores the luma of
BT.601 YCbCr as BasicSR's ``rgb2ycbcr(..., y_only=True)`` and MATLAB's ``rgb2ycbcr`` give it (Y = 16 + 65.481 R +
128.553 G + 24.966 B with R, G, B in [0, 1], so Y lies in [16, 235]; not rounded; PSNR and SSIM then on that one
plane, peak 255, in float64), and ``crop_border`` sets the crop (0: none). A caller passes both through, e.g.
``score_frame(output, blurred, sharp, channel=args.metric_channel, crop_border=args.crop_border)``; the smallest
frame the metrics accept is then ``min_size(crop_border)``.
"""

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

CROP_BORDER = 4
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = (0.01 * 255) ** 2
SSIM_C2 = (0.03 * 255) ** 2
MIN_SIZE = 2 * CROP_BORDER + SSIM_WINDOW
"""The smallest height and width the metrics accept: the crop plus one full SSIM window."""

Channel = Literal["rgb", "y"]
CHANNELS: tuple[str, ...] = ("rgb", "y")
"""``rgb``: the three channels (the protocol); ``y``: the BT.601 luma, BasicSR's ``test_y_channel``."""
Y_WEIGHTS = (65.481, 128.553, 24.966)
"""BT.601 luma weights of R, G, B in [0, 1] on the [16, 235] scale (BasicSR's and MATLAB's rgb2ycbcr)."""
Y_OFFSET = 16.0

_GAUSSIAN = cv2.getGaussianKernel(SSIM_WINDOW, SSIM_SIGMA, cv2.CV_64F)
_VALID = SSIM_WINDOW // 2


def min_size(crop_border: int = CROP_BORDER) -> int:
    """The smallest height and width the metrics accept with this crop: the crop plus one full SSIM window."""
    return 2 * crop_border + SSIM_WINDOW


def check_options(channel: str, crop_border: int) -> None:
    """Refuse an unknown channel or a negative crop (a ValueError naming the value)."""
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {', '.join(CHANNELS)}, got {channel!r}")
    if isinstance(crop_border, bool) or not isinstance(crop_border, int) or crop_border < 0:
        raise ValueError(f"crop_border must be an integer >= 0, got {crop_border!r}")


def _check_pair(output: np.ndarray, reference: np.ndarray, crop_border: int = CROP_BORDER) -> None:
    if output.shape != reference.shape:
        raise ValueError(f"images differ in shape: {output.shape} vs {reference.shape}")
    if output.dtype != np.uint8 or reference.dtype != np.uint8:
        raise ValueError(f"the protocol compares uint8 images, got {output.dtype} and {reference.dtype}")
    smallest = min_size(crop_border)
    if output.ndim != 3 or min(output.shape[:2]) < smallest:
        raise ValueError(f"the protocol needs H x W x C images of at least {smallest} x {smallest}, got {output.shape}")


def crop_border(image: np.ndarray, border: int = CROP_BORDER) -> np.ndarray:
    """``image`` without ``border`` pixels on every side (0: all of it)."""
    height, width = image.shape[:2]
    return image[border : height - border, border : width - border]


def luma(image: np.ndarray) -> np.ndarray:
    """The BT.601 Y plane of H x W x 3 uint8 RGB as H x W float64 on the [16, 235] scale (not rounded)."""
    rgb = image.astype(np.float64) / 255.0
    return Y_OFFSET + (Y_WEIGHTS[0] * rgb[..., 0] + Y_WEIGHTS[1] * rgb[..., 1] + Y_WEIGHTS[2] * rgb[..., 2])


def _planes(image: np.ndarray, channel: str, border: int) -> np.ndarray:
    """The scored part of ``image`` in float64: H x W x C (rgb) or H x W (y)."""
    cropped = crop_border(image, border)
    return luma(cropped) if channel == "y" else cropped.astype(np.float64)


def psnr(output: np.ndarray, reference: np.ndarray, channel: Channel = "rgb", crop_border: int = CROP_BORDER) -> float:
    """PSNR in dB of uint8 ``output`` against ``reference`` after the crop, on RGB or Y; inf when they are equal."""
    check_options(channel, crop_border)
    _check_pair(output, reference, crop_border)
    difference = _planes(output, channel, crop_border) - _planes(reference, channel, crop_border)
    mse = float(np.mean(difference * difference))
    if mse == 0.0:
        return math.inf
    return 20.0 * math.log10(255.0 / math.sqrt(mse))


def _gaussian_valid(image: np.ndarray) -> np.ndarray:
    """Gaussian-filter each channel and keep the part where the window lies inside the image."""
    filtered = cv2.sepFilter2D(image, cv2.CV_64F, _GAUSSIAN, _GAUSSIAN)
    return filtered[_VALID:-_VALID, _VALID:-_VALID]


def ssim(output: np.ndarray, reference: np.ndarray, channel: Channel = "rgb", crop_border: int = CROP_BORDER) -> float:
    """MATLAB-style SSIM of uint8 ``output`` against ``reference`` after the crop, on RGB (channel mean) or Y."""
    check_options(channel, crop_border)
    _check_pair(output, reference, crop_border)
    first = _planes(output, channel, crop_border)
    second = _planes(reference, channel, crop_border)
    mean_first = _gaussian_valid(first)
    mean_second = _gaussian_valid(second)
    covariance = _gaussian_valid(first * second)
    variance_sum = _gaussian_valid(first * first)
    variance_sum += _gaussian_valid(second * second)
    # the SSIM map, computed in place: a 720p frame's float64 arrays are 22 MB each, and allocating them is slow
    mean_product = mean_first * mean_second
    covariance -= mean_product
    mean_first *= mean_first
    mean_second *= mean_second
    variance_sum -= mean_first
    variance_sum -= mean_second
    numerator = mean_product
    numerator *= 2.0
    numerator += SSIM_C1
    covariance *= 2.0
    covariance += SSIM_C2
    numerator *= covariance
    denominator = mean_first
    denominator += mean_second
    denominator += SSIM_C1
    variance_sum += SSIM_C2
    denominator *= variance_sum
    numerator /= denominator
    return float(numerator.mean())


@dataclass(frozen=True)
class FrameScores:
    """Protocol metrics of one frame: the deblurred output and the blurred input, both against the sharp frame."""

    psnr: float
    ssim: float
    input_psnr: float
    input_ssim: float


def score_frame(
    output: np.ndarray,
    blurred: np.ndarray,
    sharp: np.ndarray,
    channel: Channel = "rgb",
    crop_border: int = CROP_BORDER,
) -> FrameScores:
    """PSNR and SSIM of the output and of the blurred input against the sharp frame."""
    options = {"channel": channel, "crop_border": crop_border}
    return FrameScores(
        psnr(output, sharp, **options),
        ssim(output, sharp, **options),
        psnr(blurred, sharp, **options),
        ssim(blurred, sharp, **options),
    )
