"""Measure the cost volume: forward and forward+backward time of each path (PyTorch operations, CuPy kernel) at the
shapes PWC-Net gives it, and the GPU kernels each call launches.

    python bench/bench_cost_volume.py                          # 720p frame and 256x256 training crops, CUDA
    python bench/bench_cost_volume.py --dtypes float32 float16 --repeats 50

PWC-Net sees a frame resized to multiples of 64 (1280x720 -> 1280x768) and correlates at pyramid levels 2 to 6
(1/4 to 1/64 of that size, 32 to 196 channels); a streamed 720p frame computes 4 flows, so 20 cost volumes. A
training step of the recipe (batch 8 of 5 frames, 256x256, T = 2) computes 8 flows per sample, batched: 5 levels of
[8, C, 256/2^l, 256/2^l] each 8 times. Times are CUDA-event medians over ``--repeats`` calls after warm-up. Nothing
is asserted: the numbers are printed.
"""

import argparse
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))

from model.correlation import BACKEND_VARIABLE, SELECTOR, cost_volume, cost_volume_torch
from model.flow_pwc import PYRAMID_CHANNELS, SIZE_MULTIPLE

LEVELS = range(2, 7)
SETTINGS = {"720p frame": (1, 720, 1280, 4), "256x256 crops, batch 8": (8, 256, 256, 8)}
"""name: (batch, height, width, cost volumes per level per streamed frame or per training step)."""


def level_shapes(batch: int, height: int, width: int) -> list[tuple[int, int, int, int]]:
    net_height = -(-height // SIZE_MULTIPLE) * SIZE_MULTIPLE
    net_width = -(-width // SIZE_MULTIPLE) * SIZE_MULTIPLE
    return [(batch, PYRAMID_CHANNELS[level - 1], net_height >> level, net_width >> level) for level in LEVELS]


def median_ms(function: object, repeats: int) -> float:
    for _ in range(3):
        function()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def kernel_launches(function: object) -> int:
    """GPU kernels launched by one call (from the profiler's CUDA activity)."""
    function()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        function()
        torch.cuda.synchronize()
    return sum(1 for event in profile.events() if event.device_type == torch.autograd.DeviceType.CUDA)


def measure(shape: tuple[int, ...], dtype: torch.dtype, path: str, repeats: int, count_launches: bool) -> dict:
    generator = torch.Generator(device="cuda").manual_seed(0)
    first, second = (torch.randn(shape, generator=generator, device="cuda", dtype=dtype) for _ in range(2))
    leaves = [first.clone().requires_grad_(), second.clone().requires_grad_()]
    compute = cost_volume if path == "cupy" else cost_volume_torch
    grad_out = torch.randn(shape[0], 81, *shape[2:], generator=generator, device="cuda", dtype=dtype)

    def forward() -> None:
        with torch.no_grad():
            compute(first, second)

    def forward_backward() -> None:
        torch.autograd.grad(compute(*leaves), leaves, grad_out)

    result = {"forward_ms": median_ms(forward, repeats), "forward_backward_ms": median_ms(forward_backward, repeats)}
    if count_launches:  # the same at every shape: counted once per path and dtype (profiling is slow to start)
        result["forward_launches"] = kernel_launches(forward)
        result["forward_backward_launches"] = kernel_launches(forward_backward)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    dtypes = ("float16", "float32", "float64")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float16"], choices=dtypes)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_cost_volume.py measures CUDA paths; no CUDA device here")
    os.environ[BACKEND_VARIABLE] = "cupy"
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    try:
        import cupy
    except ImportError:
        raise SystemExit("CuPy is not installed: there is no kernel to compare") from None
    print(f"CuPy {cupy.__version__}, driver {cupy.cuda.runtime.driverGetVersion()}")
    paths = ["torch", "cupy"]
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        for path in paths:
            launches = measure((1, 8, 16, 16), dtype, path, 1, count_launches=True)
            print(
                f"{dtype_name} {path}: {launches['forward_launches']} GPU kernels per forward call, "
                f"{launches['forward_backward_launches']} per forward+backward"
            )
        for setting, (batch, height, width, calls) in SETTINGS.items():
            totals = {path: [0.0, 0.0] for path in paths}
            for shape in level_shapes(batch, height, width):
                row = []
                for path in paths:
                    result = measure(shape, dtype, path, args.repeats, count_launches=False)
                    if path == "cupy" and SELECTOR.disabled is not None:
                        raise SystemExit(f"the kernel is off, nothing to compare: {SELECTOR.disabled}")
                    totals[path][0] += result["forward_ms"] * calls
                    totals[path][1] += result["forward_backward_ms"] * calls
                    forward, both = result["forward_ms"], result["forward_backward_ms"]
                    row.append(f"{path} fwd {forward:.3f} ms, fwd+bwd {both:.3f} ms")
                print(f"{dtype_name} {setting} {list(shape)}: " + "; ".join(row))
            for path in paths:
                forward, both = totals[path]
                unit = "frame" if batch == 1 else "training step"
                print(
                    f"{dtype_name} {setting} {path}: {forward:.2f} ms forward, {both:.2f} ms forward+backward per "
                    f"{unit} ({calls} calls per level)"
                )
    print(f"cost volume: {SELECTOR.describe()}")


if __name__ == "__main__":
    main()
