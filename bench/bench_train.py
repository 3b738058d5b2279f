"""Training-step benchmark: seconds per optimisation step, samples per second and peak memory of CDVD-TSP
training, for each speed lever alone and combined.

Runs the step `main.py` runs (`trainer.step.TrainStep`: forward of every stage, 1*L1 + 2*HEM on all outputs,
backward, the non-finite guard, Adam) on random clips of ``--batch_size`` x (2T+1) frames of ``--patch_size``
squares. Each setting builds the model from the same seed, runs ``--warmup`` untimed steps, then ``--steps`` timed
ones with no host synchronisation between them (as the training loop: one wait for the device at the end), so the
time is the mean per step. The released recipe is batch 8, 256 x 256 (the defaults).

The levers (``--levers``, default all), each a training flag of main.py:

- ``fp32``: the release's float32 recipe (NCHW, PyTorch's default Adam), the baseline;
- ``channels_last``, ``channels_last_restoration``: --channels_last all / restoration;
- ``fp16``: --amp fp16 (autocast to float16 and a gradient scaler; CUDA only);
- ``bf16``: --amp bf16 (PWC-Net in float32; CUDA, or a CPU with native bfloat16);
- ``compile``: --compile (torch.compile of the forward; the warm-up steps compile);
- ``foreach``, ``fused``: --optimizer_impl foreach / fused;
- ``combined_bf16``, ``combined_fp16``: channels_last all, the fused Adam, compile and bf16 / fp16 together;
- ``combined_bf16_eager``: the same as ``combined_bf16`` without compile; ``combined_fp32_eager``: channels_last all
  and the fused Adam in float32 (what a CPU without native bfloat16 can combine).

A lever the machine cannot run is printed as not run, with the reason. Example::

    python bench/bench_train.py                                   # CUDA, the recipe, every lever
    python bench/bench_train.py --levers fp32 fused --steps 10    # some of them
    python bench/bench_train.py --cost_volume torch --levers fp32 # the PyTorch cost volume instead of the kernel
    python bench/bench_train.py --cpu --batch_size 2 --patch_size 64 --steps 2 --threads 1
"""

import argparse
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))

from cdvd_tsp.loss import Loss
from cdvd_tsp.model.correlation import BACKEND_CHOICES, BACKEND_VARIABLE, SELECTOR
from cdvd_tsp.option import parse_args
from cdvd_tsp.trainer.model_setup import build_model, make_optimizer, step_options
from cdvd_tsp.trainer.step import TrainStep
from cdvd_tsp.utils.errors import UserError, run_cli
from cdvd_tsp.utils.precision import NEEDS_CUDA, cpu_refusal


@dataclass(frozen=True)
class Lever:
    """A setting of the training step: main.py's flags for it."""

    flags: tuple[str, ...] = ()
    amp: str = "off"
    compile: bool = False


COMBINED = ("--channels_last", "all", "--optimizer_impl", "fused")
LEVERS = {
    "fp32": Lever(),
    "channels_last": Lever(("--channels_last", "all")),
    "channels_last_restoration": Lever(("--channels_last", "restoration")),
    "fp16": Lever(("--amp", "fp16"), amp="fp16"),
    "bf16": Lever(("--amp", "bf16"), amp="bf16"),
    "compile": Lever(("--compile",), compile=True),
    "foreach": Lever(("--optimizer_impl", "foreach")),
    "fused": Lever(("--optimizer_impl", "fused")),
    "combined_bf16": Lever((*COMBINED, "--compile", "--amp", "bf16"), amp="bf16", compile=True),
    "combined_fp16": Lever((*COMBINED, "--compile", "--amp", "fp16"), amp="fp16", compile=True),
    "combined_bf16_eager": Lever((*COMBINED, "--amp", "bf16"), amp="bf16"),
    "combined_fp32_eager": Lever(COMBINED),
}


def bench_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--patch_size", type=int, default=256)
    parser.add_argument("--n_stages", type=int, default=2)
    parser.add_argument("--n_feat", type=int, default=32, help="restoration net width (the recipe: 32)")
    parser.add_argument("--n_resblock", type=int, default=3, help="residual blocks per group (the recipe: 3)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compile happens there)")
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--levers", nargs="+", default=list(LEVERS), choices=list(LEVERS), metavar="LEVER")
    parser.add_argument("--grad_checkpoint", action="store_true", help="with every lever")
    parser.add_argument(
        "--cost_volume", default="auto", choices=BACKEND_CHOICES, help=f"sets {BACKEND_VARIABLE} (default auto)"
    )
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    return parser.parse_args()


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} "
        f"torch threads, load average {load}, torch {torch.__version__}"
    )


def refusal(lever: Lever, device: torch.device) -> str | None:
    """Why ``device`` cannot run ``lever``; None where it can."""
    if device.type == "cpu" and lever.amp != "off":
        reason = cpu_refusal(lever.amp)
        if reason is not None:
            return f"--amp {lever.amp} {'needs CUDA' if reason == NEEDS_CUDA else 'on this CPU: ' + reason}"
    return None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(bench: argparse.Namespace, lever: Lever, device: torch.device) -> str:
    """One lever's line: seconds per step, samples per second, peak memory."""
    flags = ["--no_flow_pretrain", "--n_stages", str(bench.n_stages), *lever.flags]
    flags += ["--n_feat", str(bench.n_feat), "--n_resblock", str(bench.n_resblock)]
    flags += ["--batch_size", str(bench.batch_size), "--patch_size", str(bench.patch_size)]
    args = parse_args([*flags, "--cpu"] if device.type == "cpu" else flags)
    torch.manual_seed(0)
    model = build_model(args, weights_follow=True).to(device)
    model.checkpoint_steps = bench.grad_checkpoint
    model.step_options = step_options(args.channels_last)
    step = TrainStep(model, Loss(args.loss).to(device), make_optimizer(model, args), device, args.amp, args.compile)
    shape = (bench.batch_size, args.n_sequence, 3, bench.patch_size, bench.patch_size)
    generator = torch.Generator().manual_seed(0)
    blur, gt = torch.rand(shape, generator=generator), torch.rand(shape, generator=generator)
    blur, gt = blur.to(device), gt.to(device)

    started = time.perf_counter()
    for _ in range(bench.warmup):
        step.optimise(step.compute_loss(blur, gt)[0])
    synchronize(device)
    warmup_seconds = time.perf_counter() - started
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for _ in range(bench.steps):
        total, values = step.compute_loss(blur, gt)
        step.optimise(total)
    synchronize(device)  # the one wait: as the loop, which reads the losses only at its log lines
    seconds = (time.perf_counter() - started) / bench.steps
    finite = bool(torch.isfinite(values).all())
    if device.type == "cuda":
        memory = f"peak {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
    else:
        memory = f"peak RSS so far {peak_rss_gib():.2f} GiB"
    return (
        f"{seconds:.3f} s/step, {bench.batch_size / seconds:.1f} samples/s, {memory}, warm-up {warmup_seconds:.1f} s"
        f"{'' if finite else ', LOSS NOT FINITE'}"
    )


def main() -> None:
    bench = bench_options()
    os.environ[BACKEND_VARIABLE] = bench.cost_volume
    if bench.threads:
        torch.set_num_threads(bench.threads)
    if not bench.cpu and not torch.cuda.is_available():
        raise UserError("no CUDA device; pass --cpu")
    device = torch.device("cpu" if bench.cpu else "cuda")
    volume = SELECTOR.describe() if device.type == "cuda" else "PyTorch (tiled)"
    print(
        f"batch {bench.batch_size} x {2 * bench.n_stages + 1} frames of {bench.patch_size}x{bench.patch_size}, "
        f"T={bench.n_stages}, n_feat {bench.n_feat}, n_resblock {bench.n_resblock}, grad_checkpoint "
        f"{'on' if bench.grad_checkpoint else 'off'}, cost volume {volume}; {bench.steps} timed steps after "
        f"{bench.warmup} warm-up"
    )
    for name in bench.levers:
        lever = LEVERS[name]
        reason = refusal(lever, device)
        flags = " ".join(lever.flags) or "(none)"
        if reason is not None:
            print(f"{name:<26} {flags}: not run ({reason})", flush=True)
            continue
        try:
            result = measure(bench, lever, device)
        except Exception as error:  # one lever failing (a compiler missing) must not hide the others
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            result = f"FAILED ({type(error).__name__}: {first[:200]})"
        print(f"{name:<26} {flags}: {result}", flush=True)
    print(f"machine: {machine(device)}")


if __name__ == "__main__":
    run_cli(main)
