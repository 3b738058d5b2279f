"""Frame sources for inference (a folder of frames, a video file) and a video file writer.

A source knows its frames' names, count and size up front and reads the frames lazily, one at a time, so a long
video is never held in memory. Video files are read and written in-process with PyAV (``av``, which bundles FFmpeg's
libraries): opening a video decodes it once, without the model, for its exact frame count and each frame's
timestamp. A video with rotation metadata is turned to its displayed orientation as it is decoded (what players
show), so the model sees upright frames and the output is written upright without rotation metadata. A video of more
than 8 bits per sample (10-bit HEVC, 16-bit PNG or FFV1 streams...) is decoded as 16-bit RGB and rounded to 8 bits by
`data.frames.to_8_bit`, the rule frame files follow, with a warning once per run.

The writer makes a video "like its source" (`VideoWriter` with ``source``): each output frame carries the timestamp
of the input frame it restores (variable frame rates included) in the input's time base, the last frame its
duration, and the input's audio streams are copied into it packet by packet (not re-encoded), interleaved by time.
`plan_encoding` checks an output's type, ``--codec`` and ``--quality`` and that the container can hold the input's
audio, before anything is written.
"""

import io
import itertools
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from cdvd_tsp.data.frames import (
    IMAGE_SUFFIXES,
    SIXTEEN_BIT,
    check_same_size,
    list_frames,
    read_rgb,
    reset_warnings,
    to_8_bit,
    warn_once,
)
from cdvd_tsp.utils.errors import UserError, first_line

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Codec:
    """A video codec this project writes: its FFmpeg encoder, pixel format and CRF-like quality scale."""

    encoder: str
    pixel_format: str
    worst: int | None
    """The largest (lowest-quality) ``--quality`` value; None: the codec takes no quality."""
    default: int | None
    """``--quality`` when not given: near-transparent, so that the output is not visibly re-blurred."""
    options: dict[str, str]
    even: bool = False
    """4:2:0 chroma that needs even sizes (odd ones are padded, `padded_size`)."""


CODECS = {
    "h264": Codec("libx264", "yuv420p", 51, 16, {"preset": "medium"}, even=True),
    "vp9": Codec("libvpx-vp9", "yuv420p", 63, 20, {"b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"}),
    "gif": Codec("gif", "pal8", None, None, {}),
}
"""``--codec``'s choices (but gif, which a .gif output has without asking) and what each means. ``--quality`` is
the encoder's constant rate factor: 0 the best (lossless for h264 and vp9), larger smaller and worse."""
CODEC_CHOICES = ("h264", "vp9")
"""No H.265: PyAV 18's libx265 corrupted the heap (glibc: "corrupted size vs. prev_size", the process aborted) on
some small frames (32x48) inside a run, so it is not offered."""


@dataclass(frozen=True)
class Container:
    format: str
    """FFmpeg's muxer."""
    codecs: tuple[str, ...]
    """The codecs it may hold, the default first."""


CONTAINERS = {
    ".mp4": Container("mp4", ("h264",)),
    ".m4v": Container("mp4", ("h264",)),
    ".mov": Container("mov", ("h264",)),
    ".mkv": Container("matroska", ("h264", "vp9")),
    ".webm": Container("webm", ("vp9",)),
    ".gif": Container("gif", ("gif",)),
}
"""Output video types this project writes."""
OTHER_VIDEOS = {".avi", ".flv", ".wmv", ".asf", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg", ".vob", ".3gp", ".ogv"}
"""Video types that are refused as an output (rather than taken for the name of a folder of frames): AVI and the
others cannot hold per-frame timestamps or this project's codecs as the six above do."""
VIDEO_FRAME_DIGITS = 5
DEEP_VIDEO = "decoded as 16-bit RGB and rounded to the nearest 8-bit value (16-bit v: round(v / 257))"
FALLBACK_FPS = 25
"""The frame rate of a video whose file says none (and of the timestamps made up for frames that have none)."""


def is_video_path(path: Path) -> bool:
    """A name the writer knows as a video file type."""
    return Path(path).suffix.lower() in CONTAINERS


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
class AudioTrack:
    """An audio stream of a video file, copied into its output as it is."""

    index: int
    """The stream's index in the file."""
    codec: str


@dataclass(frozen=True, eq=False)
class VideoSource:
    """A video file, decoded lazily."""

    name: str
    path: Path
    size: tuple[int, int]
    """(height, width) as displayed (after the rotation)."""
    fps: float
    """The average frame rate; 0 if the file says none."""
    count: int
    deep: bool = False
    """More than 8 bits per sample: decoded as 16-bit RGB and rounded by `to_8_bit`."""
    time_base: Fraction = Fraction(1, FALLBACK_FPS)
    pts: tuple[int, ...] = ()
    """Each frame's presentation time in ``time_base`` units, in order (made up at the frame rate for a file whose
    frames have none)."""
    end: int = 0
    """When the last frame ends, in ``time_base`` units: the average frame period after it."""
    rotation: int = 0
    """Degrees counter-clockwise that the frames are turned by to be displayed (0, 90, 180, 270)."""
    audio: tuple[AudioTrack, ...] = ()
    threads: str = "AUTO"
    """How FFmpeg's decoder threads: AUTO (frame threads, faster), or SLICE for a file that has packets that do not
    decode (`decoded`)."""

    @property
    def frame_names(self) -> list[str]:
        digits = max(VIDEO_FRAME_DIGITS, len(str(self.count - 1)))
        return [f"{index:0{digits}d}" for index in range(self.count)]

    def __len__(self) -> int:
        return self.count

    def frames(self) -> Iterator[np.ndarray]:
        """Each frame as H x W x 3 uint8 RGB, displayed (turned by ``rotation``), in order; the file is closed when
        the iteration stops."""
        with av.open(str(self.path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = self.threads
            read = 0
            for frame in decoded(container, stream):
                if self.deep:
                    image = to_8_bit(frame.to_ndarray(format="rgb48le"), SIXTEEN_BIT)
                else:
                    image = frame.to_ndarray(format="rgb24")
                yield upright(image, self.rotation)
                read += 1
                if read == self.count:
                    return
        if read < self.count:
            raise UserError(f"{self.path}: has {read} frames now, {self.count} when it was opened")


def decoded(container: av.container.InputContainer, stream: av.VideoStream, errors: list | None = None) -> Iterator:
    """The frames of ``stream`` in order, as FFmpeg's player and command line take them: a packet that does not
    decode is passed over (and added to ``errors``), and a file that ends mid-way (cut off) ends its frames there.
    With frame threads a packet's error comes out later and takes the frames still in the decoder with it, so a
    file with errors is read again without them (`open_video`)."""
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.FFmpegError as error:
            packet = None  # cut off: what the decoder holds still comes out
            if errors is not None:
                errors.append(error)
        try:
            yield from packet.decode() if packet is not None else stream.codec_context.decode(None)
        except av.FFmpegError as error:
            if errors is not None:
                errors.append(error)
        if packet is None:
            return


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """``image`` as displayed: turned ``rotation`` degrees counter-clockwise; contiguous and writable, like images."""
    return np.ascontiguousarray(np.rot90(image, rotation // 90)) if rotation else image


def format_bits(pixel_format: av.VideoFormat) -> int:
    """Bits per sample of a pixel format (``yuv420p10le``: 10, ``rgb48be``: 16, ``nv12``: 8)."""
    return max(component.bits for component in pixel_format.components)


def displayed_rotation(frame: av.VideoFrame) -> int:
    """The frame's display-matrix rotation, counter-clockwise, to the nearest right angle (FFmpeg's players do the
    same)."""
    return round(float(frame.rotation or 0) / 90) % 4 * 90


def open_video(path: Path, option: str | None = None) -> VideoSource:
    """Read a video file's size, frame rate, rotation and audio streams, and decode it once (without the model) for
    its exact frame count and each frame's timestamp. A file FFmpeg cannot read is a `UserError` naming it (and
    ``option``, the flag that gave it, if any)."""
    try:
        for threads in ("AUTO", "SLICE"):
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise ValueError("it holds no video stream")
                stream = container.streams.video[0]
                stream.thread_type = threads
                audio = tuple(AudioTrack(track.index, track.codec_context.name) for track in container.streams.audio)
                rate = stream.average_rate or stream.guessed_rate
                duration = float(container.duration / av.time_base) if container.duration else 0.0
                if stream.duration and stream.time_base:
                    duration = float(stream.duration * stream.time_base)
                # the header's frame count, else its duration at the frame rate (less closely: a variable rate's
                # average and a longer sound make that an estimate)
                expected = stream.frames or 0.85 * duration * float(rate or 0)
                time_base = stream.time_base or Fraction(1, FALLBACK_FPS)
                pts: list[int | None] = []
                first, errors = None, []
                for frame in decoded(container, stream, errors):
                    if first is None:
                        first = frame
                    pts.append(frame.pts)
            if not errors:
                break
        if first is None:
            raise ValueError("no frame of its video decodes")
    except Exception as error:  # PyAV raises its FFmpegError subclasses (InvalidDataError...) for bad files
        if option is None:
            raise UserError(f"cannot read video {path}: {first_line(error)}") from None
        raise UserError(
            f"{option} {path}: not a folder of frames, and FFmpeg cannot read it as a video ({first_line(error)})"
        ) from None
    fps = float(rate) if rate else 0.0
    count = len(pts)
    if any(value is None for value in pts) or any(b <= a for a, b in itertools.pairwise(pts)):
        # no timestamps (raw streams) or out of order: the frames at the frame rate, from 0
        time_base = 1 / Fraction(fps or FALLBACK_FPS).limit_denominator(1001000)
        pts = list(range(count))
    # the last frame lasts the average frame period (a frame's own duration is not kept by every container)
    step = (pts[-1] - pts[0]) // (count - 1) if count > 1 else round(1 / (fps or FALLBACK_FPS) / time_base)
    end = pts[-1] + max(step, 1)
    warn_if_truncated(path, count, expected)
    bits = format_bits(first.format)
    if bits > 8:
        warn_once("depth", f"{path}: {bits} bits per sample, {DEEP_VIDEO}")
    rotation = displayed_rotation(first)
    height, width = first.height, first.width
    if rotation in (90, 270):
        height, width = width, height
    return VideoSource(
        path.stem,
        path,
        (height, width),
        fps,
        count,
        deep=bits > 8,
        time_base=Fraction(time_base),
        pts=tuple(pts),
        end=end,
        rotation=rotation,
        audio=audio,
        threads=threads,
    )


def warn_if_truncated(path: Path, count: int, expected: float) -> None:
    """Warn when fewer frames decode than the header promises (its frame count, else its video's duration times the
    frame rate): a cut-off download or copy, of which FFmpeg decodes what is there and says nothing."""
    if expected > 0 and count < 0.95 * expected - 1:
        logger.warning(
            "%s: only %d frames decode, but its header says about %d frames; the file may be truncated: only the %d "
            "frames are deblurred",
            path,
            count,
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


@dataclass(frozen=True)
class Encoding:
    """How an output video is coded: ``--codec`` (or its container's default) and ``--quality`` (or the codec's)."""

    codec: str
    quality: int | None


_supported: dict[str, set[str]] = {}


def container_holds(suffix: str, codec: str) -> bool:
    """Whether FFmpeg's muxer for ``suffix`` can hold a stream of ``codec`` as it is."""
    muxer = CONTAINERS[suffix].format
    if muxer not in _supported:
        with av.open(io.BytesIO(), "w", format=muxer) as probe:
            _supported[muxer] = set(probe.supported_codecs)
    return codec in _supported[muxer]


def check_output_type(output: Path) -> None:
    """Refuse ``--output`` named as a video of a type this project does not write (rather than make a folder of
    frames of that name)."""
    suffix = output.suffix.lower()
    if suffix in OTHER_VIDEOS:
        raise UserError(f"--output {output}: cannot write {suffix} videos; give one of {', '.join(CONTAINERS)}")


def plan_encoding(
    output: Path, source: FolderSource | VideoSource, codec: str | None, quality: int | None
) -> Encoding | None:
    """Check ``--output``'s type, ``--codec`` and ``--quality`` for ``source``; None when the output is a folder of
    frames (or the input is, which the caller refuses). The input's audio must fit the output container as it is;
    a GIF has no sound, and is written without it (a warning)."""
    check_output_type(output)
    suffix = output.suffix.lower()
    if suffix not in CONTAINERS:
        for flag, given in (("--codec", codec is not None), ("--quality", quality is not None)):
            if given:
                raise UserError(f"{flag} goes with a video --output ({', '.join(CONTAINERS)}); {output} is a folder")
        return None
    if not isinstance(source, VideoSource):
        return None
    container = CONTAINERS[suffix]
    chosen = codec or container.codecs[0]
    if chosen not in container.codecs:
        held = " or ".join(name for name in container.codecs if name in CODEC_CHOICES)
        if not held:
            raise UserError(f"--codec {chosen}: a {suffix} output is coded as GIF; leave --codec out")
        raise UserError(f"--codec {chosen}: a {suffix} file holds {held}; give another --codec or a .mkv --output")
    settings = CODECS[chosen]
    if quality is not None and settings.worst is None:
        raise UserError(f"--quality goes with h264 and vp9; a {suffix} output takes none")
    if quality is not None and not 0 <= quality <= settings.worst:
        raise UserError(f"--quality {quality}: {chosen} takes 0 (best) to {settings.worst} (worst)")
    for track in source.audio:
        if suffix == ".gif":
            logger.warning("--output %s: a GIF has no sound; the audio of %s is left out", output, source.path)
            break
        if not container_holds(suffix, track.codec):
            fits = [name for name in CONTAINERS if name != ".gif" and container_holds(name, track.codec)]
            raise UserError(
                f"--output {output}: a {suffix} file cannot hold the {track.codec} audio of {source.path} (copied as "
                f"it is, not re-encoded); give a {' or '.join(fits) or '.mkv'} --output (.mkv holds any audio)"
            )
    return Encoding(chosen, settings.default if quality is None else quality)


def padded_size(size: tuple[int, int], codec: str) -> tuple[int, int]:
    """The size a frame of ``size`` is coded at: 4:2:0 H.264 and H.265 need even sizes, so an odd height or width
    gets one more row or column, a copy of the last (players open 4:2:0 only; VP9 and GIF take odd sizes)."""
    height, width = size
    if not CODECS[codec].even:
        return size
    return height + height % 2, width + width % 2


class VideoWriter:
    """Write frames to a video file: encoded into a hidden file beside the target, renamed over it on success.

    An interrupted or failed run removes the partial file and leaves any earlier file at ``path`` untouched. With
    ``direct`` the writer writes ``path`` itself (removed if the writing fails): for a file in a staging folder,
    which nobody reads before the folder is committed whole (utils/committed.py). Use as a context manager.

    With ``source`` (the video whose frames these are restored from) the video is made like it: `write` is told
    which of its frames each one restores and gives it that frame's timestamp, and its audio streams are copied.
    Without, the frames are ``fps`` apart and there is no sound.
    """

    def __init__(
        self,
        path: Path,
        size: tuple[int, int],
        fps: float,
        direct: bool = False,
        *,
        encoding: Encoding | None = None,
        source: VideoSource | None = None,
    ) -> None:
        suffix = path.suffix.lower()
        if suffix not in CONTAINERS:
            raise UserError(f"{path}: cannot write {suffix or 'this'} videos; use one of {', '.join(CONTAINERS)}")
        codec = encoding.codec if encoding is not None else CONTAINERS[suffix].codecs[0]
        self.settings = CODECS[codec]
        quality = encoding.quality if encoding is not None else self.settings.default
        self.path = path
        self.partial = path if direct else path.with_name(f".{path.stem}.partial{path.suffix}")
        self.size = size
        self.coded = padded_size(size, codec)
        if self.coded != size:
            logger.info(
                "%s: %dx%d frames are coded at %dx%d (%s 4:2:0 needs even sizes; the last column or row repeated)",
                path,
                size[1],
                size[0],
                self.coded[1],
                self.coded[0],
                codec,
            )
        if source is not None:
            self.time_base, self.pts, self.end = source.time_base, source.pts, source.end
            rate = Fraction(source.fps).limit_denominator(1001000) if source.fps > 0 else Fraction(FALLBACK_FPS)
        else:
            rate = Fraction(fps).limit_denominator(1001000)
            self.time_base, self.pts, self.end = 1 / rate, None, None
        self.written = 0
        muxer = CONTAINERS[suffix].format
        # Matroska keeps each frame's own timestamp; left to FFmpeg, the B-frames' early decoding times would shift
        # them all (MP4 and MOV keep them with an edit list)
        options = {"avoid_negative_ts": "disabled"} if muxer in ("matroska", "webm") else {}
        self.container = av.open(str(self.partial), "w", format=muxer, options=options)
        try:
            self.stream = self.container.add_stream(self.settings.encoder, rate=rate)
            self.stream.width, self.stream.height = self.coded[1], self.coded[0]
            self.stream.pix_fmt = self.settings.pixel_format
            # a GIF counts in hundredths of a second (`write` rounds the timestamps)
            coded_base = Fraction(1, 100) if codec == "gif" else self.time_base
            self.stream.time_base = coded_base
            self.stream.codec_context.time_base = coded_base
            options = dict(self.settings.options)
            if quality is not None:
                options["crf"] = str(quality)
            self.stream.codec_context.options = options
            self.gif_pts = -1
            self.audio = AudioCopy(source, self.container) if source is not None and suffix != ".gif" else None
        except BaseException:
            self.container.close()
            self.partial.unlink(missing_ok=True)
            raise

    def write(self, rgb: np.ndarray, index: int | None = None) -> None:
        """Add a frame; ``index``: the frame of the source it restores (with a ``source``; else the next)."""
        if rgb.shape != (*self.size, 3):
            raise ValueError(f"frame of shape {rgb.shape} for a {self.size[1]}x{self.size[0]} video")
        index = self.written if index is None else index
        if self.coded != self.size:
            rgb = np.pad(rgb, ((0, self.coded[0] - self.size[0]), (0, self.coded[1] - self.size[1]), (0, 0)), "edge")
        if self.settings.pixel_format == "pal8":
            frame = palette_frame(rgb)
        else:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        if self.pts is None:
            pts, following = index, index + 1
        else:
            pts = self.pts[index]
            following = self.pts[index + 1] if index + 1 < len(self.pts) else self.end
        frame.time_base = self.time_base
        if self.settings.pixel_format == "pal8":
            # a GIF counts in hundredths of a second: rounded, and at least one apart
            pts, following = (round(value * self.time_base * 100) for value in (pts, following))
            pts = max(pts, self.gif_pts + 1)
            self.gif_pts = pts
            frame.time_base = Fraction(1, 100)
        frame.pts = pts
        frame.duration = max(following - pts, 1)
        self.written += 1
        self._mux(self.stream.encode(frame))

    def _mux(self, packets: list) -> None:
        for packet in packets:
            if self.audio is not None and packet.pts is not None:
                self.audio.until(packet.pts * packet.time_base)
            self.container.mux(packet)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        try:
            if kind is None:
                self._mux(self.stream.encode(None))
                if self.audio is not None:
                    self.audio.until(None)
        except Exception:
            self.container.close()
            self.partial.unlink(missing_ok=True)
            raise
        finally:
            if self.audio is not None:
                self.audio.close()
        try:
            self.container.close()
        except Exception:
            if kind is None:
                self.partial.unlink(missing_ok=True)
                raise
        if kind is None:
            if self.partial != self.path:
                os.replace(self.partial, self.path)
        else:
            self.partial.unlink(missing_ok=True)


def palette_frame(rgb: np.ndarray) -> av.VideoFrame:
    """A pal8 frame for the GIF encoder: the frame's own 256 colours (Pillow's median cut), dithered."""
    from PIL import Image

    quantized = Image.fromarray(rgb).quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG)
    colours = np.zeros((256, 4), np.uint8)
    palette = np.frombuffer(bytes(quantized.getpalette() or []), np.uint8).reshape(-1, 3)[:256]
    colours[: len(palette), 0] = 255
    colours[: len(palette), 1:] = palette
    return av.VideoFrame.from_ndarray((np.asarray(quantized), colours), format="pal8")


class AudioCopy:
    """The audio streams of ``source`` copied into ``container`` packet by packet, read from the source file as the
    video's packets reach their time (so that the muxer interleaves them without holding the whole sound)."""

    def __init__(self, source: VideoSource, container: av.container.OutputContainer) -> None:
        self.container = container
        self.input = av.open(str(source.path)) if source.audio else None
        self.packets: Iterator = iter(())
        self.waiting = None
        if self.input is None:
            return
        try:
            streams = [self.input.streams[track.index] for track in source.audio]
            self.outputs = {stream.index: container.add_stream_from_template(stream) for stream in streams}
            self.packets = self.input.demux(streams)
        except BaseException:
            self.input.close()
            raise

    def until(self, time: Fraction | None) -> None:
        """Mux the audio packets that start before ``time`` (seconds; None: all that are left)."""
        if self.input is None:
            return
        while True:
            packet = self.waiting or next(self.packets, None)
            self.waiting = None
            if packet is None:
                return
            if packet.size == 0 or packet.dts is None:
                continue  # the demuxer's end-of-stream markers
            if time is not None and packet.dts * packet.time_base > time:
                self.waiting = packet
                return
            target = self.outputs[packet.stream.index]
            packet.stream = target
            self.container.mux(packet)

    def close(self) -> None:
        if self.input is not None:
            self.input.close()
