"""The temporal sharpness prior, in the form the released weights were trained with (docs/faithfulness.md §5)."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

BOX_SIZE = 5


def box_filter(image: Tensor, size: int = BOX_SIZE) -> Tensor:
    """Mean over a ``size`` x ``size`` window per channel, with zero padding (the border divides by size^2 too)."""
    channels = image.shape[1]
    kernel = torch.full((channels, 1, size, size), 1.0 / (size * size), dtype=image.dtype, device=image.device)
    return F.conv2d(image, kernel, padding=size // 2, groups=channels)


def temporal_sharpness_prior(frames: Sequence[Tensor], masks: Sequence[Tensor | None], smooth: bool = True) -> Tensor:
    """Sharpness map S [B, 1, H, W] for aligned frames centred on ``frames[len // 2]``.

    S = exp(-sqrt(sum_c sum_j (I_j - I_center)^2 / 2)) on box-filtered, detached frames, so S is 1 where the
    aligned neighbours agree with the center; it is zeroed where any frame's validity mask is 0 in every channel.
    A mask of None means "valid everywhere" (the center frame).
    """
    images = [frame.detach() for frame in frames]
    if smooth:
        images = [box_filter(image) for image in images]
    center_index = len(images) // 2
    center = images[center_index]
    squared = sum((image - center).pow(2) for index, image in enumerate(images) if index != center_index)
    sharpness = torch.exp(-torch.sqrt(torch.sum(squared / 2.0, dim=1, keepdim=True)))

    given_masks = [mask for mask in masks if mask is not None]
    if given_masks:
        valid = given_masks[0]
        for mask in given_masks[1:]:
            valid = valid * mask
        sharpness = sharpness * (valid.sum(dim=1, keepdim=True) > 0).to(sharpness.dtype)
    return sharpness
