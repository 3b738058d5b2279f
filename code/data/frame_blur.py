"""Blur by averaging sharp frames in linear light (the GOPRO way), and writing blurred/sharp pairs as a dataset.

A blurred frame is what a shutter open over several consecutive sharp frames records: their mean in linear light
(the display gamma undone, the frames averaged, the gamma redone). Its sharp frame is the middle one. The camera
blur of `data.camera_blur` uses the same linear-light helpers and the same writer.
"""

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from data.frames import BLUR_DIR, GT_DIR, write_png
from utils.errors import UserError

GAMMA = 2.2
"""The display gamma undone before averaging: the GOPRO dataset approximated its camera's response by gamma 2.2."""


def to_linear(rgb: np.ndarray) -> np.ndarray:
    """uint8 display values -> linear light in [0, 1] (float32)."""
    return np.power(rgb.astype(np.float32) / 255.0, GAMMA)


def to_display(linear: np.ndarray) -> np.ndarray:
    """Linear light -> uint8 display values (gamma re-applied, rounded)."""
    return np.round(np.power(np.clip(linear, 0.0, 1.0), 1.0 / GAMMA) * 255.0).astype(np.uint8)


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


def write_pairs(root: Path, video: str, pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> int:
    """Write pairs as ``root/blur/video/00000.png`` and ``root/gt/video/00000.png``; returns the count.

    Refuses (UserError, nothing written) when either video folder already holds files.
    """
    blur_dir, gt_dir = Path(root) / BLUR_DIR / video, Path(root) / GT_DIR / video
    for folder in (blur_dir, gt_dir):
        if folder.exists() and any(folder.iterdir()):
            raise UserError(f"{folder} already holds files; choose another output folder (nothing was overwritten)")
        folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for index, (blurred, sharp) in enumerate(pairs):
        write_png(blur_dir / f"{index:05d}.png", blurred)
        write_png(gt_dir / f"{index:05d}.png", sharp)
        count += 1
    return count
