"""PWC-Net's cost volume (correlation layer).

`cost_volume` is the single entry point the flow net calls, so a faster kernel can be dispatched from here
without touching the network.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

MAX_DISPLACEMENT = 4
"""Search radius in pixels: displacements -4..4 in each axis give 81 channels."""


def cost_volume(first: Tensor, second: Tensor, max_displacement: int = MAX_DISPLACEMENT) -> Tensor:
    """Correlate two feature maps over a square neighbourhood.

    ``out[b, (dy + r) * (2r + 1) + (dx + r), y, x] = mean_c first[b, c, y, x] * second[b, c, y + dy, x + dx]``
    for dy, dx in -r..r, zero where the displaced position falls outside ``second``. No activation is applied.

    Works on any device and float dtype and is differentiable; it loops over the (2r + 1)^2 displacements, never
    over pixels.
    """
    if first.shape != second.shape or first.dim() != 4:
        shapes = f"{list(first.shape)} and {list(second.shape)}"
        raise ValueError(f"cost_volume needs two [B, C, H, W] tensors of one shape, got {shapes}")
    channels, height, width = first.shape[1:]
    padded = F.pad(second, [max_displacement] * 4)
    span = 2 * max_displacement + 1
    products = [
        (first * padded[:, :, dy : dy + height, dx : dx + width]).sum(dim=1) for dy in range(span) for dx in range(span)
    ]
    return torch.stack(products, dim=1) / channels
