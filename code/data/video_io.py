"""Frame sources for inference (a folder of frames, a video file) and a video file writer.

A source knows its frames' names, count and size up front and reads the frames lazily, one at a time, so a long
video is never held in memory. Video files are read and written with imageio-ffmpeg, which ships its own ffmpeg;
ffmpeg applies a video's rotation metadata. A video of more than 8 bits per sample (10-bit HEVC, 16-bit PNG or FFV1
streams...) is decoded as 16-bit RGB and rounded to 8 bits by `data.frames.to_8_bit`, the rule frame files follow,
with a warning once per run.
"""

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import imageio_ffmpeg
import numpy as np

from data.frames import (
    IMAGE_SUFFIXES,
    SIXTEEN_BIT,
    check_same_size,
    list_frames,
    read_rgb,
    reset_warnings,
    to_8_bit,
    warn_once,
)
from utils.errors import UserError, first_line

logger = logging.getLogger(__name__)

VIDEO_CODECS = {
    ".mp4": "libx264",
    ".m4v": "libx264",
    ".mov": "libx264",
    ".mkv": "libx264",
    ".avi": "libx264",
    ".webm": "libvpx-vp9",
}
"""Output video types this project writes, with their encoder (the bundled ffmpeg has both)."""
CODEC_QUALITY = {"libx264": ["-crf", "16", "-preset", "medium"], "libvpx-vp9": ["-crf", "20", "-b:v", "0"]}
"""Near-transparent quality: the output of a deblurrer should not be visibly re-blurred by compression."""
VIDEO_FRAME_DIGITS = 5
PIXEL_BITS = {30: 10, 36: 12, 48: 16, 64: 16}
"""ffmpeg pixel formats named by their bits per pixel (``rgb48le``, ``xv30le``): their bits per sample."""
DEEP_VIDEO = "decoded as 16-bit RGB and rounded to the nearest 8-bit value (16-bit v: round(v / 257))"


def is_video_path(path: Path) -> bool:
    """A name the writer knows as a video file type."""
    return Path(path).suffix.lower() in VIDEO_CODECS


def check_unique_stems(paths: list[Path], what: str) -> None:
    """Outputs are named ``<stem>.png``: two frames with one stem (``a.png``, ``a.jpg``) would overwrite each other."""
    seen: dict[str, Path] = {}
    for path in paths:
        if path.stem in seen:
            raise UserError(
                f"{what}: frames {seen[path.stem].name} and {path.name} would both be saved as {path.stem}.png"
            )
        seen[path.stem] = path


@dataclass(frozen=True)
class FolderSource:
    """A sequence of image files of one size, read lazily."""

    name: str
    paths: list[Path]
    size: tuple[int, int]
    """(height, width)"""

    @property
    def frame_names(self) -> list[str]:
        return [path.stem for path in self.paths]

    def __len__(self) -> int:
        return len(self.paths)

    def frames(self) -> Iterator[np.ndarray]:
        """Each frame as H x W x 3 uint8 RGB, in order."""
        for path in self.paths:
            image = read_rgb(path)
            if image.shape[:2] != self.size:
                raise UserError(
                    f"{self.name}: frame {path} is {image.shape[1]}x{image.shape[0]}, "
                    f"the others are {self.size[1]}x{self.size[0]}"
                )
            yield image


def folder_source(name: str, paths: list[Path]) -> FolderSource:
    """Check that ``paths`` (frames of the video ``name``) are readable images of one size with distinct stems; the
    errors name their folder."""
    if not paths:
        raise UserError(f"{name}: no frames (PNG, JPEG, BMP or TIFF)")
    folder = str(paths[0].parent)
    check_unique_stems(paths, folder)
    return FolderSource(name, list(paths), check_same_size(paths, folder))


def open_frame_folder(folder: Path) -> FolderSource:
    """A plain folder of frames (no blur/ and gt/ subfolders)."""
    frames = list_frames(folder)
    if not frames and (folder / "blur").is_dir():
        raise UserError(f"{folder}: holds a dataset (blur/<video>/...), not frames; pass it with --data_path")
    if not frames:
        raise UserError(f"{folder}: no frames (PNG, JPEG, BMP or TIFF) in this folder")
    return folder_source(folder.name, frames)


@dataclass(frozen=True)
class VideoSource:
    """A video file, decoded lazily by ffmpeg."""

    name: str
    path: Path
    size: tuple[int, int]
    """(height, width)"""
    fps: float
    count: int
    deep: bool = False
    """More than 8 bits per sample: decoded as 16-bit RGB and rounded by `to_8_bit`."""

    @property
    def frame_names(self) -> list[str]:
        digits = max(VIDEO_FRAME_DIGITS, len(str(self.count - 1)))
        return [f"{index:0{digits}d}" for index in range(self.count)]

    def __len__(self) -> int:
        return self.count

    def frames(self) -> Iterator[np.ndarray]:
        """Each frame as H x W x 3 uint8 RGB, in order; ffmpeg stops when the iteration stops."""
        height, width = self.size
        if self.deep:
            reader = imageio_ffmpeg.read_frames(str(self.path), pix_fmt="rgb48le", bits_per_pixel=48)
        else:
            reader = imageio_ffmpeg.read_frames(str(self.path), pix_fmt="rgb24")
        with contextlib.closing(reader):
            next(reader)  # the metadata, read again by open_video
            for raw in reader:
                if self.deep:
                    yield to_8_bit(np.frombuffer(raw, dtype="<u2").reshape(height, width, 3), SIXTEEN_BIT)
                else:
                    yield np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3).copy()  # writable, like images


def sample_bits(pixel_format: str) -> int:
    """Bits per sample of an ffmpeg pixel format as imageio-ffmpeg reports it (``yuv420p10le(tv, bt709)``: 10,
    ``rgb48be``: 16, ``yuv420p``: 8; floats such as ``grayf32le``: 32)."""
    match = re.search(r"(\d+)(?:le|be)\b", pixel_format.split("(")[0])
    if not match:
        return 8
    bits = int(match.group(1))
    if bits >= 100:  # p010le, p216le, y210le: the last two digits; rgb565le, rgb444le: 8 bits or fewer
        bits %= 100
    bits = PIXEL_BITS.get(bits, bits)
    return bits if 8 < bits <= 32 else 8


def open_video(path: Path, option: str | None = None) -> VideoSource:
    """Read a video file's size and frame rate and count its frames (ffmpeg decodes it once, without the model).
    A file ffmpeg cannot read is a `UserError` naming it (and ``option``, the flag that gave it, if any)."""
    try:
        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        with contextlib.closing(reader):
            meta = next(reader)
        count, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    except Exception as error:  # imageio-ffmpeg raises IOError, RuntimeError, StopIteration... for bad files
        if option is None:
            raise UserError(f"cannot read video {path}: {first_line(error)}") from None
        raise UserError(
            f"{option} {path}: not a folder of frames, and ffmpeg cannot read it as a video ({first_line(error)})"
        ) from None
    width, height = meta["size"]
    fps = float(meta.get("fps") or 0.0)
    warn_if_truncated(path, count, fps, float(meta.get("duration") or 0.0))
    bits = sample_bits(str(meta.get("pix_fmt") or ""))
    if bits > 8:
        warn_once("depth", f"{path}: {bits} bits per sample, {DEEP_VIDEO}")
    return VideoSource(path.stem, path, (height, width), fps, count, deep=bits > 8)


def warn_if_truncated(path: Path, count: int, fps: float, duration: float) -> None:
    """Warn when fewer frames decode than the header's duration and rate promise (a cut-off download or copy):
    ffmpeg decodes what is there and says nothing."""
    expected = duration * fps
    if expected > 0 and count < 0.95 * expected - 1:
        logger.warning(
            "%s: only %d frames decode, but its header says %.4g s at %.4g fps (about %d frames); the file may be "
            "truncated: only the %d frames are deblurred",
            path,
            count,
            duration,
            fps,
            round(expected),
            count,
        )


def open_input(path: Path) -> FolderSource | VideoSource:
    """``--input``: a folder of frames or a video file. Starts a run's frame warnings afresh
    (`data.frames.reset_warnings`)."""
    reset_warnings()
    if path.is_dir():
        return open_frame_folder(path)
    if not path.exists():
        raise UserError(f"--input {path}: no such file or folder")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise UserError(f"--input {path}: a single image; give the folder of a video's frames or a video file")
    if not path.is_file():
        raise UserError(f"--input {path}: not a regular file (a device, a pipe or a socket); give a video file")
    return open_video(path, "--input")


def partial_path(path: Path) -> Path:
    """The hidden file `VideoWriter` encodes ``path`` into, beside it, before renaming it over ``path``."""
    return path.with_name(f".{path.stem}.partial{path.suffix}")


class VideoWriter:
    """Write frames to a video file: ffmpeg encodes into a hidden file beside the target, renamed over it on success.

    An interrupted or failed run removes the partial file and leaves any earlier file at ``path`` untouched. With
    ``direct`` ffmpeg writes ``path`` itself (removed if the writing fails): for a file in a staging folder, which
    nobody reads before the folder is committed whole (utils/committed.py). Use as a context manager.
    """

    def __init__(self, path: Path, size: tuple[int, int], fps: float, direct: bool = False) -> None:
        suffix = path.suffix.lower()
        if suffix not in VIDEO_CODECS:
            raise UserError(f"{path}: cannot write {suffix or 'this'} videos; use one of {', '.join(VIDEO_CODECS)}")
        self.path = path
        self.partial = path if direct else partial_path(path)
        height, width = size
        codec = VIDEO_CODECS[suffix]
        # 4:2:0 chroma (what players expect) needs even sizes; odd ones keep full chroma rather than being resized
        pixel_format = "yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p"
        self.size = size
        self.writer = imageio_ffmpeg.write_frames(
            str(self.partial),
            (width, height),
            fps=fps,
            codec=codec,
            quality=None,
            pix_fmt_out=pixel_format,
            macro_block_size=1,
            output_params=CODEC_QUALITY[codec],
        )
        self.writer.send(None)  # starts ffmpeg

    def write(self, rgb: np.ndarray) -> None:
        if rgb.shape != (*self.size, 3):
            raise ValueError(f"frame of shape {rgb.shape} for a {self.size[1]}x{self.size[0]} video")
        self.writer.send(np.ascontiguousarray(rgb))

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        try:
            self.writer.close()
        except Exception:
            if kind is None:
                self.partial.unlink(missing_ok=True)
                raise
        if kind is None:
            if self.partial != self.path:
                os.replace(self.partial, self.path)
        else:
            self.partial.unlink(missing_ok=True)
