"""Frame listing, reading and the dataset form."""

import errno
import io
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from data import frames as frames_module
from data.frames import check_same_size, list_frames, read_rgb, scan_dataset, write_png
from utils.errors import UserError
from utils.paths import REPO_ROOT, from_repo


def make_video(folder: Path, count: int, size: tuple[int, int] = (8, 12), names: list[str] | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(names or [f"{index:05d}.png" for index in range(count)]):
        iio.imwrite(folder / name, np.full((*size, 3), index, np.uint8))


def test_frames_are_listed_in_natural_order_and_non_images_skipped(tmp_path: Path) -> None:
    make_video(tmp_path, 0, names=["f10.png", "f2.jpg", "f1.PNG", "f3.bmp", "f4.tif"])
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".hidden.png").write_bytes(b"")
    assert [path.name for path in list_frames(tmp_path)] == ["f1.PNG", "f2.jpg", "f3.bmp", "f4.tif", "f10.png"]


@pytest.mark.parametrize(
    "image",
    [
        np.arange(20, dtype=np.uint8).reshape(4, 5),
        np.arange(80, dtype=np.uint8).reshape(4, 5, 4),
        (np.arange(20, dtype=np.uint16).reshape(4, 5) * 257),
    ],
    ids=["gray", "rgba", "gray16"],
)
def test_gray_rgba_and_16_bit_images_become_rgb_uint8(tmp_path: Path, image: np.ndarray) -> None:
    path = tmp_path / "frame.png"
    iio.imwrite(path, image)
    rgb = read_rgb(path)
    assert rgb.shape == (4, 5, 3) and rgb.dtype == np.uint8
    expected = image[:, :, :3] if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
    if image.dtype == np.uint16:
        expected = (expected // 257).astype(np.uint8)
    assert np.array_equal(rgb, expected)


def test_png_round_trip_is_exact(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    write_png(tmp_path / "x.png", rgb)
    assert np.array_equal(read_rgb(tmp_path / "x.png"), rgb)


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(b"not a png")
    with pytest.raises(UserError, match=r"cannot read image .*broken\.png"):
        read_rgb(path)


def test_dataset_form_is_scanned_with_and_without_gt(tmp_path: Path) -> None:
    for name in ("video10", "video2"):
        make_video(tmp_path / "blur" / name, 3)
    videos = scan_dataset(tmp_path)
    assert [video.name for video in videos] == ["video2", "video10"]
    assert all(video.gt is None and len(video.blur) == 3 for video in videos)
    for name in ("video10", "video2"):
        make_video(tmp_path / "gt" / name, 3)
    assert all(len(video.gt) == 3 for video in scan_dataset(tmp_path, require_gt=True))


@pytest.mark.parametrize(
    "layout,message",
    [
        ({}, "no 'blur' folder"),
        ({"blur/a": 3}, "no 'gt' folder"),
        ({"blur/a": 3, "gt/b": 3}, "blur and gt videos differ \\(only in blur/: a; only in gt/: b\\)"),
        ({"blur/a": 3, "blur/b": 3, "gt/a": 3}, "blur and gt videos differ \\(only in blur/: b\\)$"),
        ({"blur/a": 3, "gt/a": 2}, "video 'a' has 3 blurred frames but 2 sharp frames"),
        ({"blur/a": 0, "gt/a": 0}, "video 'a' has no frames"),
    ],
)
def test_dataset_errors_name_the_problem(tmp_path: Path, layout: dict[str, int], message: str) -> None:
    for folder, count in layout.items():
        (tmp_path / folder).mkdir(parents=True)
        make_video(tmp_path / folder, count)
    with pytest.raises(UserError, match=message):
        scan_dataset(tmp_path, require_gt=True)


def test_frames_of_different_sizes_are_named(tmp_path: Path) -> None:
    make_video(tmp_path, 2)
    iio.imwrite(tmp_path / "00002.png", np.zeros((9, 12, 3), np.uint8))
    with pytest.raises(UserError, match=r"clip: frames differ in size: 00000\.png is 12x8, 00002\.png is 12x9"):
        check_same_size(list_frames(tmp_path), "clip")


def test_relative_paths_resolve_against_the_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # away from the repository: a path resolved against the working directory is wrong
    repository = Path(__file__).resolve().parents[1]  # found from this file, not from utils.paths
    assert repository == REPO_ROOT
    assert from_repo("dataset/DVD") == repository / "dataset" / "DVD"
    assert from_repo(Path("dataset") / "DVD") == repository / "dataset" / "DVD"
    assert from_repo(tmp_path / "mine") == tmp_path / "mine"  # absolute: itself
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert from_repo("~/clips") == tmp_path / "home" / "clips"


def test_cli_wrapper_prints_one_line_and_exits_non_zero(tmp_path: Path) -> None:
    script = (
        "from utils.errors import UserError, run_cli\ndef main():\n    raise UserError('bad --flag')\nrun_cli(main)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT / "code", capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert result.stderr == "error: bad --flag\n"


def test_a_direct_png_write_needs_no_rename_and_a_failed_one_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``direct``: for files in a staging folder (utils/committed.py), written in place, without a temporary file."""
    rgb = np.random.default_rng(2).integers(0, 256, (6, 7, 3), dtype=np.uint8)

    def no_rename(source: str, destination: str) -> None:
        raise AssertionError("a direct write renames nothing")

    monkeypatch.setattr(frames_module.os, "replace", no_rename)
    write_png(tmp_path / "x.png", rgb, direct=True)
    assert np.array_equal(read_rgb(tmp_path / "x.png"), rgb) and [path.name for path in tmp_path.iterdir()] == ["x.png"]

    class FullDisk(io.FileIO):
        def write(self, data: bytes) -> int:
            super().write(bytes(data[:10]))
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(frames_module, "open", lambda path, mode: FullDisk(path, mode), raising=False)
    with pytest.raises(OSError, match="No space left"):
        write_png(tmp_path / "y.png", rgb, direct=True)
    assert [path.name for path in tmp_path.iterdir()] == ["x.png"]  # the partial file removed
