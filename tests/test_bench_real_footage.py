"""The no-reference measures of bench/bench_real_footage.py: each tells the harm it names from no harm."""

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import sharp_frames

SPEC = importlib.util.spec_from_file_location(
    "bench_real_footage", Path(__file__).resolve().parents[1] / "bench" / "bench_real_footage.py"
)
bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench)


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    """A textured frame with a hard-edged dark box, as real footage has both."""
    grain = np.random.default_rng(4).integers(-12, 13, (96, 128, 1))
    image = np.clip(sharp_frames(1, 96, 128, seed=4)[0].astype(np.int64) + grain, 0, 255)
    image[40:80, 50:100] //= 4
    return image.astype(np.uint8)


def test_an_unchanged_frame_does_no_harm(frame: np.ndarray) -> None:
    assert bench.measures(frame, frame) == (0.0, 1.0, 1.0)


def test_ringing_edges_count_as_halos_and_steeper_edges(frame: np.ndarray) -> None:
    soft = cv2.GaussianBlur(frame, (0, 0), 1.0).astype(np.float64)
    ringing = np.clip(soft + 3.0 * (soft - cv2.GaussianBlur(soft, (0, 0), 3.0)), 0, 255).astype(np.uint8)
    halo, _, edges = bench.measures(frame, ringing)
    assert halo > 0.02 and edges > 1.2


def test_smoothing_loses_texture_and_softens_edges_without_halos(frame: np.ndarray) -> None:
    halo, texture, edges = bench.measures(frame, cv2.GaussianBlur(frame, (0, 0), 1.5))
    assert halo == 0.0 and texture < 0.5 and edges < 0.9


def test_a_small_uniform_shift_is_no_halo(frame: np.ndarray) -> None:
    brighter = np.clip(frame.astype(np.int16) + 8, 0, 255).astype(np.uint8)
    assert bench.measures(frame, brighter)[0] == 0.0
