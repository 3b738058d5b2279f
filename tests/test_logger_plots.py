"""logger/plots.py: a plot of per-epoch series, rendered without a display as real PNG and PDF files."""

import io

import numpy as np
from PIL import Image

from cdvd_tsp.logger.plots import PLOT_FORMATS, render_series


def test_each_format_is_a_real_file_of_that_format() -> None:
    rendered = render_series("Loss", "L1", {"train": [0.3, 0.2, 0.15], "validation": [0.35, 0.25, 0.2]})
    assert set(rendered) == set(PLOT_FORMATS) == {"png", "pdf"}
    assert rendered["pdf"].startswith(b"%PDF-")
    with Image.open(io.BytesIO(rendered["png"])) as image:
        assert image.format == "PNG" and min(image.size) > 100
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 2  # something is drawn: lines, text, not one colour


def test_the_series_are_drawn() -> None:
    def png(series: dict[str, list[float]]) -> np.ndarray:
        with Image.open(io.BytesIO(render_series("PSNR", "dB", series)["png"])) as image:
            return np.asarray(image.convert("RGB"))

    one, other = png({"stage 2": [20.0, 21.0, 22.5]}), png({"stage 2": [22.5, 21.0, 20.0]})
    assert one.shape == other.shape and not np.array_equal(one, other)
    assert png({"a": [float(value) for value in range(60)]}).shape == one.shape  # long runs: no markers, same size
