"""The evaluation protocol's metrics (CONTRACT section 9) on uint8 RGB images.

Both metrics compare H x W x 3 uint8 images with ``CROP_BORDER`` pixels cropped on every side. PSNR is computed in
float64 over all channels; SSIM is MATLAB's: an 11 x 11 Gaussian window with sigma 1.5, statistics filtered per
channel and kept only where the window lies inside the image ('valid'), the map averaged over pixels and channels.
Filtering is separable (cv2.sepFilter2D in float64): the same numbers as a 2-D filter to about 1e-13, several times
faster.
"""

import math
from dataclasses import dataclass

import cv2
import numpy as np

CROP_BORDER = 4
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = (0.01 * 255) ** 2
SSIM_C2 = (0.03 * 255) ** 2
MIN_SIZE = 2 * CROP_BORDER + SSIM_WINDOW
"""The smallest height and width the metrics accept: the crop plus one full SSIM window."""

_GAUSSIAN = cv2.getGaussianKernel(SSIM_WINDOW, SSIM_SIGMA, cv2.CV_64F)
_VALID = SSIM_WINDOW // 2


def _check_pair(output: np.ndarray, reference: np.ndarray) -> None:
    if output.shape != reference.shape:
        raise ValueError(f"images differ in shape: {output.shape} vs {reference.shape}")
    if output.dtype != np.uint8 or reference.dtype != np.uint8:
        raise ValueError(f"the protocol compares uint8 images, got {output.dtype} and {reference.dtype}")
    if output.ndim != 3 or min(output.shape[:2]) < MIN_SIZE:
        raise ValueError(f"the protocol needs H x W x C images of at least {MIN_SIZE} x {MIN_SIZE}, got {output.shape}")


def crop_border(image: np.ndarray, border: int = CROP_BORDER) -> np.ndarray:
    return image[border:-border, border:-border]


def psnr(output: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB of uint8 ``output`` against ``reference`` after the protocol's crop; inf when they are equal."""
    _check_pair(output, reference)
    difference = crop_border(output).astype(np.float64) - crop_border(reference).astype(np.float64)
    mse = float(np.mean(difference * difference))
    if mse == 0.0:
        return math.inf
    return 20.0 * math.log10(255.0 / math.sqrt(mse))


def _gaussian_valid(image: np.ndarray) -> np.ndarray:
    """Gaussian-filter each channel and keep the part where the window lies inside the image."""
    filtered = cv2.sepFilter2D(image, cv2.CV_64F, _GAUSSIAN, _GAUSSIAN)
    return filtered[_VALID:-_VALID, _VALID:-_VALID]


def ssim(output: np.ndarray, reference: np.ndarray) -> float:
    """MATLAB-style SSIM of uint8 ``output`` against ``reference`` after the protocol's crop."""
    _check_pair(output, reference)
    first = crop_border(output).astype(np.float64)
    second = crop_border(reference).astype(np.float64)
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


def score_frame(output: np.ndarray, blurred: np.ndarray, sharp: np.ndarray) -> FrameScores:
    """PSNR and SSIM of the output and of the blurred input against the sharp frame."""
    return FrameScores(psnr(output, sharp), ssim(output, sharp), psnr(blurred, sharp), ssim(blurred, sharp))
