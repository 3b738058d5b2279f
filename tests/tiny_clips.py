"""Small generated clips and seeded weights for the inference tests."""

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from model.cdvd_tsp import CDVD_TSP


def sharp_frames(count: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """A smooth random scene panning right and down by one pixel a frame, as H x W x 3 uint8 RGB."""
    rng = np.random.default_rng(seed)
    scene = rng.integers(0, 256, (height + count, width + count, 3), dtype=np.uint8)
    scene = cv2.GaussianBlur(scene, (0, 0), 2.0)
    return [np.ascontiguousarray(scene[index : index + height, index : index + width]) for index in range(count)]


def blurred(frame: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(frame, (0, 0), 1.2)


def write_image(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB, RGBA or gray uint8 image with OpenCV (which wants BGR order)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    order = {3: [2, 1, 0], 4: [2, 1, 0, 3]}
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., order[rgb.shape[2]]]) if rgb.ndim == 3 else rgb):
        raise OSError(f"cannot write {path}")


def make_dataset(root: Path, videos: dict[str, int], height: int = 38, width: int = 50, gt: bool = True) -> Path:
    """``root/blur/<video>/<00000.png ...>`` (and ``gt/``) with ``videos[name]`` frames each; returns ``root``."""
    for seed, (name, count) in enumerate(videos.items()):
        for index, sharp in enumerate(sharp_frames(count, height, width, seed)):
            write_image(root / "blur" / name / f"{index:05d}.png", blurred(sharp))
            if gt:
                write_image(root / "gt" / name / f"{index:05d}.png", sharp)
    return root


def seeded_model(seed: int = 0, n_sequence: int = 5) -> CDVD_TSP:
    """A CDVD-TSP with PyTorch's default initialisation drawn from ``seed``, in eval mode."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return CDVD_TSP(n_sequence=n_sequence).eval()


def save_seeded_weights(path: Path, seed: int = 0) -> Path:
    torch.save(seeded_model(seed).state_dict(), path)
    return path


@pytest.fixture
def single_thread() -> Iterator[None]:
    """One intra-op thread while the test runs: on a small shared machine, two threads under load are far slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
