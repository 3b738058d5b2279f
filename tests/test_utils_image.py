"""Image and tensor conversions and the protocol's crop to multiples (utils/image.py)."""

import numpy as np
import torch

from cdvd_tsp.utils.image import cropped_size, to_tensor, to_uint8


def test_uint8_round_trip_and_protocol_rounding() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    tensor = to_tensor(rgb)
    assert tensor.shape == (1, 3, 5, 6) and tensor.dtype == torch.float32
    assert np.array_equal(to_uint8(tensor), rgb)
    values = torch.tensor([-0.5, 0.0, 0.5 / 255, 1.4 / 255, 1.6 / 255, 1.0, 2.0]).view(1, 1, 1, 7).expand(1, 3, 1, 7)
    assert to_uint8(values)[0, :, 0].tolist() == [0, 0, 0, 1, 2, 255, 255]


def test_cropped_size_drops_rows_and_columns_down_to_the_multiple() -> None:
    assert cropped_size(721, 1283, 4) == (720, 1280)
    assert cropped_size(720, 1280, 4) == (720, 1280)
    assert cropped_size(7, 5, 4) == (4, 4)
    assert cropped_size(7, 5, 1) == (7, 5)
