"""Frames on disk: natural-order listing, reading as RGB uint8, writing PNG, and the dataset form.

The dataset form (`scan_dataset` reads it, `write_pairs` writes it) is ``<root>/blur/<video>/<frames>`` with an
optional ``<root>/gt/<video>/<frames>`` holding the sharp frames under the same video names and the same frame names:
a sharp frame pairs with the blurred frame of its name without the extension (`pair_by_name`: ``gt/v/00003.png``
with ``blur/v/00003.jpg``), never by position.

`read_rgb` gives a frame as an image viewer shows it, as H x W x 3 uint8 RGB:

* gray, palette, CMYK, YCbCr and Pillow's other colour modes are converted to RGB (Pillow's conversions; an
  embedded colour profile is not applied);
* the EXIF orientation is applied (JPEG, TIFF, and PNG's eXIf chunk when it comes before the pixels), and
  `image_size` gives the oriented size from the header alone;
* what 8-bit RGB cannot hold is dropped: an alpha channel (the stored colours are kept, transparent pixels
  included), depth beyond 8 bits (16-bit samples, and 32-bit ones read as 16-bit values, rounded to the nearest
  8-bit value by `to_8_bit`, the one rule for every input, video files included; floating-point samples 0..1 the
  same way) and every page after the first of a multi-page file. `check_same_size`, which reads every frame's
  header before a run reads its pixels, warns of each once per run (`warn_once`; `reset_warnings` starts a run).

A link among the frames that leads nowhere is an error, not a frame less.
"""

import contextlib
import logging
import os
import re
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from cdvd_tsp.utils.errors import UserError, first_line

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
BLUR_DIR = "blur"
GT_DIR = "gt"
DATASET_FORM = "blur/<video>/<frames> and gt/<video>/<frames>"
PAIRING_RULE = "sharp and blurred frames pair by name, without the extension"

ORIENTATION = 0x0112
"""The EXIF tag of the orientation: 1 as stored, 2-8 mirrored and/or rotated (as `_orient` applies them)."""
TRANSPOSING = frozenset({5, 6, 7, 8})
"""Orientations that swap width and height."""
TIFF_WIDTH, TIFF_LENGTH = 256, 257
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
CONVERSIONS = {"1": "L", "P": "RGBA", "PA": "RGBA", "La": "LA", "RGBa": "RGBA"}
"""Pillow modes converted before their pixels are taken (a palette's colours; premultiplied alpha undone)."""
READ_AS_IS = frozenset({"L", "LA", "RGB", "RGBA", "RGBX", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
"""Modes whose pixels are taken as they are; every other mode (CMYK, YCbCr, LAB, HSV...) is converted to RGB."""
SIXTEEN_BIT = 65535
DROPPED = {
    "alpha": "an alpha channel, which is dropped (the stored colours are kept, transparent pixels included)",
    "depth": "more than 8 bits per sample, rounded to the nearest 8-bit value (16-bit v: round(v / 257))",
    "pages": "several pages (or frames), of which only the first is read",
}
"""What reading as 8-bit RGB drops, by kind, as the warnings of `check_same_size` say it."""


# ----- warnings given once per run

_warned: set[str] = set()
_warned_lock = threading.Lock()


def warn_once(kind: str, message: str) -> None:
    """Log ``message`` as a warning unless one of this ``kind`` was logged since the last `reset_warnings`."""
    with _warned_lock:
        if kind in _warned:
            return
        _warned.add(kind)
    logger.warning("%s (said once per run)", message)


def reset_warnings() -> None:
    """Start a run: every kind of `warn_once` warning may be given again. Called where a run opens its inputs
    (`data.layouts.find_videos`, `data.video_io.open_input`, `data.videodata.VideoData`, synthesize.py), so that
    several runs in one process each warn."""
    with _warned_lock:
        _warned.clear()


# ----- listing


def natural_key(name: str) -> list[int | str]:
    """Sort key that orders digit runs by value: 'f2.png' < 'f10.png'."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def natural_sorted(paths: list[Path]) -> list[Path]:
    return sorted(paths, key=lambda path: natural_key(path.name))


def _has_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def list_frames(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, in natural order. A link with an image's name that leads nowhere is a
    `UserError`: leaving it out would leave a hole in the sequence."""
    frames = []
    for path in Path(folder).iterdir():
        if not _has_image_name(path):
            continue
        if path.is_file():
            frames.append(path)
        elif path.is_symlink() and not path.exists():
            raise UserError(
                f"{path}: a broken link among the frames (it points to {os.readlink(path)}, which is missing)"
            )
    return natural_sorted(frames)


# ----- headers


@dataclass(frozen=True)
class FrameHeader:
    """What an image file's header says: its size as shown and what reading it as 8-bit RGB drops."""

    size: tuple[int, int]
    """(height, width) once oriented."""
    orientation: int
    """The EXIF orientation (1-8; 1 when there is none)."""
    deep: bool
    """Samples of more than 8 bits."""
    dropped: frozenset[str]
    """Kinds of `DROPPED` this file has."""


def _unreadable(path: Path, error: BaseException) -> UserError:
    return UserError(f"cannot read image {path}: {first_line(error)}")


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[Image.Image]:
    try:
        image = Image.open(path)
    except Exception as error:  # Pillow raises many types for unreadable or truncated files
        raise _unreadable(path, error) from None
    with image:
        try:
            yield image
        except UserError:
            raise
        except Exception as error:
            raise _unreadable(path, error) from None


def _raw_mode(tile: tuple) -> str:
    """The raw mode Pillow decodes a tile from (``RGB;16B`` for a 16-bit RGB PNG)."""
    args = tile[3]
    if isinstance(args, tuple):
        args = args[0] if args else ""
    return args if isinstance(args, str) else ""


def _is_deep(image: Image.Image) -> bool:
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return True
    return any(";16" in _raw_mode(tile) for tile in image.tile)  # 16-bit RGB(A): Pillow keeps the high bytes only


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation the header gives (1 if none or damaged), without decoding the pixels."""
    if image.format == "PNG" and "exif" not in image.info:
        return 1  # an eXIf chunk after the pixels is found only by decoding them; it is not applied
    try:
        value = image.getexif().get(ORIENTATION, 1)
    except Exception:  # a damaged EXIF block: shown as stored
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _stored_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of the pixels as stored. Pillow may report a TIFF's size already oriented: its tags say."""
    tags = getattr(image, "tag_v2", None)
    if tags is not None:
        width, height = tags.get(TIFF_WIDTH), tags.get(TIFF_LENGTH)
        if isinstance(width, int) and isinstance(height, int):
            return width, height
    return image.size


def _header(image: Image.Image) -> FrameHeader:
    orientation = _orientation(image)
    width, height = _stored_size(image)
    if orientation in TRANSPOSING:
        width, height = height, width
    deep = _is_deep(image)
    # an MPO's further pictures (a thumbnail, a gain map, a stereo pair's other eye) are not pages of the frame
    pages = 1 if image.format == "MPO" else getattr(image, "n_frames", 1)
    dropped = {
        "alpha": image.mode in ALPHA_MODES or "transparency" in image.info,
        "depth": deep,
        "pages": pages > 1,
    }
    return FrameHeader((height, width), orientation, deep, frozenset(kind for kind, has in dropped.items() if has))


def read_header(path: Path) -> FrameHeader:
    """The header of an image file; an unreadable one is a `UserError` naming it."""
    with _opened(Path(path)) as image:
        return _header(image)


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file as shown (its EXIF orientation applied), read from its header only."""
    return read_header(path).size


def check_same_size(paths: list[Path], what: str) -> tuple[int, int]:
    """All ``paths`` must have one size (as shown); returns it. ``what`` names the video in the error. Warns, once
    per run and kind, of what reading them as 8-bit RGB drops (`DROPPED`)."""
    headers = [(path, read_header(path)) for path in paths]
    first, size = paths[0], headers[0][1].size
    for path, header in headers[1:]:
        if header.size != size:
            raise UserError(
                f"{what}: frames differ in size: {first.name} is {size[1]}x{size[0]}, "
                f"{path.name} is {header.size[1]}x{header.size[0]}"
            )
    warn_dropped(headers, what)
    return size


def warn_dropped(headers: list[tuple[Path, FrameHeader]], what: str) -> None:
    """Warn, once per run and kind, that frames among ``headers`` lose something when read as 8-bit RGB."""
    for kind, loss in DROPPED.items():
        having = [path for path, header in headers if kind in header.dropped]
        if having:
            count = f"{len(having)} of {len(headers)} frames have" if len(headers) > 1 else "the frame has"
            warn_once(kind, f"{what}: {count} {loss}; first: {having[0]}")


# ----- pixels


def to_8_bit(values: np.ndarray, full_scale: float) -> np.ndarray:
    """Samples from 0 to ``full_scale`` as uint8 0..255, rounded to the nearest value (halves up): the one rule by
    which deeper frames and videos become 8-bit. A 16-bit sample v (``full_scale`` 65535) gives round(v / 257), in
    exact integer arithmetic; floating-point samples (``full_scale`` 1.0) give round(x * 255)."""
    if values.dtype.kind in "ui":
        scale = int(full_scale)
        return ((values.astype(np.int64) * 510 + scale) // (2 * scale)).astype(np.uint8)
    return np.floor(values.astype(np.float64) * (255.0 / full_scale) + 0.5).astype(np.uint8)


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels (H x W x C) the way the EXIF ``orientation`` says they are shown."""
    if orientation == 2:
        return pixels[:, ::-1]
    if orientation == 3:
        return pixels[::-1, ::-1]
    if orientation == 4:
        return pixels[::-1]
    if orientation == 5:
        return pixels.transpose(1, 0, 2)
    if orientation == 6:
        return np.rot90(pixels, -1)
    if orientation == 7:
        return np.rot90(pixels, 2).transpose(1, 0, 2)
    if orientation == 8:
        return np.rot90(pixels, 1)
    return pixels


def _to_8_bit_rgb(pixels: np.ndarray, path: Path) -> np.ndarray:
    """Gray, gray + alpha, RGB, RGBA or RGBX samples of any depth Pillow gives -> H x W x 3 uint8 RGB."""
    if pixels.dtype.kind == "u" and pixels.dtype.itemsize == 2:
        pixels = to_8_bit(pixels, SIXTEEN_BIT)
    elif pixels.dtype.kind == "i":  # Pillow's 32-bit mode: older Pillow versions read 16-bit gray PNGs as it
        low, high = int(pixels.min()), int(pixels.max())
        if low < 0 or high > SIXTEEN_BIT:
            raise UserError(f"{path}: 32-bit integer pixels from {low} to {high}; only 0..65535 (16-bit) can be read")
        pixels = to_8_bit(pixels, SIXTEEN_BIT)
    elif pixels.dtype.kind == "f":
        low, high = float(np.min(pixels)), float(np.max(pixels))
        if not 0.0 <= low <= high <= 1.0:  # NaN fails too
            raise UserError(f"{path}: floating-point pixels from {low:g} to {high:g}; only 0..1 can be read")
        pixels = to_8_bit(pixels, 1.0)
    elif pixels.dtype != np.uint8:
        raise UserError(f"{path}: unsupported pixel type {pixels.dtype}")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4):
        raise UserError(f"{path}: unsupported image shape {pixels.shape}")
    if pixels.shape[2] in (1, 2):  # gray, gray + alpha
        return np.repeat(pixels[:, :, :1], 3, axis=2)
    return pixels[:, :, :3]


def _decode(image: Image.Image, header: FrameHeader, path: Path) -> tuple[np.ndarray, int]:
    """Pixels through Pillow, and the orientation still to apply (Pillow applies a TIFF's own on loading)."""
    image.load()
    left = header.orientation if image.getexif().get(ORIENTATION) == header.orientation else 1
    if image.mode in CONVERSIONS:
        image = image.convert(CONVERSIONS[image.mode])
    elif image.mode not in READ_AS_IS:
        image = image.convert("RGB")
    return _to_8_bit_rgb(np.asarray(image), path), left


def _decode_deep_colour(image: Image.Image, header: FrameHeader, path: Path) -> tuple[np.ndarray, int]:
    """16-bit RGB(A) at full depth (Pillow would keep the high bytes only) through OpenCV, and the orientation still
    to apply (OpenCV applies a TIFF's own while decoding it, not a PNG's eXIf)."""
    decoded = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.dtype != np.uint16 or decoded.ndim != 3 or decoded.shape[2] not in (3, 4):
        raise UserError(f"cannot read image {path}: its {image.mode} 16-bit pixels do not decode")
    left = 1 if image.format == "TIFF" else header.orientation
    return to_8_bit(decoded[:, :, 2::-1], SIXTEEN_BIT), left


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as H x W x 3 uint8 RGB (C-contiguous and writable), as a viewer shows it (the module's
    docstring says how); an unreadable file is a `UserError` naming it. Warns of nothing: `check_same_size` does,
    from the headers."""
    path = Path(path)
    with _opened(path) as image:
        header = _header(image)
        if header.deep and image.mode in ("RGB", "RGBA"):
            rgb, orientation = _decode_deep_colour(image, header, path)
        elif header.deep and image.mode not in READ_AS_IS:
            raise UserError(f"{path}: 16-bit {image.mode} images cannot be read; convert it to 8- or 16-bit RGB")
        else:
            rgb, orientation = _decode(image, header, path)
    rgb = _orient(rgb, orientation)
    # Pillow's pixels are a read-only view of its buffer; callers own what they read (torch.from_numpy, in place)
    return rgb if rgb.flags.writeable and rgb.flags.c_contiguous else np.array(rgb, order="C")


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
    """One video of a dataset: its name, blurred frame files and (if present) the sharp frame files paired with
    them by name, in order."""

    name: str
    blur: list[Path]
    gt: list[Path] | None


def _video_dirs(folder: Path) -> dict[str, Path]:
    return {path.name: path for path in folder.iterdir() if path.is_dir() and not path.name.startswith(".")}


def _shown(paths: list[Path], where: Path, limit: int = 3) -> str:
    """Up to ``limit`` of ``paths``, relative to ``where``, and how many more."""
    names = []
    for path in paths[:limit]:
        try:
            names.append(str(path.relative_to(where)))
        except ValueError:
            names.append(str(path))
    more = len(paths) - limit
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")


def _by_name(paths: list[Path], video: str, where: Path) -> dict[str, Path]:
    named: dict[str, Path] = {}
    for path in paths:
        if path.stem in named:
            raise UserError(
                f"{where}: video '{video}': {_shown([named[path.stem], path], where)} share the name "
                f"'{path.stem}'; {PAIRING_RULE}"
            )
        named[path.stem] = path
    return named


def pair_by_name(video: str, blur: list[Path], sharp: list[Path], where: Path) -> list[Path]:
    """The sharp frames of ``video`` in the order of its blurred ones, each the one of its blurred frame's name
    without the extension (``00003.png`` with ``00003.jpg``). A frame without its pair, or two frames of one name,
    is a `UserError` naming them (relative to ``where``, the dataset's folder)."""
    blur_named, sharp_named = _by_name(blur, video, where), _by_name(sharp, video, where)
    no_sharp = [path for name, path in blur_named.items() if name not in sharp_named]
    no_blur = [path for name, path in sharp_named.items() if name not in blur_named]
    if no_sharp or no_blur:
        if len(blur) != len(sharp):
            counts = f"has {len(blur)} blurred frames but {len(sharp)} sharp frames"
        else:
            counts = f"has {len(blur)} blurred and {len(sharp)} sharp frames, but not of the same names"
        parts = [f"no sharp frame for {_shown(no_sharp, where)}" if no_sharp else ""]
        parts.append(f"no blurred frame for {_shown(no_blur, where)}" if no_blur else "")
        problems = "; ".join(part for part in parts if part)
        raise UserError(f"{where}: video '{video}' {counts}: {problems} ({PAIRING_RULE})")
    return [sharp_named[path.stem] for path in blur]


def scan_dataset(root: Path, require_gt: bool = False) -> list[VideoFrames]:
    """Videos of a dataset in the dataset form, in natural order, with their frame lists checked and paired.

    Without a ``gt/`` folder the videos have ``gt=None`` (deblurring only) unless ``require_gt``.
    Errors (a `UserError` naming the folder or video): no ``blur/``, no videos, a video without frames, blur and
    gt videos that differ, a frame without its pair (`pair_by_name`).
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
        gt_frames = pair_by_name(name, blur_frames, list_frames(gt_videos[name]), root) if has_gt else None
        videos.append(VideoFrames(name, blur_frames, gt_frames))
    return videos


def write_pairs(root: Path, video: str, pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> int:
    """Write pairs as ``root/blur/video/00000.png`` and ``root/gt/video/00000.png``; returns the count.

    Refuses (UserError, nothing written) when either video folder already holds files.
    """
    blur_dir, gt_dir = Path(root) / BLUR_DIR / video, Path(root) / GT_DIR / video
    for folder in (blur_dir, gt_dir):
        if folder.exists() and any(folder.iterdir()):
            raise UserError(f"{folder} already holds files; choose another output folder (nothing was overwritten)")
        folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for index, (blurred, sharp) in enumerate(pairs):
        write_png(blur_dir / f"{index:05d}.png", blurred)
        write_png(gt_dir / f"{index:05d}.png", sharp)
        count += 1
    return count
