"""Decode and encode speed of a 720p video in-process with PyAV (what data/video_io.py uses) and through an ffmpeg
pipe with imageio-ffmpeg (what it used before), measured in one run on this machine.

The clip: 1280x720, textured (smoothed noise panning a pixel a frame), H.264 yuv420p at CRF 16, preset medium, the
same settings on both sides. Encoding takes RGB frames from memory; decoding gives RGB frames.

    python bench/bench_video_io.py [--frames 120]

imageio-ffmpeg is imported here only (pip install imageio-ffmpeg); without it only PyAV is timed.
"""

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))

from cdvd_tsp.data.video_io import VideoWriter, open_video

SIZE = (720, 1280)


def textured_frames(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    scene = cv2.GaussianBlur(rng.integers(0, 256, (SIZE[0] + count, SIZE[1] + count, 3), dtype=np.uint8), (0, 0), 2)
    return [np.ascontiguousarray(scene[index : index + SIZE[0], index : index + SIZE[1]]) for index in range(count)]


def timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def pyav_encode(path: Path, frames: list[np.ndarray]) -> None:
    with VideoWriter(path, SIZE, 25.0) as writer:
        for frame in frames:
            writer.write(frame)


def pyav_decode(source) -> int:
    return sum(1 for _ in source.frames())


def pipe_encode(path: Path, frames: list[np.ndarray]) -> None:
    import imageio_ffmpeg

    writer = imageio_ffmpeg.write_frames(
        str(path),
        (SIZE[1], SIZE[0]),
        fps=25.0,
        codec="libx264",
        quality=None,
        pix_fmt_out="yuv420p",
        macro_block_size=1,
        output_params=["-crf", "16", "-preset", "medium"],
    )
    writer.send(None)
    for frame in frames:
        writer.send(frame)
    writer.close()


def pipe_decode(path: Path) -> int:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    next(reader)
    count = sum(1 for raw in reader if np.frombuffer(raw, np.uint8).reshape(*SIZE, 3) is not None)
    reader.close()
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=120)
    args = parser.parse_args()
    frames = textured_frames(args.frames)
    try:
        import imageio_ffmpeg  # noqa: F401

        pipe = True
    except ImportError:
        pipe = False
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"PyAV {av.__version__} (FFmpeg libavformat {av.library_versions['libavformat']}); {args.frames} frames")
    with tempfile.TemporaryDirectory() as folder:
        ours, theirs = Path(folder) / "pyav.mp4", Path(folder) / "pipe.mp4"
        encode = timed(lambda: pyav_encode(ours, frames))
        opened = []
        count = timed(lambda: opened.append(open_video(ours)))
        results = {"PyAV": (encode, timed(lambda: pyav_decode(opened[0])))}
        if pipe:
            encode = timed(lambda: pipe_encode(theirs, frames))
            results["imageio-ffmpeg pipe"] = (encode, timed(lambda: pipe_decode(theirs)))
        for name, (encode, decode) in results.items():
            print(f"{name:>20}: encode {args.frames / encode:6.1f} fps, decode {args.frames / decode:6.1f} fps")
        if pipe:
            (encode_a, decode_a), (encode_b, decode_b) = results["PyAV"], results["imageio-ffmpeg pipe"]
            print(f"PyAV / pipe: encode {encode_b / encode_a:.2f}x, decode {decode_b / decode_a:.2f}x")
        print(f"open_video's counting pass (decoded, not converted to RGB): {args.frames / count:.1f} fps")


if __name__ == "__main__":
    main()
