"""Camera blur over still photos: a smooth random camera path rendered at a high temporal rate.

Each clip moves a camera over one photo: a steady drift plus a smooth shake, a small rotation and zoom, all
sub-pixel. A blurred frame is the mean in linear light (`to_linear`, `to_display`; `data.frame_blur` averages the
same way) of the poses seen while its shutter is open; its sharp frame is the pose at mid-exposure. Gaussian noise
and JPEG compression may be applied to the blurred frames. Everything is deterministic under a seed. The demo data
(`data.demo`) is made this way (`make_photo_dataset`: photos read by `data.sample_photos`, written by `data.frames`).
"""

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from cdvd_tsp.data.frames import write_pairs
from cdvd_tsp.data.sample_photos import HELD_OUT_PHOTOS, TRAIN_PHOTOS, load_photo
from cdvd_tsp.utils.atomic import atomic_write_json

PHOTO_SETS = {"train": TRAIN_PHOTOS, "held_out": HELD_OUT_PHOTOS}
"""Names that stand for a set of sample photos in `expand_photo_sets`."""
WOBBLE_WAVES = 3
"""The shake is a sum of this many sine waves of random frequency and phase per axis: irregular, yet smooth."""
WOBBLE_FREQUENCIES = (0.02, 0.15)
"""Range of the shake's frequencies, cycles per frame: periods of about 7 to 50 frames, so the shake bends the
path within a clip while staying nearly straight during one exposure."""
SAMPLING_MARGIN = 2.0
"""Pixels added to the camera's extent when sizing the photo: bilinear sampling reads one pixel beyond each edge."""
SIZE_MARGIN = 1.05
"""Factor on the smallest photo size that holds the whole path, so rounding the resized size cannot cut it."""
GAMMA = 2.2
"""The display gamma undone before rendering and averaging: the GOPRO dataset approximated its camera's response."""


@dataclass(frozen=True)
class MotionSettings:
    """How the random camera moves; speeds are per frame interval, the blur length is speed x exposure.

    The defaults give the demo's blur: on the held-out photos the blurred input scores about 25 dB against its sharp
    frames, like GOPRO's blurred frames.
    """

    speed: tuple[float, float] = (6.0, 16.0)
    """Range of the steady drift speed, pixels per frame."""
    wobble: float = 4.0
    """Largest amplitude of the smooth shake added to the drift, pixels."""
    rotation: float = 0.4
    """Largest rotation speed, degrees per frame (about 1 px a frame at a 256-px frame's corners)."""
    zoom: float = 0.004
    """Largest relative zoom speed per frame (about 0.5 px a frame at a 256-px frame's edges)."""
    exposure: float = 1.0
    """Fraction of the frame interval the shutter is open (0..1]."""
    subframes: int = 15
    """Poses rendered and averaged per exposure: at the fastest default drift they are about 1 px apart, so the
    average is a continuous streak, not separate copies."""
    scale: tuple[float, float] = (0.5, 1.0)
    """Range of the factor the photo is resized by first (below 1 packs more detail into a frame); raised where
    needed so the whole path stays inside the photo."""

    def __post_init__(self) -> None:
        if not 0 <= self.speed[0] <= self.speed[1]:
            raise ValueError(f"speed must be a range (low, high) with 0 <= low <= high, got {self.speed}")
        if not 0 < self.exposure <= 1:
            raise ValueError(f"exposure must be in (0, 1], got {self.exposure}")
        if self.subframes < 1:
            raise ValueError(f"subframes must be at least 1, got {self.subframes}")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be a range (low, high) with 0 < low <= high, got {self.scale}")


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
        """Translation (x, y) at ``time``, relative to ``center``: drift plus shake."""
        angles = 2 * math.pi * self.wobble_frequency[:, None] * time + self.wobble_phase
        return self.velocity * time + (self.wobble_amplitude * np.sin(angles)).sum(axis=0)

    def matrix(self, time: float) -> np.ndarray:
        """2 x 3 affine map from output pixel (x, y, 1) to photo pixel at ``time``; rotation and zoom about the
        output's center."""
        angle = self.rotation_rate * time
        scale = 1.0 + self.zoom_rate * time
        linear = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        offset = self.center + self.shift(time) - linear @ self.output_center
        return np.concatenate([linear, offset[:, None]], axis=1)


def random_path(rng: np.random.Generator, settings: MotionSettings, size: tuple[int, int]) -> CameraPath:
    """A path centred on the photo origin (the caller places it); size is the output (height, width)."""
    direction = rng.uniform(0, 2 * math.pi)
    speed = rng.uniform(*settings.speed)
    return CameraPath(
        center=np.zeros(2),
        velocity=speed * np.array([math.cos(direction), math.sin(direction)]),
        # each wave at most wobble / WOBBLE_WAVES, so their sum stays within settings.wobble
        wobble_amplitude=rng.uniform(-1, 1, (WOBBLE_WAVES, 2)) * settings.wobble / WOBBLE_WAVES,
        wobble_frequency=rng.uniform(*WOBBLE_FREQUENCIES, WOBBLE_WAVES),
        wobble_phase=rng.uniform(0, 2 * math.pi, (WOBBLE_WAVES, 2)),
        rotation_rate=math.radians(rng.uniform(-settings.rotation, settings.rotation)),
        zoom_rate=rng.uniform(-settings.zoom, settings.zoom),
        output_center=np.array([(size[1] - 1) / 2.0, (size[0] - 1) / 2.0]),
    )


def exposure_times(frame: int, settings: MotionSettings) -> np.ndarray:
    """Times at which poses are rendered for one exposure: the midpoints of ``subframes`` equal slices of the open
    shutter, centred on the frame's time."""
    offsets = (np.arange(settings.subframes) + 0.5) / settings.subframes - 0.5
    return frame + settings.exposure * offsets


def path_extent(path: CameraPath, times: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest photo coordinates (x, y) the output corners reach over ``times``."""
    height, width = size
    corners = np.array([[0, 0, 1], [width - 1, 0, 1], [0, height - 1, 1], [width - 1, height - 1, 1]], float).T
    points = np.concatenate([path.matrix(time) @ corners for time in times], axis=1)
    return points.min(axis=1), points.max(axis=1)


def to_linear(rgb: np.ndarray) -> np.ndarray:
    """uint8 display values -> linear light in [0, 1] (float32)."""
    return np.power(rgb.astype(np.float32) / 255.0, GAMMA)


def to_display(linear: np.ndarray) -> np.ndarray:
    """Linear light -> uint8 display values (gamma re-applied, rounded)."""
    return np.round(np.power(np.clip(linear, 0.0, 1.0), 1.0 / GAMMA) * 255.0).astype(np.uint8)


def render(photo_linear: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The photo seen through the camera pose ``matrix`` (output -> photo), bilinear, sub-pixel.

    The path stays inside the photo (`place_path`), so the border rule only serves bilinear sampling's last pixel;
    reflection keeps it free of a dark edge.
    """
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(photo_linear, matrix, (size[1], size[0]), flags=flags, borderMode=cv2.BORDER_REFLECT)


def degrade(blurred: np.ndarray, rng: np.random.Generator, noise: float, jpeg_quality: int) -> np.ndarray:
    """Add Gaussian noise (sigma in 0-255 units) and JPEG compression (quality 1-100; 0 = none)."""
    if noise > 0:
        blurred = np.clip(np.round(blurred + rng.normal(0.0, noise, blurred.shape)), 0, 255).astype(np.uint8)
    if jpeg_quality > 0:
        # OpenCV encodes BGR: flip the channels there and back
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
    needed = max((span[0] + SAMPLING_MARGIN) / (photo.shape[1] - 1), (span[1] + SAMPLING_MARGIN) / (photo.shape[0] - 1))
    factor = max(rng.uniform(*settings.scale), needed * SIZE_MARGIN)
    resized_size = (round(photo.shape[1] * factor), round(photo.shape[0] * factor))
    # area averaging when shrinking (no aliasing), bicubic when enlarging
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


def check_degradation(noise: float, jpeg_quality: int) -> None:
    """Raise ValueError unless ``noise`` >= 0 and ``jpeg_quality`` is 0 (none) or a quality in 1..100."""
    if noise < 0:
        raise ValueError(f"noise must be at least 0, got {noise}")
    if not 0 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be a quality in 1..100 or 0 for none, got {jpeg_quality}")


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
    if n_frames < 1:
        raise ValueError(f"n_frames must be at least 1, got {n_frames}")
    check_degradation(noise, jpeg_quality)
    photo, path = place_path(photo, rng, settings, size, n_frames)
    photo_linear = to_linear(photo)
    pairs = []
    for frame in range(n_frames):
        exposure = render_exposure(photo_linear, path, frame, size, settings)
        blurred = degrade(to_display(exposure), rng, noise, jpeg_quality)
        sharp = to_display(render(photo_linear, path.matrix(float(frame)), size))
        pairs.append((blurred, sharp))
    return pairs


def expand_photo_sets(names: Sequence[str]) -> list[str]:
    """Photo references with the set names of `PHOTO_SETS` replaced by their photos."""
    photos: list[str] = []
    for name in names:
        photos.extend(PHOTO_SETS.get(name, (name,)))
    return photos


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
    """Write ``videos_per_photo`` clips of every photo ('package:file' or a path) into ``root``; returns frames.

    Clip c of photo p draws from its own random stream ``(seed, p, c)``, so adding photos or clips leaves the
    others unchanged. ``root/synthesis.json`` records the arguments.
    """
    if videos_per_photo < 1 or n_frames < 1:
        raise ValueError(f"videos_per_photo and n_frames must be at least 1, got {videos_per_photo}, {n_frames}")
    check_degradation(noise, jpeg_quality)
    root = Path(root)
    total = 0
    for photo_index, reference in enumerate(photos):
        photo = load_photo(reference)
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
