"""Blur by averaging sharp frames in linear light (the GOPRO way).

A blurred frame is what a shutter open over several consecutive sharp frames records: their mean in linear light
(`data.camera_blur`'s `to_linear` and `to_display`: the display gamma undone, the frames averaged, the gamma redone).
Its sharp frame is the middle one; `data.frames.write_pairs` writes the pairs as a dataset.
"""

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from cdvd_tsp.data.camera_blur import to_display, to_linear


def average_exposure(frames: Sequence[np.ndarray]) -> np.ndarray:
    """The blurred frame a shutter open over ``frames`` records: their mean in linear light."""
    total = np.zeros(frames[0].shape, np.float64)
    for frame in frames:
        total += to_linear(frame)
    return to_display(total / len(frames))


def blur_frame_sequence(
    frames: Iterable[np.ndarray], average: int, stride: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """GOPRO-style pairs (blurred, sharp) from consecutive sharp frames; only ``average`` frames are held at once.

    Blurred frame k averages frames ``k * stride`` .. ``k * stride + average - 1`` (``stride`` defaults to
    ``average``: no frame is used twice). Raises ValueError at once (not on the first pair) when ``average`` or
    ``stride`` is below 1.
    """
    if average < 1:
        raise ValueError(f"average must be at least 1, got {average}")
    stride = stride or average
    if stride < 1:
        raise ValueError(f"stride must be at least 1, got {stride}")
    return _pairs(frames, average, stride)


def _pairs(frames: Iterable[np.ndarray], average: int, stride: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    window: list[np.ndarray] = []
    skip = 0
    for frame in frames:
        if skip:
            skip -= 1
            continue
        window.append(frame)
        if len(window) == average:
            yield average_exposure(window), window[average // 2]
            window = window[stride:] if stride < average else []
            skip = max(stride - average, 0)
