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
setting, eagerly and replayed from CUDA graphs (and compiled, with ``--compile``), each speed lever at tf32 and
fp16, and those two with deterministic algorithms (the cost of ``inference.py --deterministic``), and compares each
setting's outputs with the fp32 ones: the largest difference in grey levels and the PSNR between the two uint8
outputs.

``--pipeline DATASET`` runs ``code/inference.py`` itself on a dataset (blur/ and gt/): first with the model's step
replaced by an identity, which measures what the pipeline around the model can sustain (reading, copies, PNG
writing, metrics), with and without metrics and PNGs; then with the model at the default settings and serially
(``--workers 0``), which shows how much of the work around the model the pipeline hides (wall time against the
model's time per frame, from results.json); last, the ratio of the pipeline's frame rate around the identity to
the model's own rate (1 / its mean time per frame with the default settings), which should be at least 2.
"""

import argparse
import contextlib
import functools
import io
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))

from cdvd_tsp.data.frames import write_png
from cdvd_tsp.infer.switches import deterministic_algorithms
from cdvd_tsp.model.acceleration import RELEASE_OPTIONS, accelerated_step, recommended_options
from cdvd_tsp.model.cdvd_tsp import CDVD_TSP, StepOptions
from cdvd_tsp.model.correlation import BACKEND_VARIABLE, SELECTOR
from cdvd_tsp.model.streaming import Step, StreamingRunner, WindowRunner
from cdvd_tsp.utils import metrics_device
from cdvd_tsp.utils.cpu import bf16_support, configure_threads, read_cpuinfo
from cdvd_tsp.utils.determinism import set_cublas_workspace
from cdvd_tsp.utils.image import to_tensor, to_uint8
from cdvd_tsp.utils.metrics import psnr, score_frame, ssim
from cdvd_tsp.utils.metrics_device import score_frame_tensor
from cdvd_tsp.utils.precision import PRECISIONS, tf32_switched

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


@dataclass(frozen=True)
class Setting:
    """One configuration of the streaming runner's step in a sweep."""

    label: str
    precision: str = "fp32"
    options: StepOptions = RELEASE_OPTIONS
    cost_volume: str = "auto"
    """CDVD_COST_VOLUME while it runs: torch (shifted products), tiled, auto (the CuPy kernel on CUDA, tiled on CPU)."""
    graphs: bool = False
    compile_mode: str | None = None
    """None: eager; otherwise one of model.acceleration.COMPILE_MODES."""
    deterministic: bool = False
    """Deterministic algorithms (``inference.py --deterministic``, infer/switches.py) while it runs."""

    def step(self, model: CDVD_TSP, device: torch.device) -> Step:
        compile, mode = self.compile_mode is not None, self.compile_mode or "default"
        precision = PRECISIONS[self.precision]
        return accelerated_step(model, precision, device, self.graphs, compile, self.options, compile_mode=mode)

    def name(self) -> str:
        switches = f"graphs={'on ' if self.graphs else 'off'} compile={self.compile_mode or 'off'}"
        switches += " deterministic" if self.deterministic else ""
        return f"{self.precision:4s} {switches}" + (f" {self.label}" if self.label else "")


ALL_LEVERS = StepOptions(batch_flows=True, channels_last_flow=True, channels_last_restoration=True)
LEVERS = {
    "batched flows": StepOptions(batch_flows=True),
    "channels_last PWC-Net": StepOptions(channels_last_flow=True),
    "channels_last restoration net": StepOptions(channels_last_restoration=True),
    "channels_last both": StepOptions(channels_last_flow=True, channels_last_restoration=True),
}


def describe(options: StepOptions) -> str:
    names = [name for name, value in vars(options).items() if value]
    return ", ".join(names) if names else "release layout"


def cpu_settings() -> list[Setting]:
    """Today's CPU path, each lever alone, every lever, and the recommended combination (and bf16 where native)."""
    cpu = torch.device("cpu")
    settings = [
        Setting("today (NCHW, shifted cost volume, flows one by one)", cost_volume="torch"),
        Setting("tiled cost volume", cost_volume="tiled"),
    ]
    settings += [Setting(label, options=options, cost_volume="torch") for label, options in LEVERS.items()]
    settings.append(
        Setting("every lever (tiled, batched, channels_last both)", options=ALL_LEVERS, cost_volume="tiled")
    )
    recommended = recommended_options(cpu, PRECISIONS["fp32"])
    settings.append(Setting(f"recommended ({describe(recommended)}, tiled)", options=recommended))
    if bf16_support().native:
        bf16 = recommended_options(cpu, PRECISIONS["bf16"])
        settings.append(Setting("bf16 NCHW, tiled", precision="bf16", cost_volume="tiled"))
        settings.append(Setting(f"recommended bf16 ({describe(bf16)}, tiled)", precision="bf16", options=bf16))
    return settings


def cuda_settings(compile: bool) -> list[Setting]:
    """Every precision eager and from graphs; then at tf32 and fp16 with graphs each lever alone and every lever,
    the tiled cost volume instead of the kernel, deterministic algorithms (graphs, the release's options), and with
    ``compile`` a compiled step in the project's graphs and torch.compile's own graphs (reduce-overhead), plain and
    with every lever."""
    settings = [Setting("", name, graphs=graphs) for name in PRECISIONS for graphs in (False, True)]
    for name in ("tf32", "fp16"):
        settings += [Setting(label, name, options, graphs=True) for label, options in LEVERS.items()]
        settings.append(Setting("every lever", name, ALL_LEVERS, graphs=True))
        settings.append(Setting("tiled cost volume", name, cost_volume="tiled", graphs=True))
        settings.append(Setting("", name, graphs=True, deterministic=True))  # the cost of --deterministic
        if compile:
            for label, options in (("", RELEASE_OPTIONS), ("every lever", ALL_LEVERS)):
                settings.append(Setting(label, name, options, graphs=True, compile_mode="default"))
                settings.append(Setting(label, name, options, compile_mode="reduce-overhead"))
    return settings


def compare_to(images: list[np.ndarray], reference: list[np.ndarray]) -> str:
    """The largest difference in grey levels and the smallest PSNR between two lists of uint8 outputs."""
    pairs = list(zip(images, reference, strict=True))
    largest = max(int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) for a, b in pairs)
    closeness = min(psnr(a, b) for a, b in pairs)
    return f"max {largest} grey levels, min PSNR {closeness:.1f} dB"


@contextlib.contextmanager
def cost_volume_choice(choice: str) -> Iterator[None]:
    """CDVD_COST_VOLUME set to ``choice`` for a block (the selector reads it at every call)."""
    previous = os.environ.get(BACKEND_VARIABLE)
    os.environ[BACKEND_VARIABLE] = choice
    try:
        yield
    finally:
        if previous is None:
            del os.environ[BACKEND_VARIABLE]
        else:
            os.environ[BACKEND_VARIABLE] = previous


def cuda_sweep_setting(
    model: CDVD_TSP, clip: list[torch.Tensor], setting: Setting, device: torch.device
) -> tuple[dict, list[np.ndarray]]:
    """Stream ``clip`` with one setting; per-output wall times (synchronized) and the uint8 outputs."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    runner = StreamingRunner(model, step=setting.step(model, device))
    seconds, outputs = [], []
    since_output = 0.0
    tf32 = PRECISIONS[setting.precision].tf32
    with (
        cost_volume_choice(setting.cost_volume),
        tf32_switched(tf32),
        deterministic_algorithms(setting.deterministic),
        torch.inference_mode(),
    ):
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
        "ms_per_frame": 1000 * float(np.median(seconds[warm:])),
        "first_output_s": seconds[0],
        "warm_outputs_s": sum(seconds[:warm]),
        "timed_outputs": len(seconds) - warm,
        "peak_cuda_mib": torch.cuda.max_memory_allocated(device) / 2**20,
    }
    return result, outputs


def cuda_sweep(size: tuple[int, int], outputs: int, device: torch.device, compile: bool) -> None:
    """Every setting of `cuda_settings` at one frame size, streamed, against eager fp32's outputs."""
    set_cublas_workspace()  # read once, before cuBLAS's first use
    torch.manual_seed(0)
    model = CDVD_TSP().to(device).eval()
    clip = [to_tensor(frame, device) for frame in frames(outputs + 3 + 4, *size)]
    reference = None
    for setting in cuda_settings(compile):
        result, images = cuda_sweep_setting(model, clip, setting, device)
        reference = images if reference is None else reference
        print(
            f"{size[1]}x{size[0]} {setting.name()}: {result['ms_per_frame']:7.1f} ms/frame (median of "
            f"{result['timed_outputs']}), first output {result['first_output_s']:.1f} s, first 3 outputs "
            f"{result['warm_outputs_s']:.1f} s, peak {result['peak_cuda_mib']:.0f} MiB; vs fp32: "
            f"{compare_to(images, reference)}",
            flush=True,
        )
    print(f"cost volume: {SELECTOR.describe()}")


def timed_call(step: Step, inputs: list[torch.Tensor]) -> tuple[float, float, torch.Tensor]:
    """(wall seconds, CPU seconds of this process, output) of one call."""
    wall, used = time.perf_counter(), time.process_time()
    output = step(*inputs)
    return time.perf_counter() - wall, time.process_time() - used, output


def cpu_sweep(sizes: list[tuple[int, int]], rounds: list[int], chosen: list[str] | None) -> None:
    """One stage step per setting of `cpu_settings`, round robin, so that the machine's other load falls on every
    setting alike: at each size one warm-up step, then ``rounds`` rounds of one timed step per setting. A streamed
    frame is two steps (its stage-1 and stage-2 steps), so its time is twice the step's. ``chosen``: only the
    settings whose label contains one of these words (today's path is always run: the others are compared to it)."""
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model = CDVD_TSP().eval()
    settings = cpu_settings()
    settings = settings[:1] + [s for s in settings[1:] if chosen is None or any(word in s.label for word in chosen)]
    for size, count in zip(sizes, rounds, strict=True):
        inputs = [to_tensor(frame, cpu) for frame in frames(3, *size)]
        steps = [setting.step(model, cpu) for setting in settings]
        times: list[list[tuple[float, float]]] = [[] for _ in settings]
        images: list[np.ndarray] = [np.empty(0)] * len(settings)
        with torch.inference_mode():
            with cost_volume_choice(settings[0].cost_volume):
                steps[0](*inputs)  # warm-up: the process's first-call costs
            for _ in range(count):
                for index, (setting, step) in enumerate(zip(settings, steps, strict=True)):
                    with cost_volume_choice(setting.cost_volume):
                        wall, used, output = timed_call(step, inputs)
                    times[index].append((wall, used))
                    images[index] = to_uint8(output)
        base_wall, base_cpu = (float(np.median(column)) for column in zip(*times[0], strict=True))
        for setting, measured, image in zip(settings, times, images, strict=True):
            wall, used = (float(np.median(column)) for column in zip(*measured, strict=True))
            print(
                f"{size[1]}x{size[0]} {setting.precision} {setting.label}: {2 * wall:.2f} s/frame (step {wall:.2f} s, "
                f"median of {count}; CPU time {used:.2f} s); speed-up over today {base_wall / wall:.2f}x (CPU time "
                f"{base_cpu / used:.2f}x); vs today: {compare_to([image], [images[0]])}",
                flush=True,
            )


def cpu_components(size: tuple[int, int], rounds: int) -> None:
    """The components of a step (the issue's table), NCHW against channels_last inputs, round robin: one flow, both
    flows one after the other or batched, the restoration net. CPU time of this process (one thread: the compute)."""
    torch.manual_seed(0)
    model = CDVD_TSP().eval()
    cpu = torch.device("cpu")
    clip = [to_tensor(frame, cpu) for frame in frames(3, *size)]
    restoration_input = torch.rand(1, 10, *size, generator=torch.Generator().manual_seed(0))
    flow = model.flow_net.estimate_flow
    work: dict[str, Callable[[], object]] = {}
    for layout, name in ((torch.contiguous_format, "NCHW"), (torch.channels_last, "channels_last")):
        previous, center, following, net_input = (
            tensor.contiguous(memory_format=layout) for tensor in (*clip, restoration_input)
        )
        firsts, seconds = torch.cat([center, center]), torch.cat([previous, following])
        work[f"one flow, {name}"] = functools.partial(flow, center, previous)
        work[f"two flows one by one, {name}"] = lambda c=center, p=previous, f=following: (flow(c, p), flow(c, f))
        work[f"two flows batched, {name}"] = functools.partial(flow, firsts, seconds)
        work[f"restoration net, {name}"] = functools.partial(model.recons_net, net_input)
    timings: dict[str, list[float]] = {name: [] for name in work}
    with torch.inference_mode():
        for function in work.values():
            function()  # warm-up
        for _ in range(rounds):
            for name, function in work.items():
                started = time.process_time()
                function()
                timings[name].append(time.process_time() - started)
    for name, seconds in timings.items():
        print(f"{size[1]}x{size[0]} {name}: {float(np.median(seconds)):.3f} s CPU time (median of {rounds})")


@contextlib.contextmanager
def busy_processes(count: int) -> Iterator[None]:
    """``count`` processes spinning on a core each for the block: other load, for measuring threads under it."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def identity_step(*args: object, **kwargs: object) -> object:
    """Stands in for `accelerated_step`: the 'restored' frame is the center frame itself."""
    return lambda previous, center, following: center.clone()


def pipeline_run(argv: list[str], identity: bool) -> tuple[dict, list[float], float]:
    """One inference.py run: its results.json, the per-frame wall times of its log, and its own wall time."""
    from cdvd_tsp import inference  # imported here: the other modes do not need the command line's modules

    with tempfile.TemporaryDirectory() as scratch:
        destination = ["--result_path", scratch] if "--input" not in argv else ["--output", scratch]
        step = "cdvd_tsp.infer.runners.accelerated_step"
        patch = mock.patch(step, identity_step) if identity else contextlib.nullcontext()
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
    rates: dict[str, float] = {}
    for label, (argv, identity) in runs.items():
        report, totals, seconds = pipeline_run(argv, identity)
        wall, model = report["seconds_per_frame"], report["model_seconds_per_frame"]
        rates[label] = report["frames"] / seconds
        line = (
            f"{label}: {rates[label]:.1f} frames/s over the whole run ({seconds:.1f} s for "
            f"{report['frames']} frames, {report['settings']['precision']}, {report['settings']['workers']} "
            f"workers); per frame: wall {1000 * wall:.1f} ms (median {1000 * float(np.median(totals)):.1f}), model "
            f"{1000 * model:.1f} ms"
        )
        if not identity:
            rates[f"{label}, the model's own"] = 1 / model
            line += f"; wall / model = {wall / model:.3f}"
        print(line)
    model_rate = rates["model, default settings, PNG + metrics, the model's own"]
    for label in ("identity step, PNG + metrics", "identity step, PNG only (--input)"):
        print(
            f"pipeline / model frame rate ({label}): {rates[label]:.1f} / {model_rate:.1f} frames/s = "
            f"{rates[label] / model_rate:.2f} (issue 19's target: at least 2)"
        )


def run_isolated(runner: str, size: str, outputs: int, device: str, threads: int | None, flops: bool) -> dict:
    command = [sys.executable, __file__, "--one", runner, "--sizes", size, "--outputs", str(outputs)]
    command += ["--device", device] + (["--threads", str(threads)] if threads else []) + (["--flops"] if flops else [])
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"{runner} at {size} failed:\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def machine() -> str:
    """The CPU (model, the flags that matter here, PyTorch's capability), the threads and the GPU, in one line."""
    info = read_cpuinfo()
    flags = [flag for flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if flag in info.flags]
    line = (
        f"{info.name} (flags: {' '.join(flags) or 'none of avx2/avx512'}; PyTorch capability "
        f"{torch.backends.cpu.get_cpu_capability()}; bf16: {bf16_support().reason}), {torch.get_num_threads()} torch "
        f"threads, torch {torch.__version__}"
    )
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
    parser.add_argument(
        "--sweep", action="store_true", help="the speed levers, each alone and combined (CUDA: also every precision)"
    )
    parser.add_argument("--compile", action="store_true", help="with --sweep on CUDA: also torch.compile (slow)")
    parser.add_argument(
        "--settings", nargs="+", metavar="WORD", help="with --sweep on the CPU: only settings whose label has a WORD"
    )
    parser.add_argument(
        "--components",
        type=int,
        default=3,
        metavar="N",
        help="with --sweep on the CPU: rounds of the component timings at the first size (0: none)",
    )
    parser.add_argument("--busy", type=int, default=0, metavar="N", help="N processes spinning during the run")
    parser.add_argument("--pipeline", type=Path, metavar="DATASET", help="time inference.py on DATASET (see above)")
    parser.add_argument("--model_path", type=Path, help="with --pipeline: the checkpoint to load")
    parser.add_argument("--one", choices=list(RUNNERS), help=argparse.SUPPRESS)
    parser.add_argument("--flops", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads or args.sweep:  # a sweep is timed with the threads asked for, the environment's, or every core
        configure_threads(args.threads)
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
        print(f"machine: {machine()}; device: {device}; {args.busy} other processes spinning")
        with busy_processes(args.busy):
            if device.type == "cuda":
                for size, count in zip(args.sizes, args.outputs, strict=False):
                    cuda_sweep(parse_size(size), count, device, args.compile)
                return
            if len(args.outputs) != len(args.sizes):
                parser.error(f"--outputs needs one number per size ({len(args.sizes)})")
            if args.components:
                cpu_components(parse_size(args.sizes[0]), args.components)
            cpu_sweep([parse_size(size) for size in args.sizes], args.outputs, args.settings)
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
