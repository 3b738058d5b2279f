"""Training and validation samples: windows, the repeat rule, crops and augmentation, and data errors."""

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cdvd_tsp.data.frames import write_png
from cdvd_tsp.data.videodata import SamplingOptions, VideoData, repeat_count
from cdvd_tsp.utils.errors import UserError
from conftest import make_dataset


def coordinate_video(root: Path, name: str, frames: int, height: int, width: int) -> None:
    """Frames whose pixels say where they come from: R = column, G = row, B = 10 * frame index (gt: + 100)."""
    rows, columns = np.mgrid[0:height, 0:width]
    for index in range(frames):
        for kind, offset in (("blur", 0), ("gt", 100)):
            image = np.stack([columns, rows, np.full_like(rows, 10 * index + offset)], axis=2).astype(np.uint8)
            folder = root / kind / name
            folder.mkdir(parents=True, exist_ok=True)
            write_png(folder / f"{index:03d}.png", image)


def as_uint8(frames: torch.Tensor) -> np.ndarray:
    return np.round(frames.permute(0, 2, 3, 1).numpy() * 255).astype(np.int64)


def test_windows_and_the_repeat_rule(tmp_path: Path) -> None:
    make_dataset(tmp_path, {"video0": 8, "video1": 8}, height=16, width=16)
    options = SamplingOptions(n_sequence=5, patch_size=8, n_frames_per_video=6, batch_size=2, test_every=10)
    train = VideoData(tmp_path, options, train=True)
    assert len(train.windows) == 2 * (6 - 5 + 1)  # first 6 frames of each video
    assert train.repeat == max(10 // max(4 // 2, 1), 1) == 5
    assert len(train) == 20
    test = VideoData(tmp_path, options, train=False)
    assert len(test.windows) == len(test) == 2 * (8 - 5 + 1)  # validation uses every frame, no repeat
    assert test.center_frame(5) == ("video1", "00003")
    assert [repeat_count(windows, 8, 1000) for windows in (3, 8, 800, 16000)] == [1000, 1000, 10, 1]


def test_crop_and_augmentation_are_the_same_for_every_frame_and_its_gt(tmp_path: Path) -> None:
    coordinate_video(tmp_path, "v", frames=3, height=40, width=48)
    options = SamplingOptions(n_sequence=3, patch_size=16, seed=3)
    dataset = VideoData(tmp_path, options, train=True)
    seen = set()
    for index in range(40):
        blur, gt, item = dataset[index]
        assert item == index and blur.shape == gt.shape == (3, 3, 16, 16)
        blur, gt = as_uint8(blur), as_uint8(gt)
        for frame in range(3):
            assert np.array_equal(blur[frame, ..., :2], blur[0, ..., :2])  # same place, same flips, every frame
            assert np.array_equal(gt[frame, ..., :2], blur[0, ..., :2])  # and the ground truth alike
            assert np.all(blur[frame, ..., 2] == 10 * frame) and np.all(gt[frame, ..., 2] == 10 * frame + 100)
        columns, rows = blur[0, ..., 0], blur[0, ..., 1]
        # a crop of 16 x 16 source pixels, possibly flipped and rotated: undo the rotation and flips
        transposed = bool(np.all(columns[1:, 0] != columns[0, 0]))  # columns change down the first column
        if transposed:
            columns, rows = columns.T, rows.T
        flipped_h, flipped_v = columns[0, 1] < columns[0, 0], rows[1, 0] < rows[0, 0]
        if flipped_h:
            columns, rows = columns[:, ::-1], rows[:, ::-1]
        if flipped_v:
            columns, rows = columns[::-1], rows[::-1]
        left, top = columns[0, 0], rows[0, 0]
        assert np.array_equal(columns, np.broadcast_to(np.arange(left, left + 16), (16, 16)))
        assert np.array_equal(rows, np.broadcast_to(np.arange(top, top + 16)[:, None], (16, 16)))
        assert 0 <= left <= 48 - 16 and 0 <= top <= 40 - 16
        seen.add((transposed, flipped_h, flipped_v))
    assert len(seen) >= 6  # flips and rotation each happen about half of the time


def test_samples_depend_only_on_seed_epoch_and_index(tmp_path: Path) -> None:
    make_dataset(tmp_path, {"video0": 3}, height=32, width=32)
    dataset = VideoData(tmp_path, SamplingOptions(n_sequence=3, patch_size=12, seed=1), train=True)
    first = dataset[0][0]
    assert torch.equal(dataset[1][0], dataset[1][0]) and torch.equal(dataset[0][0], first)
    dataset.set_epoch(2)
    assert not torch.equal(dataset[0][0], first)
    dataset.set_epoch(1)
    assert torch.equal(dataset[0][0], first)
    preloaded = VideoData(tmp_path, SamplingOptions(n_sequence=3, patch_size=12, seed=1, preload=True), train=True)
    assert torch.equal(preloaded[0][0], first) and torch.equal(preloaded[0][1], dataset[0][1])


def test_no_augment_is_a_plain_crop_and_validation_crops_to_the_multiple(tmp_path: Path) -> None:
    coordinate_video(tmp_path, "v", frames=3, height=42, width=50)
    plain = VideoData(tmp_path, SamplingOptions(n_sequence=3, patch_size=16, augment=False), train=True)
    for index in range(8):
        columns = as_uint8(plain[index][0])[0, ..., 0]
        assert np.all(np.diff(columns, axis=1) == 1)
    whole = VideoData(tmp_path, SamplingOptions(n_sequence=3, size_must_mode=4, rgb_range=255), train=False)
    blur, gt, _ = whole[0]
    assert blur.shape == (3, 3, 40, 48)  # bottom rows and right columns dropped
    # rgb_range 255: the tensors hold the pixel values themselves
    assert torch.equal(blur[0, 0, 0], torch.arange(48.0)) and torch.all(gt[2, 2] == 120)


def error_of(root: Path, options: SamplingOptions, train: bool = True) -> str:
    with pytest.raises(UserError) as caught:
        VideoData(root, options, train=train)
    return str(caught.value)


def test_each_data_error_names_the_video_and_the_problem(tmp_path: Path) -> None:
    options = SamplingOptions(n_sequence=5, patch_size=16)
    sizes = make_dataset(tmp_path / "sizes", {"video0": 6}, height=32, width=32)
    write_png(sizes / "gt" / "video0" / "00004.png", np.zeros((30, 32, 3), np.uint8))
    assert re.fullmatch(
        r".*video 'video0': frames differ in size: 00000\.png is 32x32, 00004\.png is 32x30", error_of(sizes, options)
    )

    short = make_dataset(tmp_path / "short", {"video0": 4, "video1": 4}, height=32, width=32)
    assert error_of(short, options).endswith("video 'video0' has 4 frames, fewer than a window of 5")
    capped = SamplingOptions(n_sequence=5, patch_size=16, n_frames_per_video=4)
    long_enough = make_dataset(tmp_path / "capped", {"video0": 6}, height=32, width=32)
    assert "has 4 frames (the first 4 are used), fewer than a window of 5" in error_of(long_enough, capped)

    empty = make_dataset(tmp_path / "empty", {"video0": 6}, height=32, width=32)
    (empty / "blur" / "video1").mkdir()
    (empty / "gt" / "video1").mkdir()
    assert "video 'video1' has no frames" in error_of(empty, options)

    mismatch = make_dataset(tmp_path / "mismatch", {"video0": 6}, height=32, width=32)
    (mismatch / "gt" / "video0" / "00005.png").unlink()
    assert "video 'video0' has 6 blurred frames but 5 sharp frames" in error_of(mismatch, options)
    (mismatch / "gt" / "video0").rename(mismatch / "gt" / "other")
    assert "blur and gt videos differ (only in blur/: video0; only in gt/: other)" in error_of(mismatch, options)

    no_gt = make_dataset(tmp_path / "no_gt", {"video0": 6}, height=32, width=32)
    for path in (no_gt / "gt" / "video0").iterdir():
        path.unlink()
    (no_gt / "gt" / "video0").rmdir()
    (no_gt / "gt").rmdir()
    assert "no 'gt' folder with the sharp frames" in error_of(no_gt, options, train=False)

    small = make_dataset(tmp_path / "small", {"video0": 6}, height=24, width=40)
    assert "frames are 40x24, smaller than --patch_size 32" in error_of(small, SamplingOptions(5, patch_size=32))


def test_training_pairs_frames_by_name_and_warns_of_what_each_set_drops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    options = SamplingOptions(n_sequence=3, patch_size=16)
    renamed = make_dataset(tmp_path / "renamed", {"video0": 4}, height=16, width=16)
    (renamed / "gt" / "video0" / "00001.png").rename(renamed / "gt" / "video0" / "00009.png")
    assert "no sharp frame for blur/video0/00001.png; no blurred frame for gt/video0/00009.png" in error_of(
        renamed, options
    )

    deep = make_dataset(tmp_path / "deep", {"video0": 4}, height=16, width=16)
    frame = np.full((16, 16, 3), 511, np.uint16)  # 0x01FF: 2 rounded, 1 if the low byte were dropped
    cv2.imwrite(str(deep / "gt" / "video0" / "00002.png"), frame)
    with caplog.at_level("WARNING", logger="cdvd_tsp.data.frames"):
        first = VideoData(deep, options, train=False)
        second = VideoData(deep, options, train=False)  # another set (or run) says it again
    assert [message.split(":")[1] for message in caplog.messages] == [" video 'video0'", " video 'video0'"]
    assert all("1 of 8 frames have more than 8 bits per sample" in message for message in caplog.messages)
    _, gt, _ = first[0]
    assert torch.equal(gt[2] * 255, torch.full((3, 16, 16), 2.0)) and len(second) == len(first)
