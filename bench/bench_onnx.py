"""Per-frame time of the onnxruntime backend's step against the PyTorch CPU step, in one run.

    python bench/bench_onnx.py pretrain_models/CDVD_TSP_DEMO.pt --onnx step.onnx   # export first if missing
    python bench/bench_onnx.py MODEL.pt --onnx step.onnx --sizes 256x448 720x1280 --rounds 2

A frame of the streaming runner costs T steps (2 for the released model) in steady state, so the time per frame is
T times a step's. Each round times one step of every backend in turn on the same frames (alternating, so that a noisy
shared machine slows them alike), after one warm-up step each. The PyTorch backends are the accelerated step with
the options measured fastest for the CPU at fp32 (the evaluation default) and, where the CPU computes bfloat16
natively, bf16 autocast (--input's default).
Without --onnx's file the step is exported there first, and the export's time and the file's size are printed.
Nothing is asserted: the numbers are printed, with the machine's CPU.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))

from cdvd_tsp.export_model import export_onnx_file
from cdvd_tsp.model.acceleration import accelerated_step, recommended_options
from cdvd_tsp.model.cdvd_tsp import CDVD_TSP
from cdvd_tsp.model.checkpoint import load_weights
from cdvd_tsp.model.onnx_export import sample_frames
from cdvd_tsp.model.onnx_step import OnnxModel
from cdvd_tsp.model.streaming import Step
from cdvd_tsp.utils.cpu import bf16_support, read_cpuinfo
from cdvd_tsp.utils.precision import get_precision

DEVICE = torch.device("cpu")


def step_seconds(step: Step, frames: tuple[torch.Tensor, ...]) -> float:
    """One call of ``step`` on ``frames``, timed."""
    with torch.inference_mode():
        started = time.perf_counter()
        step(*frames)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--onnx", type=Path, required=True, help="the exported step (exported there if missing)")
    parser.add_argument("--sizes", nargs="+", default=["256x448", "720x1280"], help="HxW, multiples of 4")
    parser.add_argument("--rounds", type=int, default=3, help="timed steps per backend and size (after one warm-up)")
    args = parser.parse_args()

    threads = torch.get_num_threads()
    print(f"machine: {read_cpuinfo().name}, {threads} threads; torch {torch.__version__}")
    if not args.onnx.exists():
        report = export_onnx_file(args.checkpoint, args.onnx, half=False)
        print(f"export: {report.seconds:.1f} s (+ check {report.check_seconds:.1f} s), {report.size_mb:.1f} MB")
    print(f"onnx file: {args.onnx.stat().st_size / 1e6:.1f} MB")
    model = CDVD_TSP()
    load_weights(model, args.checkpoint)
    model.eval()
    exported = OnnxModel(args.onnx, threads=threads)
    import onnxruntime

    print(f"onnxruntime {onnxruntime.__version__}")
    backends: dict[str, Step] = {"onnxruntime": exported.step}
    names = ["fp32"] + (["bf16"] if bf16_support().native else [])
    for name in names:
        precision = get_precision(name, DEVICE)
        options = recommended_options(DEVICE, precision)
        backends[f"pytorch {name}"] = accelerated_step(model, precision, DEVICE, options=options)
    for text in args.sizes:
        height, width = (int(value) for value in text.split("x"))
        frames = sample_frames((height, width), seed=0)
        times: dict[str, list[float]] = {name: [] for name in backends}
        for step in backends.values():  # warm-up
            step_seconds(step, frames)
        for _ in range(args.rounds):
            for name, step in backends.items():
                times[name].append(step_seconds(step, frames))
        stages = exported.n_stages
        frame = {name: stages * statistics.median(values) for name, values in times.items()}
        print(f"{width}x{height}: median of {args.rounds} steps each, s/frame = {stages} steps:")
        for name in backends:
            ratio = frame[name] / frame["onnxruntime"]
            print(f"  {name:18s} {frame[name]:7.2f} s/frame   ({ratio:.2f}x onnxruntime's time)")


if __name__ == "__main__":
    main()
