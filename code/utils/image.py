"""Conversions between uint8 RGB images (H x W x 3) and model tensors ([1, 3, H, W], RGB in [0, 1])."""

import numpy as np
import torch
from torch import Tensor


def to_tensor(rgb: np.ndarray, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """H x W x 3 uint8 -> [1, 3, H, W] in [0, 1] on ``device``."""
    tensor = torch.from_numpy(np.ascontiguousarray(rgb)).to(device=device).permute(2, 0, 1).unsqueeze(0)
    return tensor.to(dtype) / 255.0


def to_uint8(tensor: Tensor) -> np.ndarray:
    """[1, 3, H, W] or [3, H, W] in [0, 1] -> H x W x 3 uint8, as the protocol says: x255, clamp, round."""
    if tensor.dim() == 4:
        if tensor.shape[0] != 1:
            raise ValueError(f"to_uint8 takes one image, got a batch of {tensor.shape[0]}")
        tensor = tensor[0]
    scaled = (tensor.detach().float() * 255.0).clamp(0, 255).round().to(torch.uint8)
    return scaled.permute(1, 2, 0).cpu().numpy()


def cropped_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """The protocol's crop: (height, width) with bottom rows and right columns dropped down to multiples of
    ``multiple``."""
    return height - height % multiple, width - width % multiple
