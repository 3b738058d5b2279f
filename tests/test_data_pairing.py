"""Each blurred frame goes with the sharp frame of its name, in its video, wherever frames are read: the dataset form
(`scan_dataset`), the downloaded layouts (`find_videos`), and the training and validation samples (`VideoData`,
read from disk or preloaded), through the training crops and flips.

Every frame here says what it is in its pixels: blue is its number (the video's and the frame's), red and green its
column and row (plus 128 in red for a sharp frame). Names are numbered with gaps and sort otherwise as text than as
numbers; the sharp frames are written in another order, some under another extension.
"""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cdvd_tsp.data.frames import read_rgb, scan_dataset, write_png
from cdvd_tsp.data.layouts import find_videos
from cdvd_tsp.data.videodata import SamplingOptions, VideoData

SHARP = 128
HEIGHT, WIDTH = 20, 24
VIDEOS = {"clip10": [3, 9, 12, 30], "clip2": [7, 10, 13, 16, 100], "clip9": [0, 1, 2]}
"""Video name: the numbers of its frames (natural order: clip2, clip9, clip10; f7 < f10 < f100 as numbers)."""


def frame_id(video: str, number: int) -> int:
    return 1 + list(VIDEOS).index(video) * 40 + list(VIDEOS[video]).index(number) * 8 + number % 8


def coded_frame(video: str, number: int, sharp: bool) -> np.ndarray:
    rows, columns = np.mgrid[0:HEIGHT, 0:WIDTH]
    code = np.full_like(rows, frame_id(video, number))
    return np.stack([columns + (SHARP if sharp else 0), rows, code], axis=2).astype(np.uint8)


def write_video(
    blur_folder: Path, sharp_folder: Path, video: str, name: str = "f{}", sharp_suffix: str = ".bmp"
) -> None:
    numbers = VIDEOS[video]
    blur_folder.mkdir(parents=True, exist_ok=True)
    for number in numbers:
        write_png(blur_folder / f"{name.format(number)}.png", coded_frame(video, number, sharp=False))
    for position, number in enumerate(reversed(numbers)):  # written in the other order, every other one re-saved
        suffix = sharp_suffix if position % 2 else ".png"
        path = sharp_folder / f"{name.format(number)}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        image = coded_frame(video, number, sharp=True)
        if suffix == ".png":
            write_png(path, image)
        else:
            assert cv2.imwrite(str(path), image[..., ::-1])


def make_coded_dataset(root: Path) -> Path:
    for video in VIDEOS:
        write_video(root / "blur" / video, root / "gt" / video, video)
    return root


def ids_in_order(video: str) -> list[int]:
    return [frame_id(video, number) for number in VIDEOS[video]]


def assert_pairs(video: str, blur: list[Path], sharp: list[Path]) -> None:
    """The files of ``video``: its frames in the order of their numbers, each blurred one with its sharp one."""
    blur_images = [read_rgb(path).astype(np.int64) for path in blur]
    sharp_images = [read_rgb(path).astype(np.int64) for path in sharp]
    assert [int(image[0, 0, 2]) for image in blur_images] == ids_in_order(video)
    for blurred, sharp_image in zip(blur_images, sharp_images, strict=True):
        assert np.array_equal(sharp_image[..., 1:], blurred[..., 1:])  # the same frame number, row for row
        assert np.array_equal(sharp_image[..., 0], blurred[..., 0] + SHARP)


def test_the_dataset_form_pairs_each_blurred_frame_with_its_sharp_one(tmp_path: Path) -> None:
    videos = scan_dataset(make_coded_dataset(tmp_path), require_gt=True)
    assert [video.name for video in videos] == ["clip2", "clip9", "clip10"]
    for video in videos:
        assert_pairs(video.name, video.blur, video.gt)


def write_layout(root: Path, layout: str) -> Path:
    for video in VIDEOS:
        if layout == "gopro":
            folder = root / "GOPRO_Large" / "test" / f"GOPR{video}"
            write_video(folder / "blur", folder / "sharp", video, name="{:06d}")
            write_video(folder / "blur_gamma", folder / "sharp", video, name="{:06d}")
        elif layout == "dvd":
            folder = root / "DVD" / "quantitative_datasets" / f"IMG_{video}"
            write_video(folder / "input", folder / "GT", video, name="{:05d}")
        else:
            folder = root / "BSD" / "test" / f"0{video}"
            write_video(folder / "Blur" / "RGB", folder / "Sharp" / "RGB", video, name="{:08d}", sharp_suffix=".tif")
    return root / {"gopro": "GOPRO_Large", "dvd": "DVD", "bsd": "BSD"}[layout]


@pytest.mark.parametrize("layout", ["gopro", "dvd", "bsd"])
def test_each_downloaded_layout_pairs_each_blurred_frame_with_its_sharp_one(tmp_path: Path, layout: str) -> None:
    videos = find_videos(write_layout(tmp_path, layout))
    assert len(videos) == len(VIDEOS)
    for video in videos:
        name = next(candidate for candidate in VIDEOS if video.name.endswith(candidate))
        assert video.blur[0].parent.name in ("blur", "input", "RGB")
        assert_pairs(name, video.blur, video.gt)


def pixels(frames: torch.Tensor) -> np.ndarray:
    """[n, 3, H, W] in [0, 1] as the frames' uint8 values [n, H, W, 3]."""
    return np.round(frames.permute(0, 2, 3, 1).numpy() * 255).astype(np.int64)


def all_windows(n_sequence: int, keep: int | None = None) -> list[list[int]]:
    """The frame ids of every window of ``n_sequence`` frames (of the first ``keep`` of each video), videos in natural
    order."""
    windows = []
    for video in ("clip2", "clip9", "clip10"):
        ids = ids_in_order(video)[:keep]
        windows += [ids[start : start + n_sequence] for start in range(len(ids) - n_sequence + 1)]
    return windows


@pytest.mark.parametrize("preload", [False, True])
def test_validation_windows_pair_every_frame_with_its_sharp_one(tmp_path: Path, preload: bool) -> None:
    root = make_coded_dataset(tmp_path)
    dataset = VideoData(root, SamplingOptions(n_sequence=3, size_must_mode=4, preload=preload), train=False)
    assert len(dataset) == len(all_windows(3)) == 3 + 1 + 2
    for index, expected in enumerate(all_windows(3)):
        blur, gt, item = dataset[index]
        blur, gt = pixels(blur), pixels(gt)
        assert item == index and blur.shape == (3, HEIGHT, WIDTH, 3)
        assert [int(frame[0, 0, 2]) for frame in blur] == expected
        assert np.array_equal(gt[..., 1:], blur[..., 1:]) and np.array_equal(gt[..., 0], blur[..., 0] + SHARP)
        video, stem = dataset.center_frame(index)
        center = next(number for number in VIDEOS[video] if frame_id(video, number) == expected[1])
        assert stem == f"f{center}"


@pytest.mark.parametrize("preload", [False, True])
def test_training_crops_and_flips_pair_every_frame_with_its_sharp_one(tmp_path: Path, preload: bool) -> None:
    root = make_coded_dataset(tmp_path)
    options = SamplingOptions(n_sequence=3, patch_size=8, n_frames_per_video=4, seed=5, batch_size=1, preload=preload)
    dataset = VideoData(root, options, train=True)
    windows = all_windows(3, keep=4)
    assert len(dataset.windows) == len(windows) == 2 + 1 + 2
    for epoch in (1, 2):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            blur, gt, _ = dataset[index]
            blur, gt = pixels(blur), pixels(gt)
            assert blur.shape == gt.shape == (3, 8, 8, 3)
            assert [int(frame[0, 0, 2]) for frame in blur] == windows[index % len(windows)]
            # the same window of the same frames, flipped and turned alike, for every frame and its sharp frame
            assert np.array_equal(gt[..., 1:], blur[..., 1:]) and np.array_equal(gt[..., 0], blur[..., 0] + SHARP)
            assert all(np.array_equal(frame[..., :2], blur[0, ..., :2]) for frame in blur)
