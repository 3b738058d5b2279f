"""Tiny generated datasets in the dataset form, for the training tests."""

from pathlib import Path

import cv2
import numpy as np

from data.frames import write_png


def sharp_frames(frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """A textured scene drifting by one pixel per frame: [frames, H, W, 3] uint8."""
    generator = np.random.default_rng(seed)
    scene = cv2.GaussianBlur(generator.uniform(0, 255, (height + 16, width + frames + 16, 3)), (0, 0), 1.5)
    return np.stack([scene[8 : 8 + height, 8 + index : 8 + index + width] for index in range(frames)]).astype(np.uint8)


def make_dataset(
    root: Path, videos: int = 2, frames: int = 6, height: int = 40, width: int = 48, seed: int = 0
) -> Path:
    """Write ``root/blur/<video>/<frame>.png`` and ``root/gt/...``; the blur is a horizontal box blur of the gt."""
    for video in range(videos):
        sharp = sharp_frames(frames, height, width, seed + video)
        for index, frame in enumerate(sharp):
            blurred = cv2.blur(frame, (5, 1))
            for kind, image in (("gt", frame), ("blur", blurred)):
                folder = root / kind / f"video{video}"
                folder.mkdir(parents=True, exist_ok=True)
                write_png(folder / f"{index:05d}.png", image)
    return root
