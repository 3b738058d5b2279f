"""Measure inference: seconds per output frame for the window runner (the release's way) and the streaming runner,
their peak memory, the model FLOPs per output frame, and the time of the per-frame work around the model (the
protocol's metrics, PNG writing).

    python bench/bench_inference.py                       # 256x448 and 1280x720, on CUDA if available
    python bench/bench_inference.py --sizes 256x448 --outputs 3 --device cpu
    python bench/bench_inference.py --sweep --sizes 1280x720 --outputs 20     # every precision, with/without graphs
    python bench/bench_inference.py --sweep --compile                        # also torch.compile (minutes)
    python bench/bench_inference.py --pipeline DATASET --model_path pretrain_models/CDVD_TSP_DEMO.pt

Weights are PyTorch's default initialisation from a seed (speed does not depend on their values) and frames are
smooth random images. Each runner is measured in steady state: the window runner's cost per window, and the
streaming runner's cost per frame once its queues are full (its first output, which needs three stage-1 steps,
is reported as the latency). Every (size, runner) pair runs in a fresh process so that its peak memory is its own.
FLOPs are counted by torch.utils.flop_counter (convolutions and matrix products; the cost volume's elementwise
products are not counted). Nothing here is asserted: the numbers are printed.

``--sweep`` (CUDA) times the streaming runner's steady output frames in one process for every ``--precision``
setting, eagerly and replayed from CUDA graphs (and compiled, with ``--compile``), and compares each setting's
outputs with the fp32 ones: the largest difference in grey levels and the PSNR between the two uint8 outputs.

``--pipeline DATASET`` runs ``code/inference.py`` itself on a dataset (blur/ and gt/): first with the model's step
replaced by an identity, which measures what the pipeline around the model can sustain (reading, copies, PNG
writing, metrics), with and without metrics and PNGs; then with the model at the default settings and serially
(``--workers 0``), which shows how much of the work around the model the pipeline hides (wall time against the
model's time per frame, from results.json).
"""

import argparse
import contextlib
import io
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))

from data.frames import write_png
from model.acceleration import accelerated_step
from model.cdvd_tsp import CDVD_TSP
from model.correlation import SELECTOR
from model.streaming import StreamingRunner, WindowRunner
from utils import metrics_device
from utils.image import to_tensor, to_uint8
from utils.metrics import psnr, score_frame, ssim
from utils.metrics_device import score_frame_tensor
from utils.precision import PRECISIONS, tf32_switched

RUNNERS = {"window": WindowRunner, "streaming": StreamingRunner}


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (height, width)."""
    width, height = (int(part) for part in text.lower().split("x"))
    return height, width


def frames(count: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    scene = rng.integers(0, 256, (height + count, width + count, 3), dtype=np.uint8)
    scene = cv2.GaussianBlur(scene, (0, 0), 3.0)
    return [np.ascontiguousarray(scene[index : index + height, index : index + width]) for index in range(count)]


def pick_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)


def measure_runner(runner_name: str, size: tuple[int, int], outputs: int, device: torch.device, flops: bool) -> dict:
    """Time ``outputs`` steady-state outputs of one runner; in a process of its own (see main)."""
    torch.manual_seed(0)
    model = CDVD_TSP().to(device).eval()
    runner = RUNNERS[runner_name](model)
    half = model.n_stages
    # the window runner's first output is already steady; the streaming runner's is the latency, timed apart
    pushes = 2 * half + outputs + (1 if runner_name == "streaming" else 0)
    clip = [to_tensor(frame, device) for frame in frames(pushes + 1, *size)]  # one more for the FLOP count
    rss_before = peak_rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    output_seconds = []  # per output: the time of every push since the previous output
    since_output = 0.0
    with torch.inference_mode():
        for frame in clip[:-1]:
            started = time.perf_counter()
            restored = runner.push(frame)
            synchronize(device)
            since_output += time.perf_counter() - started
            if restored is not None:
                output_seconds.append(since_output)
                since_output = 0.0
        flop_count = None
        if flops:  # one more output, counted rather than timed
            with FlopCounterMode(display=False) as counter:
                runner.push(clip[-1])
            flop_count = counter.get_total_flops()
    # the streaming runner's first output also pays for filling its queues; report it apart
    first, steady = (output_seconds[0], output_seconds[1:]) if runner_name == "streaming" else (None, output_seconds)
    result = {
        "runner": runner_name,
        "size": f"{size[1]}x{size[0]}",
        "seconds_per_frame": float(np.mean(steady)),
        "timed_outputs": len(steady),
        "first_output_seconds": first,
        "peak_rss_mib": peak_rss_mib(),
        "rss_before_mib": rss_before,
        "gflop_per_frame": None if flop_count is None else flop_count / 1e9,
    }
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def device_metrics_work(output: np.ndarray, blurred: np.ndarray, sharp: np.ndarray) -> dict:
    """On CUDA: score_frame_tensor with each filtering (synchronized, so the GPU time is counted)."""
    if not torch.cuda.is_available():
        return {}
    images = [torch.from_numpy(image).cuda() for image in (output, blurred, sharp)]

    def scored(filtering: object) -> object:
        def work() -> None:
            with mock.patch.object(metrics_device, "_gaussian_valid", filtering):
                score_frame_tensor(*images)
            torch.cuda.synchronize()

        return work

    return {
        "score_frame_tensor on CUDA, grouped convolution": scored(metrics_device._convolved),
        "score_frame_tensor on CUDA, shifted sums": scored(metrics_device._shifted_sums),
    }


def measure_postprocessing(size: tuple[int, int], repeats: int = 7) -> dict:
    """Seconds per frame (the median of ``repeats``) for the protocol's metrics and for writing the PNG."""
    sharp, blurry, other = frames(3, *size, seed=1)
    timings = {}
    for name, work in {
        "psnr_ssim_pair": lambda: (psnr(other, sharp), ssim(other, sharp)),
        "score_frame (output and input)": lambda: score_frame(other, blurry, sharp),
        "png_write": lambda: write_png(Path("/dev/null"), other),
        "to_tensor and to_uint8": lambda: to_uint8(to_tensor(other)),
        **device_metrics_work(other, blurry, sharp),
    }.items():
        work()  # warm-up: first-call costs (page faults, library set-up) are not per frame
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            work()
            seconds.append(time.perf_counter() - started)
        timings[name] = float(np.median(seconds))
    return timings


def sweep_setting(
    model: CDVD_TSP, clip: list[torch.Tensor], name: str, graphs: bool, compile: bool, device: torch.device
) -> tuple[dict, list[np.ndarray]]:
    """Stream ``clip`` with one precision setting; per-output wall times (synchronized) and the uint8 outputs."""
    precision = PRECISIONS[name]
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    step = accelerated_step(model, precision, device, cuda_graphs=graphs, compile=compile)
    runner = StreamingRunner(model, step=step)
    seconds, outputs = [], []
    since_output = 0.0
    with tf32_switched(precision.tf32), torch.inference_mode():
        for frame in clip:
            started = time.perf_counter()
            restored = runner.push(frame)
            synchronize(device)
            since_output += time.perf_counter() - started
            if restored is not None:
                seconds.append(since_output)
                outputs.append(to_uint8(restored.image))
                since_output = 0.0
    # the first outputs pay for warm-up (cuDNN, the kernel's check), the capture, the compilation
    warm = 3
    result = {
        "precision": name,
        "graphs": graphs,
        "compile": compile,
        "ms_per_frame": 1000 * float(np.median(seconds[warm:])),
        "first_output_s": seconds[0],
        "warm_outputs_s": sum(seconds[:warm]),
        "timed_outputs": len(seconds) - warm,
        "peak_cuda_mib": torch.cuda.max_memory_allocated(device) / 2**20,
    }
    return result, outputs


def sweep(size: tuple[int, int], outputs: int, device: torch.device, compile: bool) -> None:
    """Every precision, eager and from CUDA graphs (and compiled), at one frame size; see the module docstring."""
    torch.manual_seed(0)
    model = CDVD_TSP().to(device).eval()
    clip = [to_tensor(frame, device) for frame in frames(outputs + 3 + 4, *size)]
    settings = [(name, graphs, False) for name in PRECISIONS for graphs in (False, True)]
    if compile:
        settings += [(name, True, True) for name in ("tf32", "fp16")]
    reference = None
    for name, graphs, compiled in settings:
        result, images = sweep_setting(model, clip, name, graphs, compiled, device)
        if reference is None:
            reference = images
        pairs = list(zip(images, reference, strict=True))
        largest = max(int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) for a, b in pairs)
        closeness = min(psnr(a, b) for a, b in pairs)
        switches = f"graphs={'on ' if graphs else 'off'} compile={'on ' if compiled else 'off'}"
        label = f"{size[1]}x{size[0]} {name:4s} {switches}"
        print(
            f"{label}: {result['ms_per_frame']:7.1f} ms/frame (median of {result['timed_outputs']}), first output "
            f"{result['first_output_s']:.1f} s, first 3 outputs {result['warm_outputs_s']:.1f} s, peak "
            f"{result['peak_cuda_mib']:.0f} MiB; vs fp32: max {largest} grey levels, min PSNR {closeness:.1f} dB"
        )
    print(f"cost volume: {SELECTOR.describe()}")


def identity_step(*args: object, **kwargs: object) -> object:
    """Stands in for `accelerated_step`: the 'restored' frame is the center frame itself."""
    return lambda previous, center, following: center.clone()


def pipeline_run(argv: list[str], identity: bool) -> tuple[dict, list[float], float]:
    """One inference.py run: its results.json, the per-frame wall times of its log, and its own wall time."""
    import inference  # imported here: the other modes do not need the command line's modules

    with tempfile.TemporaryDirectory() as scratch:
        destination = ["--result_path", scratch] if "--input" not in argv else ["--output", scratch]
        patch = mock.patch("infer.runners.accelerated_step", identity_step) if identity else contextlib.nullcontext()
        quiet = contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO())
        started = time.perf_counter()
        with patch, quiet[0], quiet[1]:
            inference.main([*argv, *destination])
        seconds = time.perf_counter() - started
        report = json.loads((Path(scratch) / "results.json").read_text())
        log = next(Path(scratch).glob("inference_log_*.txt")).read_text()
    totals = [float(value) for value in re.findall(r"total_time:([0-9.e+-]+)s", log)]
    return report, totals, seconds


def pipeline(data: Path, model_path: Path, device: str) -> None:
    """What the pipeline sustains around an identity step, and how well it hides its work behind the model."""
    evaluate = ["--data_path", str(data), "--model_path", str(model_path), "--device", device, "--no_showcase"]
    first_video = sorted(path for path in (data / "blur").iterdir() if path.is_dir())[0]
    deblur = ["--input", str(first_video), "--model_path", str(model_path), "--device", device]
    runs = {
        "identity step, PNG + metrics": (evaluate, True),
        "identity step, metrics only (--no_save_image)": ([*evaluate, "--no_save_image"], True),
        "identity step, PNG only (--input)": (deblur, True),
        "identity step, PNG + metrics, --workers 0": ([*evaluate, "--workers", "0"], True),
        "model, default settings, PNG + metrics": (evaluate, False),
        "model, default settings, metrics only (--no_save_image)": ([*evaluate, "--no_save_image"], False),
        "model, default settings, --workers 0 (serial)": ([*evaluate, "--workers", "0"], False),
    }
    pipeline_run(evaluate, identity=False)  # warm-up: the process's one-time costs (CUDA, cuDNN, kernels)
    for label, (argv, identity) in runs.items():
        report, totals, seconds = pipeline_run(argv, identity)
        wall, model = report["seconds_per_frame"], report["model_seconds_per_frame"]
        line = (
            f"{label}: {report['frames'] / seconds:.1f} frames/s over the whole run ({seconds:.1f} s for "
            f"{report['frames']} frames, {report['settings']['precision']}); per frame: wall {1000 * wall:.1f} ms "
            f"(median {1000 * float(np.median(totals)):.1f}), model {1000 * model:.1f} ms"
        )
        print(line + ("" if identity else f"; wall / model = {wall / model:.3f}"))


def run_isolated(runner: str, size: str, outputs: int, device: str, threads: int | None, flops: bool) -> dict:
    command = [sys.executable, __file__, "--one", runner, "--sizes", size, "--outputs", str(outputs)]
    command += ["--device", device] + (["--threads", str(threads)] if threads else []) + (["--flops"] if flops else [])
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"{runner} at {size} failed:\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    line = f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    if torch.cuda.is_available():
        line += f", {torch.cuda.get_device_name()}"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["448x256", "1280x720"], help="WxH")
    parser.add_argument(
        "--outputs", type=int, nargs="+", default=[3, 1], help="timed steady-state outputs, one number per size"
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--flops-size", default="448x256", help="the size at which FLOPs are counted")
    parser.add_argument(
        "--runners", nargs="*", choices=list(RUNNERS), default=list(RUNNERS), help="runners to time (none: metrics)"
    )
    parser.add_argument("--sweep", action="store_true", help="every precision, eager and CUDA graphs (CUDA)")
    parser.add_argument("--compile", action="store_true", help="with --sweep: also torch.compile (slow to start)")
    parser.add_argument("--pipeline", type=Path, metavar="DATASET", help="time inference.py on DATASET (see above)")
    parser.add_argument("--model_path", type=Path, help="with --pipeline: the checkpoint to load")
    parser.add_argument("--one", choices=list(RUNNERS), help=argparse.SUPPRESS)
    parser.add_argument("--flops", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    if args.one:
        print(json.dumps(measure_runner(args.one, parse_size(args.sizes[0]), args.outputs[0], device, args.flops)))
        return
    if args.pipeline:
        if args.model_path is None:
            parser.error("--pipeline needs --model_path")
        print(f"machine: {machine()}; device: {device}")
        pipeline(args.pipeline, args.model_path, args.device)
        return
    if args.sweep:
        if device.type != "cuda":
            parser.error("--sweep measures CUDA settings; no CUDA device here")
        print(f"machine: {machine()}; device: {device}")
        for size, count in zip(args.sizes, args.outputs, strict=False):
            sweep(parse_size(size), count, device, args.compile)
        return

    print(f"machine: {machine()}; device: {device}")
    if len(args.outputs) != len(args.sizes):
        parser.error(f"--outputs needs one number per size ({len(args.sizes)})")
    results = []
    for size, count in zip(args.sizes, args.outputs, strict=True):
        for runner in args.runners:
            result = run_isolated(runner, size, count, args.device, args.threads, flops=size == args.flops_size)
            results.append(result)
            first = result["first_output_seconds"]
            memory = f", peak CUDA {result['peak_cuda_mib']:.0f} MiB" if "peak_cuda_mib" in result else ""
            print(
                f"{size} {runner:9s}: {result['seconds_per_frame']:.3f} s/frame over {result['timed_outputs']} "
                f"output(s){f' (first output {first:.3f} s)' if first is not None else ''}; peak RSS "
                f"{result['peak_rss_mib']:.0f} MiB (model loaded: {result['rss_before_mib']:.0f} MiB){memory}"
                + (f"; {result['gflop_per_frame']:.1f} GFLOP/frame" if result["gflop_per_frame"] else "")
            )
        for name, seconds in measure_postprocessing(parse_size(size)).items():
            print(f"{size} {name}: {seconds * 1000:.1f} ms/frame")
    flops = {result["runner"]: result["gflop_per_frame"] for result in results if result["gflop_per_frame"]}
    if len(flops) == 2:
        print(f"model FLOPs per output frame, window / streaming: {flops['window'] / flops['streaming']:.3f}")


if __name__ == "__main__":
    main()
