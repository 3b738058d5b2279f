"""Training-step benchmark: seconds per optimisation step and peak memory of CDVD-TSP training.

Runs the step `main.py` runs (forward of every stage, 1*L1 + 2*HEM on all outputs, backward, Adam) on random
clips of ``--batch_size`` x (2T+1) frames of ``--patch_size`` squares, after ``--warmup`` untimed steps. The
released recipe is batch 8, 256 x 256 (the defaults); smaller sizes for slow machines by flags. Prints one line of
results and the machine. Example::

    python bench/bench_train.py                                   # CUDA, the recipe
    python bench/bench_train.py --amp bf16 --grad_checkpoint      # what the options change
    python bench/bench_train.py --cost_volume torch               # the PyTorch cost volume instead of the kernel
    python bench/bench_train.py --cpu --batch_size 4 --patch_size 64 --steps 2 --threads 2
"""

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))

from loss import Loss
from model.correlation import BACKEND_CHOICES, BACKEND_VARIABLE, SELECTOR
from option import parse_args
from trainer.model_setup import build_model, make_optimizer
from trainer.step import TrainStep
from utils.errors import UserError, run_cli


def bench_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--patch_size", type=int, default=256)
    parser.add_argument("--n_stages", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--amp", default="off", choices=("off", "bf16", "fp16"))
    parser.add_argument("--grad_checkpoint", action="store_true")
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


def main() -> None:
    bench = bench_options()
    os.environ[BACKEND_VARIABLE] = bench.cost_volume
    if bench.threads:
        torch.set_num_threads(bench.threads)
    flags = ["--no_flow_pretrain", "--n_stages", str(bench.n_stages), "--amp", bench.amp]
    flags += ["--batch_size", str(bench.batch_size), "--patch_size", str(bench.patch_size)]
    flags += ["--cpu"] if bench.cpu else []
    args = parse_args(flags)
    if not bench.cpu and not torch.cuda.is_available():
        raise UserError("no CUDA device; pass --cpu")
    device = torch.device("cpu" if bench.cpu else "cuda")

    torch.manual_seed(0)
    model = build_model(args, weights_follow=True).to(device)
    model.checkpoint_steps = bench.grad_checkpoint
    loss = Loss(args.loss).to(device)
    step = TrainStep(model, loss, make_optimizer(model, args), device, args.amp)
    shape = (bench.batch_size, args.n_sequence, 3, bench.patch_size, bench.patch_size)
    generator = torch.Generator().manual_seed(0)
    blur, gt = torch.rand(shape, generator=generator), torch.rand(shape, generator=generator)
    rss_before = peak_rss_gib()

    seconds = []
    for index in range(bench.warmup + bench.steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            if index == bench.warmup:
                torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        total, _ = step.compute_loss(blur, gt)
        step.optimise(total)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if index >= bench.warmup:
            seconds.append(time.perf_counter() - start)

    if device.type == "cuda":
        memory = f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
    else:
        memory = f"peak RSS {peak_rss_gib():.2f} GiB (model built: {rss_before:.2f} GiB)"
    options = f"amp {bench.amp}, grad_checkpoint {'on' if bench.grad_checkpoint else 'off'}"
    options += f", cost volume {SELECTOR.describe() if device.type == 'cuda' else 'PyTorch'}"
    print(
        f"batch {bench.batch_size} x {args.n_sequence} frames of {bench.patch_size}x{bench.patch_size}, "
        f"T={args.n_stages}, {options}: {statistics.mean(seconds):.2f} s/step (min {min(seconds):.2f}, "
        f"{len(seconds)} steps), {memory}"
    )
    print(f"machine: {machine(device)}")


if __name__ == "__main__":
    run_cli(main)
