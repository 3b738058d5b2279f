"""model/layout.py: which layout a tensor has, and moving tensors to a layout without copying those already in it."""

import torch

from cdvd_tsp.model.layout import in_layout, in_layout_of, memory_format_of


def test_the_layout_of_a_tensor_is_channels_last_only_when_unambiguous() -> None:
    nchw = torch.zeros(2, 3, 4, 5)
    channels_last = nchw.contiguous(memory_format=torch.channels_last)
    assert memory_format_of(nchw) == torch.contiguous_format
    assert memory_format_of(channels_last) == torch.channels_last
    # one pixel, or one channel: both layouts are the same memory, and PyTorch calls that contiguous
    assert (
        memory_format_of(torch.zeros(1, 8, 1, 1).contiguous(memory_format=torch.channels_last))
        == torch.contiguous_format
    )
    assert memory_format_of(torch.zeros(1, 1, 4, 4)) == torch.contiguous_format
    assert memory_format_of(nchw[:, :, :, ::2]) == torch.contiguous_format  # neither: NCHW is what a copy would give
    assert memory_format_of(torch.zeros(3, 4, 5)) == torch.contiguous_format


def test_moving_to_a_layout_copies_only_what_is_not_in_it() -> None:
    nchw = torch.arange(24.0).view(1, 2, 3, 4)
    channels_last = in_layout(nchw, channels_last=True)
    assert channels_last.is_contiguous(memory_format=torch.channels_last) and torch.equal(channels_last, nchw)
    assert in_layout(channels_last, channels_last=True) is channels_last
    assert in_layout(nchw, channels_last=False) is nchw
    assert in_layout(channels_last, channels_last=False).is_contiguous()
    assert in_layout_of(nchw, channels_last).is_contiguous(memory_format=torch.channels_last)
    assert in_layout_of(channels_last, nchw).is_contiguous()
    assert in_layout_of(nchw, nchw) is nchw
