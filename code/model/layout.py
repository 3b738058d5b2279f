"""Memory layouts (NCHW or channels_last) of the model's 4-D tensors.

A tensor's values do not depend on its layout; only the speed of the operations that read it does. The model
computes in whatever layout its inputs have (`model.cdvd_tsp.StepOptions` chooses per component), and the few
operations that would otherwise hand back NCHW (grid_sample, a cost volume, a concatenation of mixed layouts)
put their result back in their input's layout with `in_layout_of`.
"""

import torch
from torch import Tensor


def memory_format_of(tensor: Tensor) -> torch.memory_format:
    """``torch.channels_last`` for a 4-D tensor laid out that way (and not also plain contiguous), else
    ``torch.contiguous_format``."""
    if tensor.dim() != 4 or tensor.is_contiguous() or not tensor.is_contiguous(memory_format=torch.channels_last):
        return torch.contiguous_format
    return torch.channels_last


def in_layout_of(tensor: Tensor, like: Tensor) -> Tensor:
    """``tensor`` in ``like``'s memory layout (itself when it already is)."""
    return tensor.contiguous(memory_format=memory_format_of(like))


def in_layout(tensor: Tensor, channels_last: bool) -> Tensor:
    """``tensor`` in channels_last or in plain NCHW layout (itself when it already is)."""
    return tensor.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
