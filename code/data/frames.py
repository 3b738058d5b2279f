"""Frames on disk: natural-order listing, reading as RGB uint8, writing PNG, and the dataset form.

The dataset form is ``<root>/blur/<video>/<frames>`` with an optional ``<root>/gt/<video>/<frames>`` holding the
sharp frames under the same video names and in the same number.
"""

import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import cv2
import imageio.v3 as iio
import numpy as np
from PIL import Image

from utils.errors import UserError, first_line

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
BLUR_DIR = "blur"
GT_DIR = "gt"
DATASET_FORM = "blur/<video>/<frames> and gt/<video>/<frames>"


def natural_key(name: str) -> list[int | str]:
    """Sort key that orders digit runs by value: 'f2.png' < 'f10.png'."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def natural_sorted(paths: list[Path]) -> list[Path]:
    return sorted(paths, key=lambda path: natural_key(path.name))


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def list_frames(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, in natural order."""
    return natural_sorted([path for path in Path(folder).iterdir() if is_image(path)])


def to_rgb_uint8(image: np.ndarray, source: Path | str = "image") -> np.ndarray:
    """Grayscale, RGBA (alpha dropped) and 16-bit images become H x W x 3 uint8 RGB."""
    if image.dtype == np.uint16:
        image = np.round(image / 257.0).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise UserError(f"{source}: unsupported pixel type {image.dtype} (expected 8- or 16-bit)")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise UserError(f"{source}: unsupported image shape {image.shape}")
    if image.shape[2] in (1, 2):  # gray, gray + alpha
        image = np.repeat(image[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as H x W x 3 uint8 RGB; an unreadable file is a `UserError` naming it."""
    try:
        image = iio.imread(path, plugin="pillow")
    except Exception as error:  # imageio raises many types for unreadable or truncated files
        reason = first_line(error)
        raise UserError(f"cannot read image {path}: {reason}") from None
    return to_rgb_uint8(np.asarray(image), path)


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file, read from its header only."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception as error:
        reason = first_line(error)
        raise UserError(f"cannot read image {path}: {reason}") from None
    return height, width


def check_same_size(paths: list[Path], what: str) -> tuple[int, int]:
    """All ``paths`` must have one size; returns it. ``what`` names the video in the error."""
    size = image_size(paths[0])
    for path in paths[1:]:
        other = image_size(path)
        if other != size:
            raise UserError(
                f"{what}: frames differ in size: {paths[0].name} is {size[1]}x{size[0]}, "
                f"{path.name} is {other[1]}x{other[0]}"
            )
    return size


def write_png(path: Path, rgb: np.ndarray, direct: bool = False) -> None:
    """Write an H x W x 3 uint8 RGB image as PNG (OpenCV: several times faster than Pillow at this).

    The file appears whole or not at all: it is written to a hidden temporary file in the same folder, renamed
    over ``path`` when complete and removed if writing fails (not flushed to disk first: a frame can be made
    again, and a sync per frame is slow). With ``direct`` it is written straight to ``path`` (removed if writing
    fails): for a file in a staging folder, which nobody reads before the folder is committed whole
    (utils/committed.py). A target that exists and is no regular file (``/dev/null``) is written in place.
    """
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise OSError(f"cannot encode PNG for {path}")
    path = Path(path)
    if path.exists() and not path.is_file():
        path.write_bytes(encoded.tobytes())
        return
    written = path if direct else path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(written, "wb" if direct else "xb") as file:  # the usual mode for a new file, unlike mkstemp's
            file.write(encoded.tobytes())
        if not direct:
            os.replace(written, path)
    except BaseException:
        written.unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class VideoFrames:
    """One video of a dataset: its name, blurred frame files and (if present) sharp frame files, in order."""

    name: str
    blur: list[Path]
    gt: list[Path] | None


def _video_dirs(folder: Path) -> dict[str, Path]:
    return {path.name: path for path in folder.iterdir() if path.is_dir() and not path.name.startswith(".")}


def scan_dataset(root: Path, require_gt: bool = False) -> list[VideoFrames]:
    """Videos of a dataset in the dataset form, in natural order, with their frame lists checked.

    Without a ``gt/`` folder the videos have ``gt=None`` (deblurring only) unless ``require_gt``.
    Errors (a `UserError` naming the folder or video): no ``blur/``, no videos, a video without frames, blur and
    gt videos that differ, frame counts that differ.
    """
    root = Path(root)
    blur_root, gt_root = root / BLUR_DIR, root / GT_DIR
    if not root.is_dir():
        raise UserError(f"dataset folder not found: {root}")
    if not blur_root.is_dir():
        raise UserError(f"{root}: no '{BLUR_DIR}' folder; a dataset has the form {DATASET_FORM}")
    has_gt = gt_root.is_dir()
    if require_gt and not has_gt:
        raise UserError(f"{root}: no '{GT_DIR}' folder with the sharp frames; a dataset has the form {DATASET_FORM}")
    blur_videos = _video_dirs(blur_root)
    if not blur_videos:
        raise UserError(f"{blur_root}: no video folders; a dataset has the form {DATASET_FORM}")
    gt_videos = _video_dirs(gt_root) if has_gt else {}
    if has_gt and set(gt_videos) != set(blur_videos):
        only_blur = sorted(set(blur_videos) - set(gt_videos), key=natural_key)
        only_gt = sorted(set(gt_videos) - set(blur_videos), key=natural_key)
        parts = [
            f"only in blur/: {', '.join(only_blur)}" if only_blur else "",
            f"only in gt/: {', '.join(only_gt)}" if only_gt else "",
        ]
        raise UserError(f"{root}: blur and gt videos differ ({'; '.join(part for part in parts if part)})")

    videos = []
    for name in sorted(blur_videos, key=natural_key):
        blur_frames = list_frames(blur_videos[name])
        if not blur_frames:
            raise UserError(f"{blur_videos[name]}: video '{name}' has no frames (PNG, JPEG, BMP or TIFF)")
        gt_frames = None
        if has_gt:
            gt_frames = list_frames(gt_videos[name])
            if len(gt_frames) != len(blur_frames):
                raise UserError(
                    f"{root}: video '{name}' has {len(blur_frames)} blurred frames but {len(gt_frames)} sharp frames"
                )
        videos.append(VideoFrames(name, blur_frames, gt_frames))
    return videos
