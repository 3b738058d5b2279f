"""The showcase pictures (utils/showcase.py): panels side by side with labels, and the GIF."""

from pathlib import Path

import imageio.v3 as iio
import numpy as np

from cdvd_tsp.utils.showcase import GAP, LABEL_HEIGHT, side_by_side, write_animation


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
