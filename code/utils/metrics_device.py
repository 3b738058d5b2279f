"""The evaluation protocol's PSNR and MATLAB-style SSIM computed with torch on the images' device, in float64.

The same metrics as utils/metrics.py (the same crop, Gaussian window, constants and 'valid' filtering; the numbers
agree to about 1e-12) on H x W x C uint8 tensors, so that frames on the GPU are scored without a copy to the host.
``score_frame_tensor`` never synchronizes with the device: its result can be queued on a stream and read later.
Every function takes utils/metrics.py's ``channel`` ("rgb", or "y": BT.601 luma as BasicSR scores it) and
``crop_border`` (the protocol's 4 by default), with the same meaning and the same numbers.
"""

import cv2
import torch
import torch.nn.functional as F
from torch import Tensor

from cdvd_tsp.utils.metrics import (
    CROP_BORDER,
    SSIM_C1,
    SSIM_C2,
    SSIM_SIGMA,
    SSIM_WINDOW,
    Y_OFFSET,
    Y_WEIGHTS,
    Channel,
    check_options,
    min_size,
)

_WEIGHTS = tuple(float(weight) for weight in cv2.getGaussianKernel(SSIM_WINDOW, SSIM_SIGMA, cv2.CV_64F).ravel())
"""The Gaussian window of utils/metrics.py (cv2.getGaussianKernel in float64), as Python floats: no tensor to copy."""


def _check_pair(output: Tensor, reference: Tensor, crop_border: int = CROP_BORDER) -> None:
    if output.shape != reference.shape:
        raise ValueError(f"images differ in shape: {tuple(output.shape)} vs {tuple(reference.shape)}")
    if output.dtype != torch.uint8 or reference.dtype != torch.uint8:
        raise ValueError(f"the protocol compares uint8 images, got {output.dtype} and {reference.dtype}")
    smallest = min_size(crop_border)
    if output.dim() != 3 or min(output.shape[:2]) < smallest:
        raise ValueError(
            f"the protocol needs H x W x C images of at least {smallest} x {smallest}, got {tuple(output.shape)}"
        )
    if output.device != reference.device:
        raise ValueError(f"images lie on different devices: {output.device} and {reference.device}")


def _cropped(image: Tensor, channel: str = "rgb", border: int = CROP_BORDER) -> Tensor:
    """The scored part of an H x W x 3 uint8 image as a C x H x W float64 tensor: the crop's RGB planes, or its one
    Y plane (BT.601 luma on the [16, 235] scale, as utils.metrics.luma)."""
    height, width = image.shape[:2]
    planes = image[border : height - border, border : width - border].permute(2, 0, 1).to(torch.float64)
    if channel != "y":
        return planes
    rgb = planes / 255.0
    return (Y_OFFSET + (Y_WEIGHTS[0] * rgb[0] + Y_WEIGHTS[1] * rgb[1] + Y_WEIGHTS[2] * rgb[2])).unsqueeze(0)


def _psnr(output: Tensor, reference: Tensor) -> Tensor:
    """PSNR of cropped float64 images stacked on dimension 0; inf (by division by zero) where they are equal."""
    difference = output - reference
    mse = (difference * difference).flatten(1).mean(dim=1)
    return 20.0 * torch.log10(255.0 / torch.sqrt(mse))


_CONVOLUTION_WEIGHTS: dict[torch.device, Tensor] = {}
"""The window as a float64 tensor per device, copied there once."""


def _gaussian_valid(planes: Tensor) -> Tensor:
    """Gaussian-filter N x H x W planes separably, keeping the part where the window lies inside each plane.

    On CUDA by a grouped convolution (cuDNN; score_frame_tensor at 720p took 1.5 ms on an H200), elsewhere by
    shifted sums (float64 convolution is several times slower than that on a CPU); the two agree to about 1e-15.
    """
    return _convolved(planes) if planes.is_cuda else _shifted_sums(planes)


def _convolved(planes: Tensor) -> Tensor:
    weights = _CONVOLUTION_WEIGHTS.get(planes.device)
    if weights is None:
        weights = _CONVOLUTION_WEIGHTS[planes.device] = torch.tensor(_WEIGHTS, dtype=torch.float64).to(planes.device)
    count = planes.shape[0]
    vertical = weights.view(1, 1, SSIM_WINDOW, 1).expand(count, 1, SSIM_WINDOW, 1)
    horizontal = weights.view(1, 1, 1, SSIM_WINDOW).expand(count, 1, 1, SSIM_WINDOW)
    filtered = F.conv2d(planes.unsqueeze(0), vertical, groups=count)
    return F.conv2d(filtered, horizontal, groups=count).squeeze(0)


def _shifted_sums(planes: Tensor) -> Tensor:
    """Each direction as a sum of the window's shifted, weighted copies, accumulated in place."""
    height, width = planes.shape[-2] - SSIM_WINDOW + 1, planes.shape[-1] - SSIM_WINDOW + 1
    vertical = planes[..., :height, :] * _WEIGHTS[0]
    for offset in range(1, SSIM_WINDOW):
        vertical.add_(planes[..., offset : offset + height, :], alpha=_WEIGHTS[offset])
    filtered = vertical[..., :width] * _WEIGHTS[0]
    for offset in range(1, SSIM_WINDOW):
        filtered.add_(vertical[..., offset : offset + width], alpha=_WEIGHTS[offset])
    return filtered


def _ssim(outputs: list[Tensor], reference: Tensor) -> Tensor:
    """SSIM of each cropped float64 C x H x W image in ``outputs`` against ``reference``, all filtered in one pass."""
    count, channels = len(outputs), reference.shape[0]
    planes = torch.cat(
        [reference, *outputs, *(output * reference for output in outputs)]
        + [output * output + reference * reference for output in outputs]
    )
    filtered = _gaussian_valid(planes).unflatten(0, (1 + 3 * count, channels))
    mean_reference = filtered[0]
    means, products, squares = filtered[1:].split(count)
    mean_product = means * mean_reference
    mean_squares = means * means + mean_reference * mean_reference
    covariance = products - mean_product
    variance_sum = squares - mean_squares
    numerator = (2.0 * mean_product + SSIM_C1) * (2.0 * covariance + SSIM_C2)
    denominator = (mean_squares + SSIM_C1) * (variance_sum + SSIM_C2)
    return (numerator / denominator).flatten(1).mean(dim=1)


def psnr_tensor(output: Tensor, reference: Tensor, channel: Channel = "rgb", crop_border: int = CROP_BORDER) -> Tensor:
    """PSNR in dB of uint8 ``output`` against ``reference`` after the crop, on RGB or Y, as a 0-dim float64 tensor
    on their device; inf when they are equal."""
    check_options(channel, crop_border)
    _check_pair(output, reference, crop_border)
    first, second = _cropped(output, channel, crop_border), _cropped(reference, channel, crop_border)
    return _psnr(first.unsqueeze(0), second.unsqueeze(0))[0]


def ssim_tensor(output: Tensor, reference: Tensor, channel: Channel = "rgb", crop_border: int = CROP_BORDER) -> Tensor:
    """MATLAB-style SSIM of uint8 ``output`` against ``reference`` after the crop, on RGB or Y, as a 0-dim float64
    tensor on their device."""
    check_options(channel, crop_border)
    _check_pair(output, reference, crop_border)
    return _ssim([_cropped(output, channel, crop_border)], _cropped(reference, channel, crop_border))[0]


def score_frame_tensor(
    output: Tensor, blurred: Tensor, sharp: Tensor, channel: Channel = "rgb", crop_border: int = CROP_BORDER
) -> Tensor:
    """(psnr, ssim, input_psnr, input_ssim) of the output and of the blurred input against the sharp frame, as a [4]
    float64 tensor on their device in the field order of utils.metrics.FrameScores; never synchronizes."""
    check_options(channel, crop_border)
    _check_pair(output, sharp, crop_border)
    _check_pair(blurred, sharp, crop_border)
    reference = _cropped(sharp, channel, crop_border)
    images = [_cropped(output, channel, crop_border), _cropped(blurred, channel, crop_border)]
    psnrs = _psnr(torch.stack(images), reference.unsqueeze(0))
    ssims = _ssim(images, reference)
    return torch.stack([psnrs, ssims], dim=1).flatten()
