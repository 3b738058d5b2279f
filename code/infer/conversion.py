"""Frames to what the model sees and back: cropped to multiples of 4 for evaluation (the protocol), or padded for
``--input`` and the output cropped back to the input's size.

`FramePreparer.tensor` and `FramePreparer.output` do what utils/image.py's `to_tensor` and `to_uint8` do, on tensors
of any device, so that the conversions can stay on the GPU; the outputs are the same bytes either way.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cdvd_tsp.model.streaming import SIZE_MULTIPLE
from cdvd_tsp.utils.image import cropped_size


def pad_to_multiple(tensor: Tensor, multiple: int = SIZE_MULTIPLE) -> Tensor:
    """Reflect-pad the bottom and right of [B, C, H, W] up to multiples of ``multiple``."""
    height, width = tensor.shape[-2:]
    pad_bottom, pad_right = -height % multiple, -width % multiple
    if pad_bottom == 0 and pad_right == 0:
        return tensor
    return F.pad(tensor, (0, pad_right, 0, pad_bottom), mode="reflect")


class FramePreparer:
    """The conversions of one video's frames of ``size`` (height, width): cropped (``crop``) or padded."""

    def __init__(self, size: tuple[int, int], crop: bool) -> None:
        height, width = size
        self.crop = crop
        self.visible = cropped_size(height, width, SIZE_MULTIPLE) if crop else (height, width)

    def image(self, rgb: np.ndarray) -> np.ndarray:
        """The part of the frame that gets an output (the cropped frame, or all of it)."""
        height, width = self.visible
        return rgb[:height, :width]

    def tensor(self, frame: Tensor) -> Tensor:
        """H x W x 3 uint8 -> [1, 3, H, W] float32 in [0, 1], padded for --input."""
        tensor = frame.permute(2, 0, 1).unsqueeze(0).to(torch.float32) / 255.0
        return tensor if self.crop else pad_to_multiple(tensor)

    def output(self, tensor: Tensor) -> Tensor:
        """[1, 3, H, W] model output -> H x W x 3 uint8 of the visible size: x255, clamp, round (the protocol)."""
        height, width = self.visible
        scaled = (tensor[0, :, :height, :width].detach().float() * 255.0).clamp(0, 255).round().to(torch.uint8)
        return scaled.permute(1, 2, 0)
