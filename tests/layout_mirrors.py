"""Tiny mirrors of the dataset layouts the field downloads (GOPRO_Large, DVD, BSD), for the layouts tests and the
inference command's end-to-end tests. Frames are a gray value per kind (blurred, gamma-blurred, sharp) plus a fixed
texture, so that a model has something to restore and the kinds can be told apart by their PSNR."""

from pathlib import Path

import numpy as np
from tiny_clips import write_image

SIZE = (8, 8)


def frame(value: int, size: tuple[int, int] = SIZE, index: int = 0) -> np.ndarray:
    """An H x W x 3 uint8 frame: ``value`` plus a diagonal texture that moves with ``index``."""
    rows, cols = np.indices(size)
    texture = ((rows * 3 + cols * 5 + index) % 16).astype(np.uint8)
    return np.repeat((value + texture)[..., None], 3, axis=2)


def write_frames(
    folder: Path, count: int, suffix: str = ".png", start: int = 0, value: int = 0, size: tuple[int, int] = SIZE
) -> None:
    for index in range(start, start + count):
        write_image(folder / f"{index:06d}{suffix}", frame(value, size, index))


def make_gopro(root: Path, splits: dict[str, dict[str, int]], size: tuple[int, int] = SIZE) -> Path:
    """GOPRO_Large: <split>/<sequence>/{blur,blur_gamma,sharp}/<frames>.png (numbered from 47, as in the download)."""
    for split, sequences in splits.items():
        for sequence, count in sequences.items():
            for kind, value in (("blur", 10), ("blur_gamma", 20), ("sharp", 30)):
                write_frames(root / split / sequence / kind, count, start=47, value=value, size=size)
    return root


def make_dvd(root: Path, videos: dict[str, int], size: tuple[int, int] = SIZE) -> Path:
    """DeepVideoDeblurring_Dataset: quantitative_datasets/<video>/{input,GT}/<frames>.jpg (and the qualitative set)."""
    for video, count in videos.items():
        write_frames(root / "quantitative_datasets" / video / "input", count, ".jpg", value=10, size=size)
        write_frames(root / "quantitative_datasets" / video / "GT", count, ".jpg", value=30, size=size)
    write_frames(root / "qualitative_datasets" / "alley" / "input", 2, ".jpg", size=size)
    return root


def make_bsd(root: Path, splits: dict[str, dict[str, int]], size: tuple[int, int] = SIZE) -> Path:
    """BSD_2ms16ms: <split>/<sequence>/{Blur,Sharp}/RGB/<frames>.png."""
    for split, sequences in splits.items():
        for sequence, count in sequences.items():
            write_frames(root / split / sequence / "Blur" / "RGB", count, value=10, size=size)
            write_frames(root / split / sequence / "Sharp" / "RGB", count, value=30, size=size)
    return root
