"""Measure what bf16 costs on the CPU in accuracy: the DEMO set (the demo model on its 60 frames) evaluated by
code/inference.py in fp32 and in bf16 (PWC-Net in float32, as always under bf16), and the change in PSNR and SSIM.

    python bench/bench_cpu_bf16.py                 # CPU, every core
    python bench/bench_cpu_bf16.py --threads 1
    python bench/bench_cpu_bf16.py --input FRAMES/ --rounds 2   # speed: inference.py --input, default vs fp32

On a CPU with native bfloat16 the real bf16 path runs. Elsewhere `utils.precision` refuses bf16 (PyTorch computes
bfloat16 convolutions there in scalar code, tens of times slower than float32), so this script lets bf16 through
and computes each bf16 convolution as a float32 convolution of the bf16 inputs, weights and bias, rounded to bf16:
the numbers native bfloat16 gives (a product of two bfloat16 numbers is exact in float32, and oneDNN accumulates in
float32 and rounds the output once) up to the order of the sums. Every other operation runs as it would under bf16
autocast (in bfloat16 after a bf16 convolution). A check first compares the emulation with PyTorch's own bf16
convolution on small inputs. Nothing is asserted: the numbers are printed.

``--input FRAMES`` measures speed instead (a native-bf16 CPU): ``code/inference.py --input FRAMES`` with its defaults
(bf16, the layout and threads it picks) against ``--precision fp32``, each in a process of its own, alternating; the
model's time per frame from results.json, and every output's PSNR against the float32 output.
"""

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))

from cdvd_tsp import inference
from cdvd_tsp.utils import precision
from cdvd_tsp.utils.cpu import Bf16Support, bf16_support, configure_threads, read_cpuinfo

CODE = Path(__file__).resolve().parents[1] / "code"
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


def deblur(folder: Path, model_path: Path, output: Path, flags: list[str]) -> dict:
    """``code/inference.py --input folder`` in a process of its own (its default threads and wait policy, set before
    torch loads), with ``flags``; its results.json and the wall time."""
    command = [sys.executable, str(CODE / "inference.py"), "--input", str(folder), "--output", str(output)]
    command += ["--model_path", str(model_path), "--device", "cpu", *flags]
    environ = {key: value for key, value in os.environ.items() if key not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=environ)
    report = json.loads((output / "results.json").read_text())
    report["wall_s"] = time.perf_counter() - started
    return report


def end_to_end(folder: Path, model_path: Path, rounds: int) -> None:
    """The default of ``inference.py --input`` (bf16 on a CPU with native bf16) against ``--precision fp32``, runs
    alternating; the speed-up and every output's PSNR against the float32 output."""
    timings: dict[str, list[dict]] = {"default": [], "fp32": []}
    with tempfile.TemporaryDirectory() as scratch:
        for index in range(rounds):
            for name, flags in (("fp32", ["--precision", "fp32"]), ("default", [])):
                report = deblur(folder, model_path, Path(scratch) / f"{name}{index}", flags)
                timings[name].append(report)
                settings = report["settings"]
                print(
                    f"round {index + 1} {name:7s}: model {report['model_seconds_per_frame']:.3f} s/frame, run "
                    f"{report['wall_s']:.1f} s for {report['frames']} frames; precision {settings['precision']}, "
                    f"layout {settings['channels_last']}, {settings['threads']} thread(s) "
                    f"({settings.get('threads_choice')}), wait {settings.get('openmp_wait')}, load "
                    f"{Path('/proc/loadavg').read_text().split()[0]}",
                    flush=True,
                )
        worst = []
        for frame in sorted((Path(scratch) / "fp320").glob("*.png")):
            reference = cv2.imread(str(frame)).astype(np.float64)
            output = cv2.imread(str(Path(scratch) / "default0" / frame.name)).astype(np.float64)
            mse = float(np.mean((output - reference) ** 2))
            worst.append(
                (10 * np.log10(255**2 / mse) if mse else float("inf"), frame.name, np.abs(output - reference).max())
            )
    model = {
        name: float(np.median([r["model_seconds_per_frame"] for r in reports])) for name, reports in timings.items()
    }
    print(
        f"model s/frame (median): default {model['default']:.3f}, fp32 {model['fp32']:.3f}: "
        f"{model['fp32'] / model['default']:.2f}x faster"
    )
    worst.sort()
    print(
        f"outputs against fp32: lowest PSNR {worst[0][0]:.2f} dB ({worst[0][1]}), median "
        f"{worst[len(worst) // 2][0]:.2f} dB, largest difference {max(item[2] for item in worst):.0f} grey levels, "
        f"{len(worst)} frames"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: every core)")
    parser.add_argument("--input", type=Path, help="a folder of frames: time inference.py --input instead (see above)")
    parser.add_argument("--model_path", type=Path, default=CODE.parent / "pretrain_models" / "CDVD_TSP_DEMO.pt")
    parser.add_argument("--rounds", type=int, default=1, help="with --input: runs of each, alternating")
    args = parser.parse_args()
    if args.input:
        print(f"CPU: {read_cpuinfo().name}, torch {torch.__version__}; {bf16_support().reason}")
        end_to_end(args.input.resolve(), args.model_path.resolve(), args.rounds)
        return
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
