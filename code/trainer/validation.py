"""Validation during training: the release's float PSNR, one window's images for result/, and the rule that flags a
collapsed validation."""

import math

from torch import Tensor

from cdvd_tsp.utils.image import to_uint8

SHAVE = 4
"""Pixels left out on every side, as the release measured."""
PSNR_OF_IDENTICAL = 100.0
"""What the release reported for a zero error."""
COLLAPSE_BELOW_INPUT_DB = 10.0
"""A validation PSNR this far below the blurred input's on the same windows is a collapse: an error energy ten times
the input's. The first epochs of training from scratch score a few dB below the input and must not be flagged (the
DEMO recipe's first epoch: 3.6 dB below; DEMO_SHORT's two: 2.8 and 3.2 dB); the collapse seen in a DEMO run was 37
and 53 dB below. A net only a few steps old can score that low too, and is flagged: its weights are as unusable."""


def float_psnr(output: Tensor, target: Tensor, rgb_range: float = 1.0, shave: int = SHAVE) -> float:
    """PSNR in dB of [B, C, H, W] tensors in [0, rgb_range], with ``shave`` pixels cropped on every side.

    As the release computed it during training: on the float outputs (not rounded, not clamped), peak 1 after
    dividing by ``rgb_range``.
    """
    if min(output.shape[-2:]) <= 2 * shave:
        raise ValueError(f"frames of {list(output.shape[-2:])} pixels leave nothing after shaving {shave} per side")
    cropped = (output - target)[..., shave:-shave, shave:-shave].double() / rgb_range
    mse = cropped.pow(2).mean().item()
    return PSNR_OF_IDENTICAL if mse == 0 else -10.0 * math.log10(mse)


def collapse(psnrs: dict[str, float], blurred: float, margin: float = COLLAPSE_BELOW_INPUT_DB) -> str:
    """Why validation PSNRs (by name) look collapsed, given the blurred input's PSNR on the same windows: "" if they
    do not; else which are not finite or more than ``margin`` dB below the input's."""
    bad = [name for name, psnr in psnrs.items() if not math.isfinite(psnr) or psnr < blurred - margin]
    if not bad:
        return ""
    return f"{' and '.join(bad)} not finite or more than {margin:g} dB below the blurred input's"


def window_images(blur_center: Tensor, gt_center: Tensor, stage1: Tensor, final: Tensor, rgb_range: float) -> dict:
    """The four images the release saved per validation window, as H x W x 3 uint8 (x255, clamp, round)."""
    tensors = {"gt": gt_center, "blur": blur_center, "deblur_iter1": stage1, "deblur_iter2": final}
    return {kind: to_uint8(tensor / rgb_range) for kind, tensor in tensors.items()}
