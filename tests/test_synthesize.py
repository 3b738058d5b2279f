"""The blur synthesizer: dataset form, sizes, determinism, linear-light averaging, static scenes stay sharp."""

import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from cdvd_tsp.data.camera_blur import (
    MotionSettings,
    camera_flow,
    make_photo_dataset,
    place_path,
    render,
    synthesize_photo_clip,
    to_linear,
)
from cdvd_tsp.data.frame_blur import average_exposure, blur_frame_sequence
from cdvd_tsp.data.frames import read_rgb, scan_dataset
from cdvd_tsp.data.sample_photos import HELD_OUT_PHOTOS, TRAIN_PHOTOS, load_photo
from cdvd_tsp.model.flow_pwc import Flow_PWC
from cdvd_tsp.synthesize import main
from cdvd_tsp.utils.errors import UserError
from cdvd_tsp.utils.paths import REPO_ROOT

TINY = {"n_frames": 6, "size": (24, 40), "settings": MotionSettings(subframes=3)}
STILL = MotionSettings(speed=(0.0, 0.0), wobble=0.0, rotation=0.0, zoom=0.0, subframes=5)


def folder_bytes(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*.png"))}


def gradient_energy(image: np.ndarray) -> float:
    image = image.astype(float)
    return float(np.abs(np.diff(image, axis=0)).mean() + np.abs(np.diff(image, axis=1)).mean())


def test_photo_dataset_has_the_dataset_form_and_sizes(tmp_path: Path) -> None:
    frames = make_photo_dataset(tmp_path, ["skimage:astronaut.png"], videos_per_photo=2, seed=3, **TINY)
    assert frames == 12
    videos = scan_dataset(tmp_path, require_gt=True)
    assert [video.name for video in videos] == ["astronaut_00", "astronaut_01"]
    for video in videos:
        assert len(video.blur) == len(video.gt) == 6
        for path in video.blur + video.gt:
            assert read_rgb(path).shape == (24, 40, 3)
    assert (tmp_path / "synthesis.json").is_file()


def test_photo_dataset_is_reproducible_under_a_seed(tmp_path: Path) -> None:
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        make_photo_dataset(tmp_path / name, ["skimage:camera.png"], 1, seed=seed, noise=2.0, jpeg_quality=80, **TINY)
    first, second, other = (folder_bytes(tmp_path / name) for name in "abc")
    assert first == second
    assert first.keys() == other.keys() and first != other


def test_motion_blurs_and_a_still_camera_does_not() -> None:
    photo = load_photo("skimage:gravel.png")  # texture everywhere, so any crop shows the blur
    rng = np.random.default_rng(0)
    still = synthesize_photo_clip(photo, 3, (32, 32), rng, STILL)
    for blurred, sharp in still:
        assert np.array_equal(blurred, sharp)
    moving = synthesize_photo_clip(photo, 3, (32, 32), rng, MotionSettings(speed=(8.0, 8.0), subframes=9))
    for blurred, sharp in moving:
        assert np.abs(blurred.astype(int) - sharp).mean() > 1.0
        # blur removes high frequencies: the blurred frame's gradients are weaker than the sharp frame's
        assert gradient_energy(blurred) < 0.9 * gradient_energy(sharp)


def test_averaging_a_static_scene_gives_the_scene() -> None:
    scene = np.random.default_rng(1).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    pairs = list(blur_frame_sequence([scene] * 14, average=7))
    assert len(pairs) == 2
    for blurred, sharp in pairs:
        assert np.array_equal(blurred, scene) and np.array_equal(sharp, scene)


def test_frames_are_averaged_in_linear_light() -> None:
    black, white = np.zeros((1, 1, 3), np.uint8), np.full((1, 1, 3), 255, np.uint8)
    # half the exposure at 0, half at 1 in linear light is 0.5, displayed as 255 * 0.5 ** (1 / 2.2) = 186.0
    assert average_exposure([black, white]).ravel().tolist() == [186, 186, 186]


def test_frame_windows_follow_average_and_stride() -> None:
    frames = [np.full((1, 1, 3), value, np.uint8) for value in range(10)]
    sharp_values = [int(sharp[0, 0, 0]) for _, sharp in blur_frame_sequence(frames, average=3, stride=2)]
    assert sharp_values == [1, 3, 5, 7]  # windows 0-2, 2-4, 4-6, 6-8; the middle frame is the sharp one
    sharp_values = [int(sharp[0, 0, 0]) for _, sharp in blur_frame_sequence(frames, average=3, stride=4)]
    assert sharp_values == [1, 5]


def test_frames_mode_writes_the_dataset_form(tmp_path: Path) -> None:
    clip = tmp_path / "clip"
    clip.mkdir()
    for index in range(9):
        iio.imwrite(clip / f"{index}.png", np.full((8, 12, 3), index * 20, np.uint8))
    assert main(["frames", str(clip), str(tmp_path / "out"), "--average", "3"]) == 0
    (video,) = scan_dataset(tmp_path / "out", require_gt=True)
    assert video.name == "clip" and len(video.blur) == 3
    assert read_rgb(video.gt[0])[0, 0, 0] == 20


def test_existing_output_is_never_overwritten(tmp_path: Path) -> None:
    make_photo_dataset(tmp_path, ["skimage:camera.png"], 1, seed=0, **TINY)
    before = folder_bytes(tmp_path)
    with pytest.raises(UserError, match="already holds files"):
        make_photo_dataset(tmp_path, ["skimage:camera.png"], 1, seed=1, **TINY)
    assert folder_bytes(tmp_path) == before


def test_held_out_photos_are_not_trained_on_and_all_are_installed() -> None:
    assert not set(HELD_OUT_PHOTOS) & set(TRAIN_PHOTOS)
    for reference in HELD_OUT_PHOTOS + TRAIN_PHOTOS:
        assert load_photo(reference).ndim == 3


def test_command_line_reports_bad_options_in_one_line(tmp_path: Path) -> None:
    script = REPO_ROOT / "code" / "synthesize.py"
    result = subprocess.run(
        [sys.executable, str(script), "photos", str(tmp_path / "x"), "--exposure", "1.5"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == "error: --exposure must be in (0, 1], got 1.5\n"
    assert not (tmp_path / "x").exists()


def test_library_errors_name_arguments_not_flags() -> None:
    with pytest.raises(ValueError, match=r"^average must be at least 1, got 0$"):
        blur_frame_sequence([], average=0)  # refused at the call, before any frame is read
    with pytest.raises(ValueError, match=r"^stride must be at least 1, got -1$"):
        blur_frame_sequence([], average=2, stride=-1)
    with pytest.raises(ValueError, match=r"^exposure must be in \(0, 1\], got 1.5$"):
        MotionSettings(exposure=1.5)
    with pytest.raises(ValueError, match=r"^jpeg_quality must be"):
        synthesize_photo_clip(np.zeros((8, 8, 3), np.uint8), 1, (4, 4), np.random.default_rng(0), jpeg_quality=101)


def test_frames_mode_refuses_a_bad_flag_before_writing(tmp_path: Path) -> None:
    clip = tmp_path / "clip"
    clip.mkdir()
    iio.imwrite(clip / "0.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(UserError, match=r"^--average must be at least 1, got 0$"):
        main(["frames", str(clip), str(tmp_path / "out"), "--average", "0"])
    assert not (tmp_path / "out").exists()


def test_a_synthesis_that_would_write_nothing_is_an_error(tmp_path: Path) -> None:
    clip = tmp_path / "clip"
    clip.mkdir()
    for index in range(20):
        iio.imwrite(clip / f"{index}.png", np.full((8, 8, 3), index, np.uint8))
    with pytest.raises(UserError) as caught:
        main(["frames", str(clip), str(tmp_path / "out"), "--average", "100"])
    assert str(caught.value) == (
        f"--average 100: a blurred frame averages 100 sharp frames, but {clip} has 20; nothing was written"
    )
    assert not (tmp_path / "out").exists()
    assert main(["frames", str(clip), str(tmp_path / "out"), "--average", "20"]) == 0  # exactly enough: one pair
    (video,) = scan_dataset(tmp_path / "out", require_gt=True)
    assert len(video.blur) == 1


def test_frames_of_another_size_are_named_before_writing(tmp_path: Path) -> None:
    clip = tmp_path / "clip"
    clip.mkdir()
    for index in range(4):
        iio.imwrite(clip / f"{index}.png", np.zeros((8, 8 if index != 2 else 10, 3), np.uint8))
    with pytest.raises(UserError, match=r"clip: frames differ in size: 0\.png is 8x8, 2\.png is 10x8$"):
        main(["frames", str(clip), str(tmp_path / "out"), "--average", "2"])
    assert not (tmp_path / "out").exists()


def as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None]


def test_camera_flow_aligns_the_second_frame_to_the_first() -> None:
    settings = MotionSettings(speed=(6.0, 6.0), rotation=1.0, zoom=0.01)
    size = (40, 48)
    photo, path = place_path(load_photo("skimage:astronaut.png"), np.random.default_rng(2), settings, size, 3)
    linear = to_linear(photo)
    first, second = (render(linear, path.matrix(time), size) for time in (1.0, 2.0))
    flow = torch.from_numpy(camera_flow(path, 1.0, 2.0, size))[None]
    assert flow.norm(dim=1).mean() > 3  # the camera really moved
    aligned, mask = Flow_PWC().warp(as_tensor(second), flow)
    inside = mask[0, 0].bool()
    error = (aligned - as_tensor(first)).abs()[0][:, inside].mean()
    unaligned = (as_tensor(second) - as_tensor(first)).abs()[0][:, inside].mean()
    assert error < 0.1 * unaligned
