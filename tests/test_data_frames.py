"""Frame listing, reading (colour modes, orientation, depth, what is dropped) and the dataset form."""

import errno
import io
import logging
import os
import struct
import warnings
import zlib
from pathlib import Path

import cv2
import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image, ImageOps

from cdvd_tsp.data import frames as frames_module
from cdvd_tsp.data.frames import (
    check_same_size,
    image_size,
    list_frames,
    read_header,
    read_rgb,
    reset_warnings,
    scan_dataset,
    to_8_bit,
    write_png,
)
from cdvd_tsp.utils.errors import UserError

RAMP = np.arange(65536, dtype=np.uint16).reshape(256, 256)
"""Every 16-bit value once."""


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


# ----- pixels: colour modes, depth, orientation, what is dropped


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_raw_png(path: Path, pixels: np.ndarray, color_type: int, exif: bytes | None = None, late_exif: bool = False):
    """A PNG written chunk by chunk (Pillow and OpenCV write no 16-bit gray + alpha, nor an eXIf after the pixels):
    ``pixels`` H x W x C, uint8 or uint16 (big-endian on disk)."""
    height, width = pixels.shape[:2]
    depth = 16 if pixels.dtype == np.uint16 else 8
    rows = pixels.astype(">u2" if depth == 16 else "u1").reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0))
    exif_chunk = png_chunk(b"eXIf", exif) if exif else b""
    body = png_chunk(b"IDAT", zlib.compress(raw))
    middle = body + exif_chunk if late_exif else exif_chunk + body
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + header + middle + png_chunk(b"IEND", b""))


def exif_with(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def test_to_8_bit_rounds_to_the_nearest_value() -> None:
    values = np.array([0, 128, 129, 385, 386, 32767, 32896, 65406, 65407, 65535], np.uint16)
    assert to_8_bit(values, 65535).tolist() == [0, 0, 1, 1, 2, 127, 128, 254, 255, 255]
    floats = np.array([0.0, 0.5 / 255, 0.49 / 255, 0.5, 254.5 / 255, 1.0])
    assert to_8_bit(floats, 1.0).tolist() == [0, 1, 0, 128, 255, 255]
    assert np.array_equal(to_8_bit(RAMP, 65535), np.round(RAMP / 257.0).astype(np.uint8))


def write_16_bit(path: Path, kind: str) -> np.ndarray:
    """Write RAMP (every 16-bit value) as a 16-bit file of ``kind``; returns the RGB it holds (uint16)."""
    rgb = np.stack([RAMP, RAMP[::-1], RAMP.T], axis=2)
    if kind == "gray png":
        cv2.imwrite(str(path), RAMP)
        return np.repeat(RAMP[:, :, None], 3, axis=2)
    if kind == "gray + alpha png":
        write_raw_png(path, np.stack([RAMP, np.full_like(RAMP, 65535)], axis=2), color_type=4)
        return np.repeat(RAMP[:, :, None], 3, axis=2)
    if kind == "rgba png":
        cv2.imwrite(str(path), np.concatenate([rgb[:, :, ::-1], np.full_like(RAMP, 65535)[:, :, None]], axis=2))
        return rgb
    cv2.imwrite(str(path), rgb[:, :, ::-1])  # rgb png, rgb tiff
    return rgb


@pytest.mark.parametrize("kind", ["gray png", "gray + alpha png", "rgb png", "rgba png", "rgb tiff"])
def test_every_16_bit_file_rounds_by_the_one_rule(tmp_path: Path, kind: str) -> None:
    path = tmp_path / ("frame.tif" if "tiff" in kind else "frame.png")
    stored = write_16_bit(path, kind)
    rgb = read_rgb(path)
    assert rgb.dtype == np.uint8 and np.array_equal(rgb, to_8_bit(stored, 65535))
    assert rgb[1, 255, 0] == 2  # 511 = 0x01FF: rounded, not truncated to its high byte (1)


def test_32_bit_and_floating_point_gray_frames(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 511, 65535]], np.int32), "I").save(tmp_path / "i.tif")
    assert read_rgb(tmp_path / "i.tif")[0, :, 0].tolist() == [0, 2, 255]  # read as 16-bit values
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32), "F").save(tmp_path / "f.tif")
    assert read_rgb(tmp_path / "f.tif")[0, :, 0].tolist() == [0, 128, 255]
    Image.fromarray(np.array([[0, 70000]], np.int32), "I").save(tmp_path / "wide.tif")
    with pytest.raises(UserError, match=r"wide\.tif: 32-bit integer pixels from 0 to 70000; only 0\.\.65535"):
        read_rgb(tmp_path / "wide.tif")
    Image.fromarray(np.array([[0.0, 1.5]], np.float32), "F").save(tmp_path / "hdr.tif")
    with pytest.raises(UserError, match=r"hdr\.tif: floating-point pixels from 0 to 1\.5; only 0\.\.1"):
        read_rgb(tmp_path / "hdr.tif")


def palette_image() -> Image.Image:
    image = Image.new("P", (3, 2))
    image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    image.putpixel((1, 0), 1)
    return image


@pytest.mark.parametrize(
    ("name", "make", "top_left", "tolerance"),
    [
        ("cmyk.jpg", lambda: Image.new("CMYK", (3, 2), (0, 255, 255, 0)), (255, 0, 0), 3),  # red, not cyan
        ("cmyk.tif", lambda: Image.new("CMYK", (3, 2), (255, 0, 0, 0)), (0, 255, 255), 0),  # cyan, not red
        ("palette.png", palette_image, (10, 20, 30), 0),
        ("palette.bmp", palette_image, (10, 20, 30), 0),
        ("ycbcr.tif", lambda: Image.new("YCbCr", (3, 2), (100, 128, 128)), (100, 100, 100), 0),
        ("lab.tif", lambda: Image.new("LAB", (3, 2), (128, 128, 128)), (119, 119, 119), 0),  # L* 50: sRGB 119
        ("bilevel.png", lambda: Image.new("1", (3, 2), 1), (255, 255, 255), 0),
        ("gray.png", lambda: Image.new("L", (3, 2), 77), (77, 77, 77), 0),
    ],
)
def test_colour_modes_become_the_rgb_a_viewer_shows(
    tmp_path: Path, name: str, make, top_left: tuple[int, int, int], tolerance: int
) -> None:
    make().save(tmp_path / name)
    rgb = read_rgb(tmp_path / name)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert np.abs(rgb[0, 0].astype(int) - top_left).max() <= tolerance, rgb[0, 0]
    if name.startswith("palette"):
        assert rgb[0, 1].tolist() == [200, 100, 50]


def test_a_palette_with_transparency_gives_its_colours_without_pillow_s_warning(tmp_path: Path) -> None:
    image = palette_image()
    image.info["transparency"] = bytes([0, 128] + [255] * 254)  # per-entry alpha, as PNG's tRNS chunk holds it
    image.save(tmp_path / "palette.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow warns when such a palette is converted straight to RGB
        rgb = read_rgb(tmp_path / "palette.png")
    assert rgb[0, :2].tolist() == [[10, 20, 30], [200, 100, 50]]
    assert "alpha" in read_header(tmp_path / "palette.png").dropped


def oriented_source() -> np.ndarray:
    """A 2 x 3 RGB image whose every pixel differs."""
    return (np.arange(18, dtype=np.uint8).reshape(2, 3, 3) * 13).astype(np.uint8)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pillow_shows_it(tmp_path: Path, orientation: int) -> None:
    path = tmp_path / "frame.png"
    write_raw_png(path, oriented_source(), color_type=2, exif=exif_with(orientation))
    shown = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert shown.shape[:2] == ((3, 2) if orientation >= 5 else (2, 3))  # the reference itself turned it
    assert np.array_equal(read_rgb(path), shown)
    assert image_size(path) == shown.shape[:2]


def test_orientation_6_turns_a_portrait_photo_upright(tmp_path: Path) -> None:
    stored = oriented_source()
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif_with(6), quality=100, subsampling=0)
    rgb = read_rgb(tmp_path / "phone.jpg")
    assert rgb.shape == (3, 2, 3) and image_size(tmp_path / "phone.jpg") == (3, 2)
    # turned clockwise: the stored top-left pixel is shown top-right, the stored top-right one bottom-right
    assert np.abs(rgb[0, 1].astype(int) - stored[0, 0]).max() <= 8
    assert np.abs(rgb[2, 1].astype(int) - stored[0, 2]).max() <= 8


@pytest.mark.parametrize("kind", ["8-bit tiff", "16-bit tiff", "16-bit png", "late exif png"])
def test_orientation_of_tiff_and_16_bit_files_agrees_with_the_size(tmp_path: Path, kind: str) -> None:
    stored = oriented_source()
    deep = stored.astype(np.uint16) * 257
    path = tmp_path / ("frame.tif" if "tiff" in kind else "frame.png")
    if kind == "8-bit tiff":
        Image.fromarray(stored).save(path, exif=exif_with(6))
    elif kind == "16-bit tiff":
        import tifffile

        tifffile.imwrite(path, deep, photometric="rgb", extratags=[(0x0112, "H", 1, 6, True)])
    elif kind == "16-bit png":
        write_raw_png(path, deep, color_type=2, exif=exif_with(6))
    else:  # an eXIf after the pixels is not applied: the size, read from the header, could not show it
        write_raw_png(path, stored, color_type=2, exif=exif_with(6), late_exif=True)
    rgb = read_rgb(path)
    expected = stored if kind == "late exif png" else np.rot90(stored, -1)
    assert np.array_equal(rgb, expected) and image_size(path) == rgb.shape[:2]


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]


def test_what_8_bit_rgb_drops_is_said_once_per_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rgb = oriented_source()
    Image.fromarray(rgb).save(tmp_path / "0.png")
    Image.fromarray(np.concatenate([rgb, np.full((2, 3, 1), 128, np.uint8)], axis=2)).save(tmp_path / "1.png")
    Image.fromarray(rgb).save(tmp_path / "2.tif", save_all=True, append_images=[Image.new("RGB", (3, 2))])
    cv2.imwrite(str(tmp_path / "3.png"), rgb.astype(np.uint16)[:, :, ::-1] * 257)
    palette = palette_image()
    palette.save(tmp_path / "4.png", transparency=0)
    frames = list_frames(tmp_path)
    reset_warnings()
    with caplog.at_level(logging.WARNING, logger="cdvd_tsp.data.frames"):
        check_same_size(frames, "clip")
        check_same_size(frames, "clip")  # the same run: nothing more
        said = warnings_of(caplog)
        assert len(said) == 3, said
        alpha, depth, pages = said
        assert alpha.startswith("clip: 2 of 5 frames have an alpha channel, which is dropped") and "1.png" in alpha
        assert depth.startswith("clip: 1 of 5 frames have more than 8 bits per sample, rounded to the nearest")
        assert pages.startswith("clip: 1 of 5 frames have several pages") and pages.endswith("(said once per run)")
        reset_warnings()  # a new run says it again
        check_same_size(frames, "clip")
        assert len(warnings_of(caplog)) == 6
    first_page = read_rgb(tmp_path / "2.tif")
    assert np.array_equal(first_page, rgb)
    assert np.array_equal(read_rgb(tmp_path / "1.png"), rgb)  # alpha dropped, the stored colours kept


def test_a_frame_that_loses_nothing_draws_no_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    Image.fromarray(oriented_source()).save(tmp_path / "0.jpg", exif=exif_with(6))
    Image.new("CMYK", (2, 3)).save(tmp_path / "1.jpg")
    reset_warnings()
    with caplog.at_level(logging.WARNING):
        assert check_same_size(list_frames(tmp_path), "clip") == (3, 2)
    assert warnings_of(caplog) == []


def test_a_broken_link_among_the_frames_is_an_error(tmp_path: Path) -> None:
    make_video(tmp_path, 3)
    os.symlink(tmp_path / "gone.png", tmp_path / "00001b.png")
    os.symlink(tmp_path / "00000.png", tmp_path / "00003.png")  # a link that works is a frame
    with pytest.raises(UserError, match=r"00001b\.png: a broken link among the frames \(it points to .*gone\.png"):
        list_frames(tmp_path)
    (tmp_path / "00001b.png").unlink()
    assert [path.name for path in list_frames(tmp_path)] == ["00000.png", "00001.png", "00002.png", "00003.png"]


# ----- pairing sharp and blurred frames


def test_sharp_frames_pair_with_the_blurred_frames_of_their_name_whatever_the_extension(tmp_path: Path) -> None:
    make_video(tmp_path / "blur" / "v", 3)
    make_video(tmp_path / "gt" / "v", 0, names=["00002.jpg", "00000.png", "00001.png"])  # re-saved, another order
    (video,) = scan_dataset(tmp_path, require_gt=True)
    assert [(blur.name, gt.name) for blur, gt in zip(video.blur, video.gt, strict=True)] == [
        ("00000.png", "00000.png"),
        ("00001.png", "00001.png"),
        ("00002.png", "00002.jpg"),
    ]


def test_a_sharp_frame_missing_and_another_added_is_named(tmp_path: Path) -> None:
    make_video(tmp_path / "blur" / "v", 5)
    make_video(tmp_path / "gt" / "v", 5)
    (tmp_path / "gt" / "v" / "00002.png").unlink()
    make_video(tmp_path / "gt" / "v", 0, names=["00007.png"])
    with pytest.raises(UserError) as caught:
        scan_dataset(tmp_path)
    assert str(caught.value) == (
        f"{tmp_path}: video 'v' has 5 blurred and 5 sharp frames, but not of the same names: no sharp frame for "
        "blur/v/00002.png; no blurred frame for gt/v/00007.png (sharp and blurred frames pair by name, without the "
        "extension)"
    )


def test_two_frames_of_one_name_cannot_pair(tmp_path: Path) -> None:
    make_video(tmp_path / "blur" / "v", 2)
    make_video(tmp_path / "gt" / "v", 0, names=["00000.png", "00001.png", "00001.jpg"])
    with pytest.raises(UserError, match=r"video 'v': gt/v/00001\.jpg, gt/v/00001\.png share the name '00001'"):
        scan_dataset(tmp_path)


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


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif", ".bmp"])
def test_frames_are_read_into_arrays_the_caller_owns(tmp_path: Path, suffix: str) -> None:
    """Writable and C-contiguous, as the video frames are: torch.from_numpy warns on a read-only array."""
    rgb = np.random.default_rng(4).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / f"frame{suffix}")
    image = read_rgb(tmp_path / f"frame{suffix}")
    assert image.flags.writeable and image.flags.c_contiguous and image.shape == (6, 9, 3)
