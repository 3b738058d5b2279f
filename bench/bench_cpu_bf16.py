"""Measure what bf16 costs on the CPU in accuracy: the DEMO set (the demo model on its 60 frames) evaluated by
code/inference.py in fp32 and in bf16 (PWC-Net in float32, as always under bf16), and the change in PSNR and SSIM.

    python bench/bench_cpu_bf16.py                 # CPU, every core
    python bench/bench_cpu_bf16.py --threads 1

On a CPU with native bfloat16 the real bf16 path runs. Elsewhere `utils.precision` refuses bf16 (PyTorch computes
bfloat16 convolutions there in scalar code, tens of times slower than float32), so this script lets bf16 through
and computes each bf16 convolution as a float32 convolution of the bf16 inputs, weights and bias, rounded to bf16:
the numbers native bfloat16 gives (a product of two bfloat16 numbers is exact in float32, and oneDNN accumulates in
float32 and rounds the output once) up to the order of the sums. Every other operation runs as it would under bf16
autocast (in bfloat16 after a bf16 convolution). A check first compares the emulation with PyTorch's own bf16
convolution on small inputs. Nothing is asserted: the numbers are printed.
"""

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))

import inference
from utils import precision
from utils.cpu import Bf16Support, bf16_support, configure_threads, read_cpuinfo

CONVOLUTIONS = ("conv2d", "conv_transpose2d")


def emulated(convolution: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``convolution`` that, under a CPU bfloat16 autocast, computes in float32 from bf16-rounded operands and
    rounds its output to bf16 (what autocast plus a native bf16 kernel give); otherwise ``convolution`` itself."""

    def convolve(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *args, **kwargs):
        if not (torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16):
            return convolution(input, weight, bias, *args, **kwargs)
        operands = [None if tensor is None else tensor.to(torch.bfloat16).float() for tensor in (input, weight, bias)]
        with torch.autocast("cpu", enabled=False):
            return convolution(*operands, *args, **kwargs).to(torch.bfloat16)

    return convolve


@contextlib.contextmanager
def emulated_bf16() -> Iterator[None]:
    """bf16 accepted on this CPU, and its convolutions emulated (`emulated`)."""
    patches = [mock.patch.object(F, name, emulated(getattr(F, name))) for name in CONVOLUTIONS]
    patches.append(mock.patch.object(precision, "bf16_support", lambda: Bf16Support(True, "emulated for measuring")))
    with contextlib.ExitStack() as stack:
        for patch in patches:
            stack.enter_context(patch)
        yield


def check_emulation() -> None:
    """The emulation and PyTorch's own (slow) bfloat16 convolutions against the exact result of the bf16 operands
    (in float64), in bf16 units in the last place of that result."""
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 16, 24, 24, generator=generator)
    weight, bias = torch.randn(8, 16, 5, 5, generator=generator) / 20, torch.randn(8, generator=generator)
    weight_t = torch.randn(16, 8, 3, 3, generator=generator) / 12
    calls = {
        "conv2d": lambda convolution, *operands: convolution(*operands, padding=2),
        "conv_transpose2d": lambda convolution, *operands: convolution(*operands, 2, 1, 1),
    }
    operands = {"conv2d": (image, weight, bias), "conv_transpose2d": (image, weight_t, None)}
    for name, call in calls.items():
        rounded = [None if tensor is None else tensor.to(torch.bfloat16) for tensor in operands[name]]
        exact = call(getattr(F, name), *[None if tensor is None else tensor.double() for tensor in rounded])
        ulp = torch.finfo(torch.bfloat16).eps * exact.abs().clamp_min(1e-6)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pytorch = call(getattr(F, name), *operands[name])
            ours = call(emulated(getattr(F, name)), *operands[name])
        worst = {
            label: ((result.double() - exact).abs() / ulp).max().item()
            for label, result in (("emulated", ours), ("PyTorch's bf16", pytorch))
        }
        print(
            f"check: {name} against the exact result: "
            + ", ".join(f"{label} {value:.2f} ulp" for label, value in worst.items())
        )


def evaluate(name: str, threads: int) -> dict:
    """inference.py on the DEMO set at precision ``name``; its results.json and the wall time."""
    with tempfile.TemporaryDirectory() as scratch:
        argv = ["--default_data", "DEMO", "--device", "cpu", "--precision", name, "--result_path", scratch]
        argv += ["--threads", str(threads)]  # inference.py sets its own threads (infer/switches.py)
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # progress bars
            inference.main([*argv, "--no_save_image", "--no_showcase"])
        seconds = time.perf_counter() - started
        report = json.loads((Path(scratch) / "results.json").read_text())
    report["wall_s"] = seconds
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: every core)")
    args = parser.parse_args()
    threads = configure_threads(args.threads)
    native = bf16_support().native
    print(f"CPU: {read_cpuinfo().name}, {threads} torch threads, torch {torch.__version__}; {bf16_support().reason}")
    if not native:
        check_emulation()
    reports = {"fp32": evaluate("fp32", threads)}
    with contextlib.nullcontext() if native else emulated_bf16():
        reports["bf16"] = evaluate("bf16", threads)
    reference = reports["fp32"]
    for name, report in reports.items():
        psnr_change, ssim_change = report["psnr"] - reference["psnr"], report["ssim"] - reference["ssim"]
        change = "" if name == "fp32" else f"; change {psnr_change:+.4f} dB, SSIM {ssim_change:+.6f}"
        how = "" if native or name == "fp32" else " (emulated)"
        print(
            f"DEMO {name}{how}: PSNR {report['psnr']:.4f} dB, SSIM {report['ssim']:.5f} over {report['frames']} "
            f"frames{change}; model {report['model_seconds_per_frame']:.2f} s/frame, run {report['wall_s']:.0f} s"
        )


if __name__ == "__main__":
    main()
