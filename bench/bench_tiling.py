"""Tiled restoration against untiled: PSNR change and peak memory per tile setting, on the DEMO test set.

    python bench/bench_tiling.py                                   # one clip of dataset/DEMO/test, a few settings
    python bench/bench_tiling.py --videos 2 --frames 4 --tiles 128:32 96:32 --scale 2

Each setting runs in a fresh process, so that its peak memory is its own: on the CPU the process's peak resident
set (resource.getrusage ru_maxrss; torch allocates outside tracemalloc's view), on CUDA
torch.cuda.max_memory_allocated. Frames are the DEMO test set's (made on first use, as `inference.py --default_data
DEMO` makes them), optionally upscaled by ``--scale`` (bicubic) to show memory at larger sizes, cropped to multiples
of 4; the model is pretrain_models/CDVD_TSP_DEMO.pt. Printed per setting: PSNR of the outputs against the sharp
frames (the protocol's metric), its change from the untiled run, PSNR of the tiled outputs against the untiled ones,
seconds, and peak memory. Nothing is asserted.

Two ways of tiling: ``cascade`` is what ``inference.py --tile`` runs (`model.tiling.TiledRunner`: a streaming runner
per tile, the whole cascade per tile); ``step`` tiles each stage's step and blends between the stages (`TiledStep`
below, kept here to compare: the next stage sees the blended, whole-frame result).
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))

from cdvd_tsp.data.demo import ensure_demo_split
from cdvd_tsp.data.frames import read_rgb, scan_dataset
from cdvd_tsp.model.cdvd_tsp import CDVD_TSP
from cdvd_tsp.model.checkpoint import load_weights
from cdvd_tsp.model.streaming import Step, StreamingRunner, with_border
from cdvd_tsp.model.tiling import TiledRunner, Tiler, blend_tiles
from cdvd_tsp.utils.image import to_tensor, to_uint8
from cdvd_tsp.utils.metrics import psnr

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "dataset" / "DEMO" / "test"
MODEL = ROOT / "pretrain_models" / "CDVD_TSP_DEMO.pt"


class TiledStep:
    """A per-stage step (previous, center, following) -> restored center, run tile by tile and blended."""

    def __init__(self, step: Step, tile: int, overlap: int) -> None:
        self.step = step
        self.tiler = Tiler(tile, overlap)

    def __call__(self, previous: torch.Tensor, center: torch.Tensor, following: torch.Tensor) -> torch.Tensor:
        height, width = center.shape[-2:]
        tiles = self.tiler.tiles(height, width, center.device)
        outputs = [self.step(*(tile.crop(frame) for frame in (previous, center, following))) for tile in tiles]
        return blend_tiles(tiles, outputs, height, width)


def load_clips(videos: int, frames: int, scale: float) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
    ensure_demo_split(DATA)
    clips = []
    for video in scan_dataset(DATA, require_gt=True)[:videos]:
        pairs = []
        for kind in (video.blur, video.gt):
            images = [read_rgb(path) for path in kind[:frames]]
            if scale != 1:
                images = [
                    cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC) for image in images
                ]
            height, width = images[0].shape[:2]
            pairs.append([image[: height - height % 4, : width - width % 4] for image in images])
        clips.append((pairs[0], pairs[1]))
    return clips


def restore(setting: str, args: argparse.Namespace) -> dict:
    """One setting in this process: 'none', or 'step:TILE:OVERLAP' / 'cascade:TILE:OVERLAP'."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = CDVD_TSP().eval()
    load_weights(model, MODEL)
    model.to(device)
    outputs = []
    started = time.perf_counter()
    for blurred, _ in load_clips(args.videos, args.frames, args.scale):
        if setting == "none":
            runner = StreamingRunner(model)
        else:
            way, tile, overlap = setting.split(":")
            if way == "step":
                runner = StreamingRunner(model, step=TiledStep(model.restore_center, int(tile), int(overlap)))
            else:
                runner = TiledRunner(lambda: StreamingRunner(model), int(tile), int(overlap))
        with torch.no_grad():
            for frame in with_border([to_tensor(image, device) for image in blurred], model.n_stages):
                restored = runner.push(frame)
                if restored is not None:
                    outputs.append(to_uint8(restored.image))
    seconds = time.perf_counter() - started
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    path = Path(args.out)
    np.savez_compressed(path, *outputs)
    return {"seconds": seconds, "peak_mib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=1)
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--tiles", nargs="+", default=["128:32", "96:32", "64:32"], help="TILE:OVERLAP settings")
    parser.add_argument("--ways", nargs="+", default=["step", "cascade"], choices=["step", "cascade"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(restore(args.one, args)))
        return

    clips = load_clips(args.videos, args.frames, args.scale)
    sharp = [image for _, gt in clips for image in gt]
    height, width = sharp[0].shape[:2]
    print(f"{len(sharp)} frames of {width}x{height} from {DATA}, {args.device}, {args.threads} threads")
    settings = ["none"] + [f"{way}:{tile}" for tile in args.tiles for way in args.ways]
    untiled = None
    print(f"{'setting':<18}{'PSNR':>8}{'change':>9}{'vs untiled':>12}{'seconds':>9}{'peak MiB':>10}")
    for setting in settings:
        out = Path(f"/tmp/bench_tiling_{setting.replace(':', '_')}.npz")
        command = [sys.executable, __file__, "--one", setting, "--out", str(out)]
        command += ["--videos", str(args.videos), "--frames", str(args.frames), "--scale", str(args.scale)]
        command += ["--device", args.device, "--threads", str(args.threads)]
        result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        with np.load(out) as arrays:
            outputs = [arrays[f"arr_{index}"] for index in range(len(arrays.files))]
        out.unlink()
        score = float(np.mean([psnr(output, gt) for output, gt in zip(outputs, sharp, strict=True)]))
        if untiled is None:
            untiled = (outputs, score)
        agreement = min(psnr(output, base) for output, base in zip(outputs, untiled[0], strict=True))
        agreement_text = "-" if setting == "none" else f"{agreement:.2f}"
        print(
            f"{setting:<18}{score:>8.3f}{score - untiled[1]:>+9.3f}{agreement_text:>12}"
            f"{result['seconds']:>9.1f}{result['peak_mib']:>10.0f}"
        )


if __name__ == "__main__":
    main()
