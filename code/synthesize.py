"""Make blurred/sharp video pairs in the dataset form, deterministically under a seed.

Two ways:

* ``frames``: from a sharp high-frame-rate clip (a folder of frames), the GOPRO way: each blurred frame is the average
  of N consecutive frames in linear light; its sharp frame is the middle one (`data.frame_blur`).
* ``photos``: from still photos under a smooth random camera path, averaged over each exposure in linear light, with
  optional noise and JPEG compression (`data.camera_blur`).

Run ``python code/synthesize.py {frames,photos} --help``. This is only the command line: it reads the flags, refuses
bad ones in one line naming the flag, and calls the two modules.
"""

import argparse
from collections.abc import Sequence
from pathlib import Path

from cdvd_tsp.data.camera_blur import MotionSettings, expand_photo_sets, make_photo_dataset
from cdvd_tsp.data.frame_blur import blur_frame_sequence
from cdvd_tsp.data.frames import (
    check_same_size,
    list_frames,
    read_header,
    read_rgb,
    reset_warnings,
    warn_dropped,
    write_pairs,
)
from cdvd_tsp.utils.cli import CommandParser
from cdvd_tsp.utils.errors import UserError, run_cli

MIN_SIZE = 4
"""The smallest frame height and width accepted: the model crops frames to multiples of 4."""
GOPRO_AVERAGE = 7
"""Default sharp frames per blurred frame: the fewest the GOPRO dataset averaged (it used 7 to 13)."""


def parse_size(text: str) -> tuple[int, int]:
    """'HxW' -> (H, W)."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 128x128, got '{text}'") from None
    if height < MIN_SIZE or width < MIN_SIZE:
        raise argparse.ArgumentTypeError(f"size must be at least {MIN_SIZE}x{MIN_SIZE}, got '{text}'")
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
    """The two subcommands and their flags."""
    parser = CommandParser(description=__doc__.split("\n\n")[0], prog="synthesize.py")
    modes = parser.add_subparsers(dest="mode", required=True)

    frames = modes.add_parser("frames", help="average consecutive sharp frames of a high-frame-rate clip (GOPRO way)")
    frames.add_argument("input", type=Path, help="folder of sharp frames, in natural order")
    frames.add_argument("output", type=Path, help="dataset folder to write blur/<name>/ and gt/<name>/ into")
    frames.add_argument(
        "--average", type=int, default=GOPRO_AVERAGE, help=f"sharp frames per blurred frame (default {GOPRO_AVERAGE})"
    )
    frames.add_argument("--stride", type=int, default=None, help="frames between blurred frames (default: --average)")
    frames.add_argument("--name", default=None, help="video name (default: the input folder's name)")

    defaults = MotionSettings()
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
    photos.add_argument("--speed", type=parse_range, default=defaults.speed, help="drift px/frame (6,16)")
    photos.add_argument("--wobble", type=float, default=defaults.wobble, help="shake amplitude, px (4)")
    photos.add_argument("--rotation", type=float, default=defaults.rotation, help="max deg/frame (0.4)")
    photos.add_argument("--zoom", type=float, default=defaults.zoom, help="max relative zoom/frame (0.004)")
    photos.add_argument("--exposure", type=float, default=defaults.exposure, help="shutter duty (0,1] (1)")
    photos.add_argument("--subframes", type=int, default=defaults.subframes, help="poses per exposure (15)")
    photos.add_argument("--noise", type=float, default=0.0, help="Gaussian noise sigma in 0-255 units (0)")
    photos.add_argument("--jpeg", type=int, default=0, help="JPEG quality 1-100 for blurred frames (0 = none)")
    return parser


def frames_command(args: argparse.Namespace) -> int:
    if args.average < 1:
        raise UserError(f"--average must be at least 1, got {args.average}")
    if args.stride is not None and args.stride < 1:
        raise UserError(f"--stride must be at least 1, got {args.stride}")
    if not args.input.is_dir():
        raise UserError(f"input folder not found: {args.input}")
    paths = list_frames(args.input)
    if not paths:
        raise UserError(f"{args.input}: no frames (PNG, JPEG, BMP or TIFF)")
    if len(paths) < args.average:
        raise UserError(
            f"--average {args.average}: a blurred frame averages {args.average} sharp frames, but {args.input} has "
            f"{len(paths)}; nothing was written"
        )
    check_same_size(paths, str(args.input))  # frames of one size, and a warning for what 8-bit RGB drops
    pairs = blur_frame_sequence((read_rgb(path) for path in paths), args.average, args.stride)
    count = write_pairs(args.output, args.name or args.input.name, pairs)
    print(f"wrote {count} blurred/sharp pairs to {args.output}")
    return 0


def photos_command(args: argparse.Namespace) -> int:
    if not 0 < args.exposure <= 1:
        raise UserError(f"--exposure must be in (0, 1], got {args.exposure}")
    if args.subframes < 1 or args.frames < 1 or args.videos_per_photo < 1:
        raise UserError("--subframes, --frames and --videos_per_photo must be at least 1")
    if args.noise < 0:
        raise UserError(f"--noise must be at least 0, got {args.noise}")
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
    files = [Path(photo) for photo in photos if Path(photo).is_file()]
    if files:
        warn_dropped([(path, read_header(path)) for path in files], "--photos")
    count = make_photo_dataset(
        args.output, photos, args.videos_per_photo, args.frames, args.size, args.seed, settings, args.noise, args.jpeg
    )
    print(f"wrote {count} blurred/sharp pairs from {len(photos)} photos to {args.output}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (the process's arguments by default); returns the exit status."""
    args = build_parser().parse_args(argv)
    reset_warnings()  # a run: what reading the frames as 8-bit RGB drops is said once
    return frames_command(args) if args.mode == "frames" else photos_command(args)


if __name__ == "__main__":
    run_cli(main)
