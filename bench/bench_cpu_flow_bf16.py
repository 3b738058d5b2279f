"""Which parts of PWC-Net keep accuracy in bf16 on the CPU, and what each saves: each part alone in bf16 (the rest
of PWC-Net in float32), then the whole of PWC-Net, against today's bf16 path (PWC-Net in float32,
`model.flow_pwc.AUTOCAST_UNSAFE_DTYPES`) and the float32 outputs.

    python bench/bench_cpu_flow_bf16.py FRAMES/ --frames 7     # a folder of PNG frames, e.g. 448x256

The demo model (or ``--model_path``) restores the frames with the streaming runner and the recommended bf16 options,
one thread; the outputs are compared as uint8 images (PSNR, the lowest over the frames). PWC-Net's time is one flow
between the first two frames, under bf16 autocast, mean of two calls after one warm-up. Needs native bf16. Nothing
is asserted: the numbers are printed.
"""

import argparse
import math
import sys
import time
from pathlib import Path

import cv2
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))

from cdvd_tsp.infer.restorer import load_model
from cdvd_tsp.model import flow_pwc
from cdvd_tsp.model.acceleration import accelerated_step, recommended_options
from cdvd_tsp.model.streaming import StreamingRunner
from cdvd_tsp.utils.cpu import bf16_support, read_cpuinfo
from cdvd_tsp.utils.precision import PRECISIONS

CPU = torch.device("cpu")


def to_float(value: object) -> object:
    if isinstance(value, torch.Tensor):
        return value.float()
    if isinstance(value, tuple):
        return tuple(to_float(item) for item in value)
    return value


def psnr(output: torch.Tensor, reference: torch.Tensor) -> float:
    output, reference = ((image.clamp(0, 1) * 255).round() for image in (output, reference))
    mse = (output - reference).square().mean().item()
    return 10 * math.log10(255**2 / mse) if mse else math.inf


class PartsInBf16:
    """Runs the chosen parts of PWC-Net under the bf16 autocast and the others in float32."""

    def __init__(self, model: torch.nn.Module) -> None:
        net = model.flow_net.moduleNetwork
        names = flow_pwc.ORDINAL_NAMES
        self.parts = {
            "extractor": [net.moduleExtractor],
            "decoders 6-4 (coarse)": [getattr(net, name) for name in names[3:6]],
            "decoders 3-2 (fine)": [getattr(net, name) for name in names[1:3]],
            "refiner": [net.moduleRefiner],
        }
        self.forwards = {module: module.forward for modules in self.parts.values() for module in modules}

    def choose(self, chosen: tuple[str, ...]) -> None:
        flow_pwc.AUTOCAST_UNSAFE_DTYPES = () if chosen else (torch.bfloat16,)
        for name, modules in self.parts.items():
            for module in modules:
                module.forward = self.wrapped(self.forwards[module], name in chosen)

    @staticmethod
    def wrapped(forward, bf16: bool):
        def run(*inputs):
            if bf16:
                return to_float(forward(*inputs))  # the next part takes float32, as in the float32 PWC-Net
            with torch.autocast("cpu", enabled=False):
                return forward(*to_float(inputs))

        return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("frames", type=Path)
    parser.add_argument("--frames", dest="count", type=int, default=7)
    parser.add_argument(
        "--model_path", type=Path, default=Path(__file__).resolve().parents[1] / "pretrain_models" / "CDVD_TSP_DEMO.pt"
    )
    args = parser.parse_args()
    if not bf16_support().native:
        raise SystemExit(f"needs native bf16: {bf16_support().reason}")
    torch.set_num_threads(1)
    model = load_model(args.model_path, CPU)
    paths = sorted(args.frames.glob("*.png"))[: args.count]
    frames = [
        torch.from_numpy(cv2.imread(str(path))[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255
        for path in paths
    ]
    parts = PartsInBf16(model)
    bf16, fp32 = PRECISIONS["bf16"], PRECISIONS["fp32"]

    def outputs(precision) -> list[torch.Tensor]:
        step = accelerated_step(model, precision, CPU, options=recommended_options(CPU, precision))
        runner = StreamingRunner(model, step)
        with torch.inference_mode():
            return [restored.image for frame in frames if (restored := runner.push(frame)) is not None]

    def flow_seconds() -> float:
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
            model.flow_net.estimate_flow(frames[0], frames[1])
            started = time.perf_counter()
            for _ in range(2):
                model.flow_net.estimate_flow(frames[0], frames[1])
        return (time.perf_counter() - started) / 2

    print(f"CPU: {read_cpuinfo().name}, one thread, torch {torch.__version__}; {len(frames)} frames of {args.frames}")
    parts.choose(())
    reference = outputs(fp32)
    today = outputs(bf16)
    lowest = min(psnr(output, expected) for output, expected in zip(today, reference, strict=True))
    print(f"PWC-Net float32 (today's bf16 path): {flow_seconds():.3f} s/flow; outputs vs fp32 >= {lowest:.2f} dB")
    for chosen in [(name,) for name in parts.parts] + [tuple(parts.parts)]:
        parts.choose(chosen)
        seconds, restored = flow_seconds(), outputs(bf16)
        against_today = min(psnr(output, expected) for output, expected in zip(restored, today, strict=True))
        against_fp32 = min(psnr(output, expected) for output, expected in zip(restored, reference, strict=True))
        label = "all of PWC-Net" if len(chosen) > 1 else chosen[0]
        print(
            f"bf16 {label:22s}: PWC-Net {seconds:.3f} s/flow; outputs vs today's bf16 >= {against_today:.2f} dB, "
            f"vs fp32 >= {against_fp32:.2f} dB",
            flush=True,
        )


if __name__ == "__main__":
    main()
