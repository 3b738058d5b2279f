"""Atomic writes and image/tensor conversions."""

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from utils import atomic
from utils.image import cropped_size, to_tensor, to_uint8
from utils.showcase import GAP, LABEL_HEIGHT, side_by_side, write_animation


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "log.txt"
    target.write_text("old")
    atomic.atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert [path.name for path in tmp_path.iterdir()] == ["log.txt"]


def test_atomic_write_gives_the_mode_of_a_plain_write(tmp_path: Path) -> None:
    (tmp_path / "plain.txt").write_text("x")
    atomic.atomic_write_text(tmp_path / "atomic.txt", "x")
    assert (tmp_path / "atomic.txt").stat().st_mode == (tmp_path / "plain.txt").stat().st_mode


def test_failed_write_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "model.pt"
    atomic.atomic_torch_save({"w": torch.ones(2)}, target)

    def crash(source: str, destination: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic.atomic_torch_save({"w": torch.zeros(2)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(2))
    assert [path.name for path in tmp_path.iterdir()] == ["model.pt"]


def test_uint8_round_trip_and_protocol_rounding() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    tensor = to_tensor(rgb)
    assert tensor.shape == (1, 3, 5, 6) and tensor.dtype == torch.float32
    assert np.array_equal(to_uint8(tensor), rgb)
    values = torch.tensor([-0.5, 0.0, 0.5 / 255, 1.4 / 255, 1.6 / 255, 1.0, 2.0]).view(1, 1, 1, 7).expand(1, 3, 1, 7)
    assert to_uint8(values)[0, :, 0].tolist() == [0, 0, 0, 1, 2, 255, 255]


def test_side_by_side_lays_panels_out_in_a_row_with_labels(tmp_path: Path) -> None:
    panels = [np.full((10, 12, 3), value, np.uint8) for value in (0, 100, 200)]
    row = side_by_side(panels, ["blurred", "deblurred", "sharp"])
    assert row.shape == (10 + LABEL_HEIGHT, 3 * 12 + 2 * GAP, 3)
    for index, value in enumerate((0, 100, 200)):
        left = index * (12 + GAP)
        assert (row[LABEL_HEIGHT:, left : left + 12] == value).all()
    assert (row[:LABEL_HEIGHT] < 255).any()  # the labels are drawn
    write_animation(tmp_path / "a.gif", [row, row[::-1].copy()])
    assert iio.imread(tmp_path / "a.gif", index=None).shape[0] == 2


def test_cropped_size_drops_rows_and_columns_down_to_the_multiple() -> None:
    assert cropped_size(721, 1283, 4) == (720, 1280)
    assert cropped_size(720, 1280, 4) == (720, 1280)
    assert cropped_size(7, 5, 4) == (4, 4)
    assert cropped_size(7, 5, 1) == (7, 5)
