"""The Python API against the command: the same bytes, and the time per frame of each, in one run.

    python bench/bench_api.py                         # the DEMO test set's clips (made if missing)
    python bench/bench_api.py --frames path/to/frames --rounds 3

For each clip (a folder of frames), alternating for ``--rounds`` rounds: ``inference.py --input CLIP --output TMP``
(in this process, its default settings but ``--device``), then ``Deblurrer.from_checkpoint(...).deblur(frames)``
with the same settings. Prints, per clip, whether every output is byte-identical to the command's PNG, and the
seconds per frame: the command's wall time and model time (results.json's ``seconds_per_frame`` and
``model_seconds_per_frame``), the API's wall time (reading the frames included) and model time (the time spent
inside the API's generator). Nothing is asserted; the machine is named.
"""

import argparse
import contextlib
import io
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))

from cdvd_tsp import Deblurrer
from cdvd_tsp.data.demo import make_demo_data
from cdvd_tsp.data.frames import list_frames, read_rgb
from cdvd_tsp.inference import main as inference
from cdvd_tsp.utils.paths import from_repo

DEMO_CLIPS = from_repo("dataset/DEMO/test/blur")


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, {platform.python_version()}"


def command_run(clip: Path, output: Path, device: str, threads: int) -> tuple[list[np.ndarray], float, float]:
    argv = ["--input", str(clip), "--output", str(output), "--default_data", "DEMO", "--device", device]
    argv += ["--threads", str(threads)]
    printed = io.StringIO()  # the command's log and progress bars, shown only if it fails
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        status = inference(argv)
    if status != 0:
        raise SystemExit(f"inference.py {' '.join(argv)} exited with {status}:\n{printed.getvalue()}")
    results = json.loads((output / "results.json").read_text())
    images = [read_rgb(output / f"{path.stem}.png") for path in list_frames(clip)]
    return images, results["seconds_per_frame"], results["model_seconds_per_frame"]


def api_run(deblurrer: Deblurrer, clip: Path) -> tuple[list[np.ndarray], float, float]:
    started = time.perf_counter()
    inside = 0.0
    outputs = []
    generator = deblurrer.deblur(read_rgb(path) for path in list_frames(clip))
    while True:
        entered = time.perf_counter()
        image = next(generator, None)
        inside += time.perf_counter() - entered
        if image is None:
            break
        outputs.append(image)
    wall = time.perf_counter() - started
    return outputs, wall / len(outputs), inside / len(outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", nargs="*", type=Path, help="folders of frames (default: the DEMO test clips)")
    parser.add_argument("--clips", type=int, default=2, help="how many DEMO clips (without --frames)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.frames:
        clips = args.frames
    else:
        make_demo_data([DEMO_CLIPS.parent])
        clips = sorted(path for path in DEMO_CLIPS.iterdir() if path.is_dir())[: args.clips]
    print(f"machine: {machine()}")
    deblurrer = Deblurrer.from_checkpoint("DEMO", device=args.device)
    print(f"settings: device {deblurrer.device}, precision {deblurrer.precision}, {deblurrer.n_stages} stages")
    print("clip | frames | size | identical | command s/frame (wall, model) | API s/frame (wall, model)")
    with tempfile.TemporaryDirectory() as scratch:
        for clip in clips:
            for round_index in range(args.rounds):
                output = Path(scratch) / f"{clip.name}-{round_index}"
                theirs, command_wall, command_model = command_run(clip, output, args.device, args.threads)
                ours, api_wall, api_model = api_run(deblurrer, clip)
                identical = len(ours) == len(theirs) and all(
                    np.array_equal(mine, other) for mine, other in zip(ours, theirs, strict=True)
                )
                height, width = ours[0].shape[:2]
                print(
                    f"{clip.name} | {len(ours)} | {width}x{height} | {identical} | {command_wall:.3f}, "
                    f"{command_model:.3f} | {api_wall:.3f}, {api_model:.3f}"
                )


if __name__ == "__main__":
    main()
