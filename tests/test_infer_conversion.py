"""Frames to the model's tensors and back, on tensors: the arithmetic of utils/image.py, the protocol's crop to
multiples of 4, and the reflection padding of --input."""

import numpy as np
import torch

from cdvd_tsp.infer.conversion import FramePreparer, pad_to_multiple
from cdvd_tsp.utils.image import to_tensor, to_uint8


def edge_image(height: int, width: int) -> torch.Tensor:
    """Model outputs with values outside [0, 1] and exactly on rounding boundaries."""
    values = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0)) * 1.4 - 0.2
    values[0, 0, 0, : width // 2] = (torch.arange(width // 2) + 0.5) / 255.0
    return values


def test_frame_conversions_are_those_of_utils_image() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (38, 50, 3), dtype=np.uint8)
    cropped = FramePreparer((38, 50), crop=True)
    visible = cropped.image(rgb)
    assert visible.shape == (36, 48, 3)
    assert torch.equal(cropped.tensor(torch.from_numpy(np.ascontiguousarray(visible))), to_tensor(visible))
    padded = FramePreparer((38, 50), crop=False)
    tensor = padded.tensor(torch.from_numpy(rgb))
    assert tensor.shape == (1, 3, 40, 52) and torch.equal(tensor, pad_to_multiple(to_tensor(rgb)))

    output = edge_image(40, 52)
    assert np.array_equal(padded.output(output).numpy(), to_uint8(output[..., :38, :50]))
    assert np.array_equal(cropped.output(output).numpy(), to_uint8(output[..., :36, :48]))
    assert np.array_equal(cropped.output(output.half()).numpy(), to_uint8(output.half()[..., :36, :48]))


def test_padding_reflects_the_bottom_rows_and_right_columns_up_to_multiples_of_4() -> None:
    image = (torch.arange(6.0) + 10 * torch.arange(3.0)[:, None]).reshape(1, 1, 3, 6)  # 3 x 6 -> 4 x 8
    padded = pad_to_multiple(image)
    assert padded.shape == (1, 1, 4, 8)
    assert padded[0, 0, 0].tolist() == [0, 1, 2, 3, 4, 5, 4, 3]  # mirrored without repeating the edge column
    assert padded[0, 0, :, 0].tolist() == [0, 10, 20, 10]
    aligned = torch.rand(1, 3, 8, 12)
    assert pad_to_multiple(aligned) is aligned
