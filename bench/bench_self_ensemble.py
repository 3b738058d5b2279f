"""Self-ensemble gain of the demo model on the DEMO test set: PSNR and SSIM (the protocol's) of the plain run and of
the "+" runs, and their time.

    python bench/bench_self_ensemble.py                                  # every clip, every frame: slow on a CPU
    python bench/bench_self_ensemble.py --videos chelsea_00 grace_hopper_00 --frames 4
    python bench/bench_self_ensemble.py --time_reversal                  # also the 16x ensemble

Settings: ``plain`` (the streaming runner), ``x8`` (the 8 flips and transpositions, model/ensemble.py), and with
``--time_reversal`` ``x2 time`` and ``x16``. Each video is cut to its first ``--frames`` frames and every frame is
restored (the border rule, as `inference.py --default_data DEMO` does), so the numbers of a subset are those of
shorter clips, not of the same frames in the full clips. Scores are the mean over all restored frames. Nothing is
asserted.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))

from cdvd_tsp.data.demo import ensure_demo_split
from cdvd_tsp.data.frames import read_rgb, scan_dataset
from cdvd_tsp.model.cdvd_tsp import CDVD_TSP
from cdvd_tsp.model.checkpoint import load_weights
from cdvd_tsp.model.ensemble import DIHEDRAL, IDENTITY, SelfEnsemble, TimeReversal, Transform, backward_outputs
from cdvd_tsp.model.streaming import Runner, StreamingRunner, with_border
from cdvd_tsp.utils.image import to_tensor, to_uint8
from cdvd_tsp.utils.metrics import psnr, ssim

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "dataset" / "DEMO" / "test"
MODEL = ROOT / "pretrain_models" / "CDVD_TSP_DEMO.pt"


def ensembled(model: CDVD_TSP, frames: list[torch.Tensor], transforms: tuple[Transform, ...], backwards: bool) -> list:
    """Every frame of ``frames`` restored (the release's border), averaged over ``transforms`` and, with
    ``backwards``, over the video played backwards too (the two passes of model/ensemble.py)."""

    def new_runner() -> Runner:
        return SelfEnsemble(lambda: StreamingRunner(model), transforms)

    padded = list(with_border([(frame, index) for index, frame in enumerate(frames)], model.n_stages))
    runner = new_runner()
    if backwards:
        runner = TimeReversal(runner, backward_outputs(new_runner(), reversed(padded), keep_on=None))
    outputs = [runner.push(frame, index) for frame, index in padded]
    return [output.image for output in outputs if output is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", nargs="*", help="video names (default: all)")
    parser.add_argument("--frames", type=int, default=None, help="first frames of each video (default: all)")
    parser.add_argument("--time_reversal", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    ensure_demo_split(DATA)
    videos = scan_dataset(DATA, require_gt=True)
    if args.videos:
        videos = [video for video in videos if video.name in set(args.videos)]
    model = CDVD_TSP().eval()
    load_weights(model, MODEL)
    model.to(device)
    settings = {"plain": ((IDENTITY,), False), "x8": (DIHEDRAL, False)}
    if args.time_reversal:
        settings.update({"x2 time": ((IDENTITY,), True), "x16": (DIHEDRAL, True)})

    scores: dict[str, list[tuple[float, float]]] = {name: [] for name in settings}
    seconds = dict.fromkeys(settings, 0.0)
    count = 0
    for video in videos:
        blurred = [read_rgb(path) for path in video.blur[: args.frames]]
        sharp = [read_rgb(path) for path in video.gt[: args.frames]]
        frames = [to_tensor(image, device) for image in blurred]
        count += len(frames)
        for name, (transforms, time_reversal) in settings.items():
            started = time.perf_counter()
            with torch.no_grad():
                outputs = ensembled(model, frames, transforms, time_reversal)
            seconds[name] += time.perf_counter() - started
            per_frame = [
                (psnr(to_uint8(out), gt), ssim(to_uint8(out), gt)) for out, gt in zip(outputs, sharp, strict=True)
            ]
            scores[name] += per_frame
            print(f"{video.name:<18}{name:<9}PSNR {np.mean([s[0] for s in per_frame]):.3f}", flush=True)

    height, width = sharp[0].shape[:2]
    print(f"\n{count} frames of {width}x{height} ({len(videos)} clips), {args.device}, {args.threads} threads")
    base = np.mean([score[0] for score in scores["plain"]])
    print(f"{'setting':<10}{'PSNR':>8}{'gain':>8}{'SSIM':>8}{'s/frame':>9}")
    for name in settings:
        mean_psnr = np.mean([score[0] for score in scores[name]])
        mean_ssim = np.mean([score[1] for score in scores[name]])
        print(f"{name:<10}{mean_psnr:>8.3f}{mean_psnr - base:>+8.3f}{mean_ssim:>8.4f}{seconds[name] / count:>9.2f}")


if __name__ == "__main__":
    main()
