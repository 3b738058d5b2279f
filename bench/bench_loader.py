"""Training data-loader benchmark: samples per second of main.py's training loader alone, for several worker counts.

Writes a dataset of ``--videos`` videos of ``--frames`` 720p frames (blurred and sharp PNGs of a smooth random scene,
the size of DVD's and GoPro's frames) into a temporary folder, then times `data.loaders.train_loader` over it with
the recipe's samples (five frames and their five sharp frames, decoded, cropped to 256 x 256 at random, flipped and
rotated, as tensors) in batches of 8, for each ``--workers`` count: ``--batches`` batches after the first one (whose
time, the workers' start, is printed apart) and those the workers prepared ahead meanwhile. With ``--preload`` it
also times the loader over frames decoded into memory once (main.py's --process), and prints what that memory costs
per frame and for the whole set.

    python bench/bench_loader.py                       # 0, 2, 4, 8 workers
    python bench/bench_loader.py --workers 0 2 --batches 5 --preload
"""

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))

from cdvd_tsp.data.loaders import start_epoch, train_loader
from cdvd_tsp.data.videodata import SamplingOptions, VideoData
from cdvd_tsp.utils.errors import run_cli

HEIGHT, WIDTH = 720, 1280


def bench_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4, 8], help="worker counts to time")
    parser.add_argument("--batches", type=int, default=10, help="timed batches per worker count")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--patch_size", type=int, default=256)
    parser.add_argument("--n_stages", type=int, default=2, help="T: samples of 2T+1 frames")
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--frames", type=int, default=9, help="frames per video")
    parser.add_argument("--preload", action="store_true", help="also time frames decoded into memory (--process)")
    return parser.parse_args()


def write_dataset(root: Path, videos: int, frames: int) -> None:
    """``root/{blur,gt}/<video>/<00000.png ...>``: a smooth random scene panning one pixel a frame, 720p."""
    for video in range(videos):
        rng = np.random.default_rng(video)
        scene = cv2.GaussianBlur(rng.integers(0, 256, (HEIGHT + frames, WIDTH + frames, 3), dtype=np.uint8), (0, 0), 2)
        for index in range(frames):
            sharp = np.ascontiguousarray(scene[index : index + HEIGHT, index : index + WIDTH])
            for kind, image in (("gt", sharp), ("blur", cv2.GaussianBlur(sharp, (0, 0), 1.5))):
                folder = root / kind / f"video{video}"
                folder.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(folder / f"{index:05d}.png"), image)


PREFETCH = 2
"""Batches each worker prepares ahead (DataLoader's prefetch_factor): those ready after the first batch are taken
before the timing starts, so that the rate is the workers' steady rate."""


def time_loader(dataset: VideoData, bench: argparse.Namespace, workers: int) -> tuple[float, float]:
    """(seconds of the first batch, samples per second over ``--batches`` batches in the steady state)."""
    loader = train_loader(dataset, bench.batch_size, workers, rank=0, world_size=1, pin=False)
    start_epoch(loader, 1, 0, worker_seed=1)
    started = time.perf_counter()
    batches = iter(loader)
    next(batches)
    first = time.perf_counter() - started
    for _ in range(PREFETCH * workers):
        next(batches)
    started = time.perf_counter()
    for _ in range(bench.batches):
        next(batches)
    rate = bench.batches * bench.batch_size / (time.perf_counter() - started)
    del batches
    return first, rate


def main() -> None:
    bench = bench_options()
    n_sequence = 2 * bench.n_stages + 1
    print(
        f"{bench.videos} videos of {bench.frames} {WIDTH}x{HEIGHT} PNG frames; samples of {n_sequence} blurred + "
        f"{n_sequence} sharp frames, {bench.patch_size}x{bench.patch_size} crops, batches of {bench.batch_size}; "
        f"{bench.batches} timed batches after the first"
    )
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        started = time.perf_counter()
        write_dataset(root, bench.videos, bench.frames)
        png_bytes = sum(path.stat().st_size for path in root.rglob("*.png"))
        print(f"wrote {2 * bench.videos * bench.frames} PNGs ({png_bytes / 2**20:.0f} MiB) in "
              f"{time.perf_counter() - started:.1f} s")  # fmt: skip
        # enough repeats of the windows for every timed batch
        windows = bench.videos * (bench.frames - n_sequence + 1)
        needed = bench.batches + 1 + PREFETCH * max(bench.workers)
        test_every = (needed + 1) * bench.batch_size * max(windows // bench.batch_size, 1)
        modes = [False, True] if bench.preload else [False]
        for preload in modes:
            options = SamplingOptions(
                n_sequence=n_sequence,
                patch_size=bench.patch_size,
                batch_size=bench.batch_size,
                test_every=test_every,
                preload=preload,
            )
            started = time.perf_counter()
            dataset = VideoData(root, options, train=True)
            if preload:
                memory = sum(blur.nbytes + gt.nbytes for blur, gt in dataset.frames)
                frames = 2 * bench.videos * bench.frames
                print(
                    f"frames decoded into memory (--process): {time.perf_counter() - started:.1f} s, "
                    f"{memory / 2**20:.0f} MiB for {frames} frames ({memory / frames / 2**20:.2f} MiB a frame)"
                )
            for workers in bench.workers:
                first, rate = time_loader(dataset, bench, workers)
                what = "decoded in memory" if preload else "PNG decoding"
                print(
                    f"{what:<18} {workers} workers: {rate:6.1f} samples/s ({1000 / rate:6.1f} ms a sample), "
                    f"first batch {first:.2f} s",
                    flush=True,
                )
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"machine: CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average {load}")


if __name__ == "__main__":
    run_cli(main)
