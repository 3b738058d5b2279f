"""Blur synthesizer: make blurred/sharp video pairs in the dataset form, deterministically under a seed.

Two ways:

* ``frames``: from a sharp high-frame-rate clip (a folder of frames), the GOPRO way: each blurred frame is the average
  of N consecutive frames in linear light (gamma 2.2 undone, averaged, redone); its sharp frame is the middle one.
* ``photos``: from still photos, a smooth random camera path (translation, small rotation and zoom, sub-pixel) is
  rendered at a high temporal rate and averaged over each exposure in linear light; the sharp frame is the path's
  pose at mid-exposure. Optional Gaussian noise and JPEG compression are applied to the blurred frames.

Run ``python code/data/synthesize.py {frames,photos} --help``.
"""

import argparse
import math
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make code/ importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np

from data.frames import BLUR_DIR, GT_DIR, list_frames, read_rgb, write_png
from data.sample_photos import HELD_OUT_PHOTOS, TRAIN_PHOTOS, load_photo
from utils.atomic import atomic_write_json
from utils.errors import UserError, run_cli

GAMMA = 2.2
PHOTO_SETS = {"train": TRAIN_PHOTOS, "held_out": HELD_OUT_PHOTOS}


def to_linear(rgb: np.ndarray) -> np.ndarray:
    """uint8 display values -> linear light in [0, 1] (float32)."""
    return np.power(rgb.astype(np.float32) / 255.0, GAMMA)


def to_display(linear: np.ndarray) -> np.ndarray:
    """Linear light -> uint8 display values (gamma re-applied, rounded)."""
    return np.round(np.power(np.clip(linear, 0.0, 1.0), 1.0 / GAMMA) * 255.0).astype(np.uint8)


def average_exposure(frames: Sequence[np.ndarray]) -> np.ndarray:
    """The blurred frame a shutter open over ``frames`` records: their mean in linear light."""
    total = np.zeros(frames[0].shape, np.float64)
    for frame in frames:
        total += to_linear(frame)
    return to_display(total / len(frames))


def blur_frame_sequence(
    frames: Iterable[np.ndarray], average: int, stride: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """GOPRO-style pairs (blurred, sharp) from consecutive sharp frames; only ``average`` frames are held at once."""
    if average < 1:
        raise UserError(f"--average must be at least 1, got {average}")
    stride = stride or average
    if stride < 1:
        raise UserError(f"--stride must be at least 1, got {stride}")
    window: list[np.ndarray] = []
    skip = 0
    for frame in frames:
        if skip:
            skip -= 1
            continue
        window.append(frame)
        if len(window) == average:
            yield average_exposure(window), window[average // 2]
            window = window[stride:] if stride < average else []
            skip = max(stride - average, 0)


@dataclass(frozen=True)
class MotionSettings:
    """How the random camera moves; speeds are per frame interval, the blur length is speed x exposure."""

    speed: tuple[float, float] = (6.0, 16.0)
    """Range of the steady drift speed, pixels per frame."""
    wobble: float = 4.0
    """Largest amplitude of the smooth shake added to the drift, pixels."""
    rotation: float = 0.4
    """Largest rotation speed, degrees per frame."""
    zoom: float = 0.004
    """Largest relative zoom speed per frame."""
    exposure: float = 1.0
    """Fraction of the frame interval the shutter is open (0..1]."""
    subframes: int = 15
    """Poses rendered and averaged per exposure."""
    scale: tuple[float, float] = (0.5, 1.0)
    """Range of the factor the photo is resized by first (below 1 packs more detail into a frame); raised where
    needed so the whole path stays inside the photo."""


@dataclass(frozen=True)
class CameraPath:
    """A smooth random camera path; ``matrix(t)`` maps output pixels to photo pixels at time t (in frames)."""

    center: np.ndarray
    velocity: np.ndarray
    wobble_amplitude: np.ndarray
    wobble_frequency: np.ndarray
    wobble_phase: np.ndarray
    rotation_rate: float
    zoom_rate: float
    output_center: np.ndarray

    def shift(self, time: float) -> np.ndarray:
        angles = 2 * math.pi * self.wobble_frequency[:, None] * time + self.wobble_phase
        return self.velocity * time + (self.wobble_amplitude * np.sin(angles)).sum(axis=0)

    def matrix(self, time: float) -> np.ndarray:
        angle = self.rotation_rate * time
        scale = 1.0 + self.zoom_rate * time
        linear = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        offset = self.center + self.shift(time) - linear @ self.output_center
        return np.concatenate([linear, offset[:, None]], axis=1)


def random_path(rng: np.random.Generator, settings: MotionSettings, size: tuple[int, int]) -> CameraPath:
    """A path centred on the photo origin (the caller places it); size is the output (height, width)."""
    direction = rng.uniform(0, 2 * math.pi)
    speed = rng.uniform(*settings.speed)
    waves = 3
    return CameraPath(
        center=np.zeros(2),
        velocity=speed * np.array([math.cos(direction), math.sin(direction)]),
        wobble_amplitude=rng.uniform(-1, 1, (waves, 2)) * settings.wobble / waves,
        wobble_frequency=rng.uniform(0.02, 0.15, waves),
        wobble_phase=rng.uniform(0, 2 * math.pi, (waves, 2)),
        rotation_rate=math.radians(rng.uniform(-settings.rotation, settings.rotation)),
        zoom_rate=rng.uniform(-settings.zoom, settings.zoom),
        output_center=np.array([(size[1] - 1) / 2.0, (size[0] - 1) / 2.0]),
    )


def exposure_times(frame: int, settings: MotionSettings) -> np.ndarray:
    """Times at which poses are rendered for one exposure, centred on the frame's time."""
    offsets = (np.arange(settings.subframes) + 0.5) / settings.subframes - 0.5
    return frame + settings.exposure * offsets


def path_extent(path: CameraPath, times: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest photo coordinates (x, y) the output corners reach over ``times``."""
    height, width = size
    corners = np.array([[0, 0, 1], [width - 1, 0, 1], [0, height - 1, 1], [width - 1, height - 1, 1]], float).T
    points = np.concatenate([path.matrix(time) @ corners for time in times], axis=1)
    return points.min(axis=1), points.max(axis=1)


def render(photo_linear: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The photo seen through the camera pose ``matrix`` (output -> photo), bilinear, sub-pixel."""
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(photo_linear, matrix, (size[1], size[0]), flags=flags, borderMode=cv2.BORDER_REFLECT)


def degrade(blurred: np.ndarray, rng: np.random.Generator, noise: float, jpeg_quality: int) -> np.ndarray:
    """Add Gaussian noise (sigma in 0-255 units) and JPEG compression (quality 1-100; 0 = none)."""
    if noise > 0:
        blurred = np.clip(np.round(blurred + rng.normal(0.0, noise, blurred.shape)), 0, 255).astype(np.uint8)
    if jpeg_quality > 0:
        ok, encoded = cv2.imencode(".jpg", blurred[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        blurred = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[:, :, ::-1].copy()
    return blurred


def place_path(
    photo: np.ndarray, rng: np.random.Generator, settings: MotionSettings, size: tuple[int, int], n_frames: int
) -> tuple[np.ndarray, CameraPath]:
    """Resize the photo and pick a path whose whole view stays inside it; returns (resized photo, path)."""
    path = random_path(rng, settings, size)
    times = np.concatenate([exposure_times(frame, settings) for frame in range(n_frames)])
    low, high = path_extent(path, times, size)
    span = high - low  # (x, y) extent of everything the camera sees
    needed = max((span[0] + 2) / (photo.shape[1] - 1), (span[1] + 2) / (photo.shape[0] - 1))
    factor = max(rng.uniform(*settings.scale), needed * 1.05)
    resized_size = (round(photo.shape[1] * factor), round(photo.shape[0] * factor))
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
    photo = cv2.resize(photo, resized_size, interpolation=interpolation)
    free = np.array([photo.shape[1] - 1, photo.shape[0] - 1]) - span
    center = -low + rng.uniform(0, 1, 2) * np.maximum(free, 0)
    return photo, replace(path, center=center)


def camera_flow(path: CameraPath, time_from: float, time_to: float, size: tuple[int, int]) -> np.ndarray:
    """True flow [2, H, W] (u, v) from the frame at ``time_from`` to the frame at ``time_to``: for each pixel of the
    first, where the same scene point is in the second."""
    height, width = size
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    pixels = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    scene = path.matrix(time_from) @ pixels
    to_second = cv2.invertAffineTransform(path.matrix(time_to))
    positions = to_second @ np.concatenate([scene, np.ones((1, scene.shape[1]))])
    return (positions - pixels[:2]).reshape(2, height, width).astype(np.float32)


def render_exposure(
    photo_linear: np.ndarray, path: CameraPath, frame: int, size: tuple[int, int], settings: MotionSettings
) -> np.ndarray:
    """Linear-light mean of the poses seen during one exposure."""
    exposure = np.zeros((*size, 3), np.float64)
    for time in exposure_times(frame, settings):
        exposure += render(photo_linear, path.matrix(time), size)
    return exposure / settings.subframes


def synthesize_photo_clip(
    photo: np.ndarray,
    n_frames: int,
    size: tuple[int, int],
    rng: np.random.Generator,
    settings: MotionSettings = MotionSettings(),
    noise: float = 0.0,
    jpeg_quality: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(blurred, sharp) uint8 RGB frames of one clip of a still photo under a random camera path."""
    photo, path = place_path(photo, rng, settings, size, n_frames)
    photo_linear = to_linear(photo)
    pairs = []
    for frame in range(n_frames):
        exposure = render_exposure(photo_linear, path, frame, size, settings)
        blurred = degrade(to_display(exposure), rng, noise, jpeg_quality)
        sharp = to_display(render(photo_linear, path.matrix(float(frame)), size))
        pairs.append((blurred, sharp))
    return pairs


def write_pairs(root: Path, video: str, pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> int:
    """Write pairs as ``root/blur/video/00000.png`` and ``root/gt/video/00000.png``; returns the count."""
    blur_dir, gt_dir = root / BLUR_DIR / video, root / GT_DIR / video
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


def make_photo_dataset(
    root: Path,
    photos: Sequence[str],
    videos_per_photo: int,
    n_frames: int,
    size: tuple[int, int],
    seed: int,
    settings: MotionSettings = MotionSettings(),
    noise: float = 0.0,
    jpeg_quality: int = 0,
) -> int:
    """Write ``videos_per_photo`` clips of every photo ('package:file' or a path) into ``root``; returns frames."""
    root = Path(root)
    total = 0
    for photo_index, reference in enumerate(photos):
        photo = read_rgb(Path(reference)) if Path(reference).is_file() else load_photo(reference)
        stem = Path(reference.partition(":")[2] or reference).stem
        for clip in range(videos_per_photo):
            rng = np.random.default_rng([seed, photo_index, clip])
            pairs = synthesize_photo_clip(photo, n_frames, size, rng, settings, noise, jpeg_quality)
            total += write_pairs(root, f"{stem}_{clip:02d}", pairs)
    record = {
        "photos": list(photos),
        "videos_per_photo": videos_per_photo,
        "frames": n_frames,
        "size": list(size),
        "seed": seed,
        "motion": asdict(settings),
        "noise": noise,
        "jpeg_quality": jpeg_quality,
    }
    atomic_write_json(root / "synthesis.json", record)
    return total


def parse_size(text: str) -> tuple[int, int]:
    """'HxW' -> (H, W)."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 128x128, got '{text}'") from None
    if height < 4 or width < 4:
        raise argparse.ArgumentTypeError(f"size must be at least 4x4, got '{text}'")
    return height, width


def parse_range(text: str) -> tuple[float, float]:
    """'a,b' -> (a, b) with 0 <= a <= b."""
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX such as 1,8, got '{text}'") from None
    if not 0 <= low <= high:
        raise argparse.ArgumentTypeError(f"expected 0 <= MIN <= MAX, got '{text}'")
    return low, high


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="synthesize.py")
    modes = parser.add_subparsers(dest="mode", required=True)

    frames = modes.add_parser("frames", help="average consecutive sharp frames of a high-frame-rate clip (GOPRO way)")
    frames.add_argument("input", type=Path, help="folder of sharp frames, in natural order")
    frames.add_argument("output", type=Path, help="dataset folder to write blur/<name>/ and gt/<name>/ into")
    frames.add_argument("--average", type=int, default=7, help="sharp frames averaged per blurred frame (default 7)")
    frames.add_argument("--stride", type=int, default=None, help="frames between blurred frames (default: --average)")
    frames.add_argument("--name", default=None, help="video name (default: the input folder's name)")

    photos = modes.add_parser("photos", help="render still photos under a random camera path")
    photos.add_argument("output", type=Path, help="dataset folder to write blur/<video>/ and gt/<video>/ into")
    photos.add_argument(
        "--photos",
        nargs="+",
        default=["held_out"],
        help="photo files, 'package:file' sample photos, or the sets 'train' / 'held_out' (default held_out)",
    )
    photos.add_argument("--videos_per_photo", type=int, default=1, help="clips per photo (default 1)")
    photos.add_argument("--frames", type=int, default=12, help="frames per clip (default 12)")
    photos.add_argument("--size", type=parse_size, default=(128, 128), help="frame size HxW (default 128x128)")
    photos.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    photos.add_argument("--speed", type=parse_range, default=MotionSettings.speed, help="drift px/frame (6,16)")
    photos.add_argument("--wobble", type=float, default=MotionSettings.wobble, help="shake amplitude, px (4)")
    photos.add_argument("--rotation", type=float, default=MotionSettings.rotation, help="max deg/frame (0.4)")
    photos.add_argument("--zoom", type=float, default=MotionSettings.zoom, help="max relative zoom/frame (0.004)")
    photos.add_argument("--exposure", type=float, default=MotionSettings.exposure, help="shutter duty (0,1] (1)")
    photos.add_argument("--subframes", type=int, default=MotionSettings.subframes, help="poses per exposure (15)")
    photos.add_argument("--noise", type=float, default=0.0, help="Gaussian noise sigma in 0-255 units (0)")
    photos.add_argument("--jpeg", type=int, default=0, help="JPEG quality 1-100 for blurred frames (0 = none)")
    return parser


def expand_photo_sets(names: Sequence[str]) -> list[str]:
    photos: list[str] = []
    for name in names:
        photos.extend(PHOTO_SETS.get(name, (name,)))
    return photos


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.mode == "frames":
        if not args.input.is_dir():
            raise UserError(f"input folder not found: {args.input}")
        paths = list_frames(args.input)
        if not paths:
            raise UserError(f"{args.input}: no frames (PNG, JPEG, BMP or TIFF)")
        pairs = blur_frame_sequence((read_rgb(path) for path in paths), args.average, args.stride)
        count = write_pairs(args.output, args.name or args.input.name, pairs)
        print(f"wrote {count} blurred/sharp pairs to {args.output}")
        return 0
    if not 0 < args.exposure <= 1:
        raise UserError(f"--exposure must be in (0, 1], got {args.exposure}")
    if args.subframes < 1 or args.frames < 1 or args.videos_per_photo < 1:
        raise UserError("--subframes, --frames and --videos_per_photo must be at least 1")
    if not 0 <= args.jpeg <= 100:
        raise UserError(f"--jpeg must be a quality in 1..100 or 0 for none, got {args.jpeg}")
    settings = MotionSettings(
        speed=args.speed,
        wobble=args.wobble,
        rotation=args.rotation,
        zoom=args.zoom,
        exposure=args.exposure,
        subframes=args.subframes,
    )
    photos = expand_photo_sets(args.photos)
    count = make_photo_dataset(
        args.output, photos, args.videos_per_photo, args.frames, args.size, args.seed, settings, args.noise, args.jpeg
    )
    print(f"wrote {count} blurred/sharp pairs from {len(photos)} photos to {args.output}")
    return 0


if __name__ == "__main__":
    run_cli(main)
