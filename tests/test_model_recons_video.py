"""The restoration net (model/recons_video.py): its input and output, its size as released, the parameter names
the released checkpoints use, and that the output is computed, not passed through from the input."""

import pytest
import torch

from cdvd_tsp.model.recons_video import RECONS_VIDEO

RELEASED_PARAMETERS = 6812771
"""Parameters of the released restoration net (n_feat 32, n_resblock 3, kernel 5, three frames and the prior)."""


def test_the_released_size() -> None:
    net = RECONS_VIDEO(n_sequence=3, n_resblock=3, n_feat=32, kernel_size=5)
    assert sum(parameter.numel() for parameter in net.parameters()) == RELEASED_PARAMETERS


def test_the_parameter_names_of_the_released_checkpoints() -> None:
    names = list(RECONS_VIDEO(n_resblock=1, n_feat=4, kernel_size=3).state_dict())
    weights = [name.removesuffix(".weight") for name in names if name.endswith(".weight")]
    assert weights == [
        "inBlock.0.0", "inBlock.1.conv1", "inBlock.1.conv2",
        "encoder_first.0.0", "encoder_first.1.conv1", "encoder_first.1.conv2",
        "encoder_second.0.0", "encoder_second.1.conv1", "encoder_second.1.conv2",
        "decoder_second.0.conv1", "decoder_second.0.conv2", "decoder_second.1.0",
        "decoder_first.0.conv1", "decoder_first.0.conv2", "decoder_first.1.0",
        "outBlock.0.conv1", "outBlock.0.conv2", "outBlock.1",
    ]  # fmt: skip
    assert len(names) == 2 * len(weights)  # a bias each


@pytest.mark.parametrize(("n_sequence", "extra"), [(3, 1), (5, 0)])
def test_it_takes_the_frames_and_the_prior_and_gives_one_frame_of_their_size(n_sequence: int, extra: int) -> None:
    net = RECONS_VIDEO(n_sequence=n_sequence, n_resblock=1, n_feat=4, extra_channels=extra)
    assert net.inBlock[0][0].in_channels == 3 * n_sequence + extra
    assert net(torch.randn(2, 3 * n_sequence + extra, 12, 20)).shape == (2, 3, 12, 20)


def test_there_is_no_skip_from_the_input_frame() -> None:
    net = RECONS_VIDEO(n_resblock=1, n_feat=4)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.zero_()
    assert torch.equal(net(torch.rand(1, 10, 8, 8)), torch.zeros(1, 3, 8, 8))
