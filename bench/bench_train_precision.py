"""What each training precision does to accuracy: a short run per precision on one fixed synthetic set, from the
same initial weights and the same batches, and its validation PSNR beside float32's.

The set is made in memory from a seed: smooth random scenes panning ``--shift`` pixels a frame, each blurred frame
the mean of the sharp scene over the frame's motion (seven sub-frame positions), as CDVD-TSP's training data.
Each precision (``--precisions``: fp32, the release's recipe; fp16, autocast with the gradient scaler; bf16,
autocast with PWC-Net in float32) trains ``--steps`` steps of main.py's step (`trainer.step.TrainStep`, the loss
1*L1+2*HEM, Adam at ``--lr``) on batches drawn in one fixed order, then validates on held-out clips: the PSNR of
the final output's middle frame, with the model run in float32 and under the precision it trained in. From random
weights (the default) a few hundred steps leave the model below the blurred input's PSNR; ``--pre_train`` starts
every precision from trained weights instead (a fine-tuning), where the comparison says more.

    python bench/bench_train_precision.py                                   # CUDA: the recipe's model, 256x256
    python bench/bench_train_precision.py --size 128 --pre_train pretrain_models/CDVD_TSP_DEMO.pt
    python bench/bench_train_precision.py --cpu --precisions fp32 --size 48 --n_stages 1 --n_feat 8 --steps 40
"""

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_train, also when imported from elsewhere

from bench_train import machine

from cdvd_tsp.loss import Loss
from cdvd_tsp.model.checkpoint import load_weights
from cdvd_tsp.option import parse_args
from cdvd_tsp.trainer.model_setup import build_model, make_optimizer
from cdvd_tsp.trainer.step import TrainStep
from cdvd_tsp.trainer.validation import float_psnr
from cdvd_tsp.utils.errors import UserError, run_cli
from cdvd_tsp.utils.precision import NEEDS_CUDA, cpu_refusal

AMP = {"fp32": "off", "fp16": "fp16", "bf16": "bf16"}
SUBFRAMES = 7


def bench_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precisions", nargs="+", default=list(AMP), choices=list(AMP))
    parser.add_argument("--steps", type=int, default=300, help="training steps per precision")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--size", type=int, default=256, help="side of the square clips")
    parser.add_argument("--clips", type=int, default=64, help="training clips")
    parser.add_argument("--validation_clips", type=int, default=8)
    parser.add_argument("--shift", type=int, default=3, help="pixels the scene moves per frame")
    parser.add_argument("--n_stages", type=int, default=2)
    parser.add_argument("--n_feat", type=int, default=32)
    parser.add_argument("--n_resblock", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument(
        "--pre_train", type=Path, default=None, help="start from these weights (e.g. pretrain_models/CDVD_TSP_DEMO.pt)"
    )
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    return parser.parse_args()


def synthetic_clips(count: int, frames: int, size: int, shift: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(blurred, sharp): [count, frames, 3, size, size] float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    margin = frames * shift + shift
    blurred, sharp = [], []
    for _ in range(count):
        scene = rng.integers(0, 256, (size + margin, size + margin, 3), dtype=np.uint8).astype(np.float32) / 255
        scene = cv2.GaussianBlur(scene, (0, 0), float(rng.uniform(1.0, 3.0)))
        scene = (scene - scene.min()) / (scene.max() - scene.min() + 1e-6)

        def view(offset: float, scene: np.ndarray = scene) -> np.ndarray:
            matrix = np.float32([[1, 0, -offset], [0, 1, -offset / 2]])
            return cv2.warpAffine(scene, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

        positions = [index * shift for index in range(frames)]
        sharp.append(np.stack([view(position) for position in positions]))
        steps = np.linspace(-shift / 2, shift / 2, SUBFRAMES)
        blurred.append(np.stack([np.mean([view(position + step) for step in steps], axis=0) for position in positions]))
    as_tensor = lambda clips: torch.from_numpy(np.stack(clips)).permute(0, 1, 4, 2, 3).contiguous()  # noqa: E731
    return as_tensor(blurred), as_tensor(sharp)


def validation_psnr(step: TrainStep, blur: torch.Tensor, gt: torch.Tensor, own_precision: bool) -> float:
    """Mean PSNR of the final output's middle frame over the clips, one clip a call."""
    model = step.model
    model.eval()
    center = model.n_sequence // 2
    values = []
    with torch.no_grad():
        for index in range(len(blur)):
            clip = blur[index : index + 1].to(step.device)
            with step.autocast() if own_precision else contextlib.nullcontext():
                final = model.split_outputs(model(clip)).final.float()
            values.append(float_psnr(final, gt[index : index + 1, center].to(step.device)))
    model.train()
    return statistics.mean(values)


def train_one(bench: argparse.Namespace, precision: str, device: torch.device, data: tuple) -> str:
    train_blur, train_gt, validation_blur, validation_gt = data
    flags = ["--no_flow_pretrain", "--n_stages", str(bench.n_stages), "--n_feat", str(bench.n_feat)]
    flags += ["--n_resblock", str(bench.n_resblock), "--lr", str(bench.lr), "--amp", AMP[precision]]
    flags += ["--loss", "1*L1+2*HEM", "--batch_size", str(bench.batch_size)]
    args = parse_args([*flags, "--cpu"] if device.type == "cpu" else flags)
    torch.manual_seed(0)
    model = build_model(args, weights_follow=True)
    if bench.pre_train is not None:
        load_weights(model, bench.pre_train)
    model = model.to(device)
    loss = Loss(args.loss).to(device)
    loss.reseed(0)
    step = TrainStep(model, loss, make_optimizer(model, args), device, args.amp)
    order = torch.Generator().manual_seed(0)
    losses = []
    started = time.perf_counter()
    for _ in range(bench.steps):
        batch = torch.randint(len(train_blur), (bench.batch_size,), generator=order)
        total, values = step.compute_loss(train_blur[batch], train_gt[batch])
        step.optimise(total)
        losses.append(values[-1])
    seconds = time.perf_counter() - started
    last = torch.stack(losses[-max(bench.steps // 10, 1) :]).mean().item()
    as_float32 = validation_psnr(step, validation_blur, validation_gt, own_precision=False)
    own = validation_psnr(step, validation_blur, validation_gt, own_precision=True)
    scale = f", final loss scale {step.scaler.get_scale():g}" if step.scaler.is_enabled() else ""
    return (
        f"{precision}: validation PSNR {as_float32:.3f} dB run in float32, {own:.3f} dB run in {precision}; "
        f"training loss (last 10 %) {last:.4f}; {seconds / bench.steps:.3f} s/step{scale}"
    )


def main() -> None:
    bench = bench_options()
    if bench.threads:
        torch.set_num_threads(bench.threads)
    if not bench.cpu and not torch.cuda.is_available():
        raise UserError("no CUDA device; pass --cpu")
    device = torch.device("cpu" if bench.cpu else "cuda")
    frames = 2 * bench.n_stages + 1
    train_blur, train_gt = synthetic_clips(bench.clips, frames, bench.size, bench.shift, seed=1)
    validation = synthetic_clips(bench.validation_clips, frames, bench.size, bench.shift, seed=2)
    center = frames // 2
    input_psnr = statistics.mean(
        float_psnr(validation[0][index : index + 1, center], validation[1][index : index + 1, center])
        for index in range(bench.validation_clips)
    )
    print(
        f"{bench.clips} training and {bench.validation_clips} validation clips of {frames} frames, "
        f"{bench.size}x{bench.size} (blurred input: {input_psnr:.3f} dB); {bench.steps} steps of batch "
        f"{bench.batch_size}, T={bench.n_stages}, n_feat {bench.n_feat}, n_resblock {bench.n_resblock}, "
        f"lr {bench.lr:g}, from {bench.pre_train or 'random weights'}",
        flush=True,
    )
    for precision in bench.precisions:
        reason = None if device.type == "cuda" else cpu_refusal(precision)
        if reason is not None:
            why = "needs CUDA" if reason == NEEDS_CUDA else reason
            print(f"{precision}: not run ({why})", flush=True)
            continue
        print(train_one(bench, precision, device, (train_blur, train_gt, *validation)), flush=True)
    print(f"machine: {machine(device)}")


if __name__ == "__main__":
    run_cli(main)
