"""Measure the cost volume: forward and forward+backward time of each path (the shifted products of
`cost_volume_torch`, the tiled products of `cost_volume_tiled`, the CuPy kernel on CUDA) at the shapes PWC-Net gives
it, and the GPU kernels each call launches.

    python bench/bench_cost_volume.py                          # 720p frame and 256x256 training crops, CUDA
    python bench/bench_cost_volume.py --dtypes float32 float16 --repeats 50
    python bench/bench_cost_volume.py --device cpu --threads 1 --repeats 3

PWC-Net sees a frame resized to multiples of 64 (1280x720 -> 1280x768) and correlates at pyramid levels 2 to 6
(1/4 to 1/64 of that size, 32 to 196 channels); a streamed 720p frame computes 4 flows, so 20 cost volumes. A
training step of the recipe (batch 8 of 5 frames, 256x256, T = 2) computes 8 flows per sample, batched: 5 levels of
[8, C, 256/2^l, 256/2^l] each 8 times. On CUDA times are CUDA-event medians over ``--repeats`` calls after warm-up;
on the CPU medians of this process's CPU time with one thread (steadier than wall time on a shared machine) or of
wall time with more. Nothing is asserted: the numbers are printed.
"""

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))

from cdvd_tsp.model.correlation import BACKEND_VARIABLE, SELECTOR, cost_volume, cost_volume_tiled, cost_volume_torch
from cdvd_tsp.model.flow_pwc import PYRAMID_CHANNELS, SIZE_MULTIPLE
from cdvd_tsp.utils.cpu import configure_threads, read_cpuinfo

LEVELS = range(2, 7)
SETTINGS = {"720p frame": (1, 720, 1280, 4), "256x256 crops, batch 8": (8, 256, 256, 8)}
"""name: (batch, height, width, cost volumes per level per streamed frame or per training step)."""
PATHS: dict[str, Callable[..., torch.Tensor]] = {
    "torch": cost_volume_torch,
    "tiled": cost_volume_tiled,
    "cupy": cost_volume,  # with CDVD_COST_VOLUME=cupy
}


def level_shapes(batch: int, height: int, width: int) -> list[tuple[int, int, int, int]]:
    net_height = -(-height // SIZE_MULTIPLE) * SIZE_MULTIPLE
    net_width = -(-width // SIZE_MULTIPLE) * SIZE_MULTIPLE
    return [(batch, PYRAMID_CHANNELS[level - 1], net_height >> level, net_width >> level) for level in LEVELS]


def median_ms(function: Callable[[], object], repeats: int, device: torch.device) -> float:
    for _ in range(1 if device.type == "cpu" else 3):
        function()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            function()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            clock = time.process_time if torch.get_num_threads() == 1 else time.perf_counter
            started = clock()
            function()
            times.append(1000 * (clock() - started))
    return statistics.median(times)


def kernel_launches(function: Callable[[], object]) -> int:
    """GPU kernels launched by one call (from the profiler's CUDA activity)."""
    function()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        function()
        torch.cuda.synchronize()
    return sum(1 for event in profile.events() if event.device_type == torch.autograd.DeviceType.CUDA)


def measure(
    shape: tuple[int, ...], dtype: torch.dtype, path: str, repeats: int, device: torch.device, count_launches: bool
) -> dict:
    generator = torch.Generator(device=device).manual_seed(0)
    first, second = (torch.randn(shape, generator=generator, device=device, dtype=dtype) for _ in range(2))
    leaves = [first.clone().requires_grad_(), second.clone().requires_grad_()]
    compute = PATHS[path]
    grad_out = torch.randn(shape[0], 81, *shape[2:], generator=generator, device=device, dtype=dtype)

    def forward() -> None:
        with torch.no_grad():
            compute(first, second)

    def forward_backward() -> None:
        torch.autograd.grad(compute(*leaves), leaves, grad_out)

    result = {
        "forward_ms": median_ms(forward, repeats, device),
        "forward_backward_ms": median_ms(forward_backward, repeats, device),
    }
    if count_launches:  # the same at every shape: counted once per path and dtype (profiling is slow to start)
        result["forward_launches"] = kernel_launches(forward)
        result["forward_backward_launches"] = kernel_launches(forward_backward)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    dtypes = ("float16", "float32", "float64")
    parser.add_argument(
        "--dtypes", nargs="+", default=None, choices=dtypes, help="default: float32 float16 on CUDA, float32 on the CPU"
    )
    parser.add_argument("--repeats", type=int, default=None, help="default: 30 on CUDA, 3 on the CPU")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=int, help="torch intra-op threads on the CPU (default: every core)")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else args.device)
    if device.type == "auto":
        device = torch.device("cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device here")
        os.environ[BACKEND_VARIABLE] = "cupy"
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
        try:
            import cupy
        except ImportError:
            raise SystemExit("CuPy is not installed: there is no kernel to compare") from None
        print(f"CuPy {cupy.__version__}, driver {cupy.cuda.runtime.driverGetVersion()}")
        paths = ["torch", "tiled", "cupy"]
    else:
        threads = configure_threads(args.threads)
        print(f"device: CPU, {read_cpuinfo().name}, {threads} torch threads, torch {torch.__version__}")
        paths = ["torch", "tiled"]
    repeats = args.repeats or (30 if device.type == "cuda" else 3)
    for dtype_name in args.dtypes or (["float32", "float16"] if device.type == "cuda" else ["float32"]):
        dtype = getattr(torch, dtype_name)
        if device.type == "cuda":
            for path in paths:
                launches = measure((1, 8, 16, 16), dtype, path, 1, device, count_launches=True)
                print(
                    f"{dtype_name} {path}: {launches['forward_launches']} GPU kernels per forward call, "
                    f"{launches['forward_backward_launches']} per forward+backward"
                )
        for setting in args.settings:
            batch, height, width, calls = SETTINGS[setting]
            totals = {path: [0.0, 0.0] for path in paths}
            for shape in level_shapes(batch, height, width):
                row = []
                for path in paths:
                    result = measure(shape, dtype, path, repeats, device, count_launches=False)
                    if path == "cupy" and SELECTOR.disabled is not None:
                        raise SystemExit(f"the kernel is off, nothing to compare: {SELECTOR.disabled}")
                    totals[path][0] += result["forward_ms"] * calls
                    totals[path][1] += result["forward_backward_ms"] * calls
                    forward, both = result["forward_ms"], result["forward_backward_ms"]
                    row.append(f"{path} fwd {forward:.3f} ms, fwd+bwd {both:.3f} ms")
                print(f"{dtype_name} {setting} {list(shape)}: " + "; ".join(row), flush=True)
            for path in paths:
                forward, both = totals[path]
                unit = "frame" if batch == 1 else "training step"
                print(
                    f"{dtype_name} {setting} {path}: {forward:.2f} ms forward, {both:.2f} ms forward+backward per "
                    f"{unit} ({calls} calls per level); torch/{path}: {totals['torch'][0] / forward:.2f}x forward, "
                    f"{totals['torch'][1] / both:.2f}x forward+backward"
                )
    if device.type == "cuda":
        print(f"cost volume: {SELECTOR.describe()}")


if __name__ == "__main__":
    main()
