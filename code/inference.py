"""Evaluate CDVD-TSP on a dataset like the release, or deblur a folder of frames or a video file.

Evaluation (the release's flags): ``python code/inference.py --default_data DVD`` deblurs every video of
``dataset/DVD/test/blur`` with ``pretrain_models/CDVD_TSP_DVD_Convergent.pt``, scores it against ``gt/`` by the
protocol (CONTRACT section 9) and writes frames, a log and ``results.json`` to ``infer_results/DVD``.
Deblurring only: ``python code/inference.py --input my_frames/ --output deblurred/`` (or a video file in and out).

Everything that can be checked (paths, frame lists and sizes, the checkpoint, the device) is checked before any
output is written; problems end the run with one line naming the file or option.
"""

import argparse
import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from data.demo import ensure_demo_split, is_demo_split
from data.frames import check_same_size, read_rgb, scan_dataset, write_png
from data.video_io import (
    FolderSource,
    VideoSource,
    VideoWriter,
    folder_source,
    is_video_path,
    open_input,
)
from model.cdvd_tsp import CDVD_TSP
from model.checkpoint import load_weights
from model.streaming import StreamingRunner, WindowRunner, with_border
from utils.errors import UserError, run_cli
from utils.image import to_tensor, to_uint8
from utils.inference_report import FrameTimes, Results, RunLog, frame_line, total_line, video_line
from utils.metrics import MIN_SIZE, score_frame
from utils.paths import from_repo
from utils.showcase import ShowcaseWriter

logger = logging.getLogger("inference")

N_SEQUENCE = 5
"""The released cascade: five frames, two stages; the first and last two frames of a video have no full window."""
HALF_WINDOW = N_SEQUENCE // 2
SIZE_MULTIPLE = 4
"""The restoration net downsamples twice by 2: frames are cropped (evaluation) or padded (--input) to multiples of 4."""
FALLBACK_FPS = 25.0
README_HINT = 'see README.md, section "Released weights and datasets"'


@dataclass(frozen=True)
class Preset:
    """What ``--default_data NAME`` means; each path is relative to the repository unless absolute."""

    data_path: str
    model_path: str
    result_path: str
    border: bool = False
    """Whether every frame gets an output unless --no_border is given."""
    showcase: bool = False
    """Whether side-by-side pictures and animations are written unless --no_showcase is given."""


PRESETS: dict[str, Preset] = {
    "DVD": Preset("dataset/DVD/test", "pretrain_models/CDVD_TSP_DVD_Convergent.pt", "infer_results/DVD"),
    "GOPRO": Preset("dataset/GOPRO/test", "pretrain_models/CDVD_TSP_GOPRO.pt", "infer_results/GOPRO"),
    # the embedded demo: synthetic blur over held-out sample photos, made on first use (data/demo.py)
    "DEMO": Preset(
        "dataset/DEMO/test", "pretrain_models/CDVD_TSP_DEMO.pt", "infer_results/DEMO", border=True, showcase=True
    ),
}
SHOWCASE_DIR = "showcase"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="CDVD-TSP inference: evaluate on a dataset (blur/ and gt/) or deblur a folder of frames or a video."
    )
    parser.add_argument("--default_data", choices=list(PRESETS), default="DVD", help="preset data, model and results")
    parser.add_argument("--data_path", help="dataset folder holding blur/<video>/ and, for metrics, gt/<video>/")
    parser.add_argument("--model_path", help="checkpoint to load (default: the preset's released model)")
    parser.add_argument("--result_path", help="where frames, the log and results.json go (evaluation)")
    parser.add_argument("--save_image", dest="save_image", action="store_true", default=True, help="save frames")
    parser.add_argument("--no_save_image", dest="save_image", action="store_false", help="score only (evaluation)")
    parser.add_argument("--border", dest="border", action="store_true", default=None, help="restore every frame")
    parser.add_argument(
        "--no_border", dest="border", action="store_false", help="leave out the first and last two frames"
    )
    parser.add_argument(
        "--showcase",
        dest="showcase",
        action="store_true",
        default=None,
        help=f"also write side-by-side pictures (blurred | deblurred | sharp) and a GIF per video to {SHOWCASE_DIR}/",
    )
    parser.add_argument("--no_showcase", dest="showcase", action="store_false", help="no side-by-side pictures")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA if available")
    parser.add_argument("--window", action="store_true", help="recompute every 5-frame window (the release's way)")
    parser.add_argument("--input", help="a folder of frames or a video file to deblur (no ground truth)")
    parser.add_argument("--output", help="with --input: a folder for the frames, or a video file for a video input")
    return parser.parse_args(argv)


# ----- planning: everything checked before anything is written


@dataclass(frozen=True)
class Job:
    """One video: its frames, its sharp frames (if any), the frames that get an output, and where outputs go."""

    source: FolderSource | VideoSource
    gt: list[Path] | None
    targets: list[int]
    """Indices of the frames that get an output."""
    frames_dir: Path | None
    video_out: Path | None


@dataclass(frozen=True)
class Plan:
    jobs: list[Job]
    model_path: Path
    device: torch.device
    border: bool
    window: bool
    crop: bool
    """Evaluation crops frames to multiples of 4 (the protocol); --input pads them and crops the output back."""
    report_dir: Path
    log_prefix: str
    results_path: Path
    settings: dict[str, object]
    showcase_dir: Path | None = None


def given_or_default(given: str | None, default: str) -> Path:
    """A path given on the command line is taken as usual (relative to the working directory); defaults are
    relative to the repository, so that the presets work from any directory."""
    return Path(given).expanduser().resolve() if given else from_repo(default)


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: PyTorch sees no CUDA device here; use --device cpu (or auto)")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def check_model_file(path: Path) -> None:
    if not path.is_file():
        raise UserError(
            f"model not found: {path}; put the released {path.name} there or pass --model_path "
            f"({README_HINT}, and pretrain_models/README.md)"
        )


def frames_with_output(count: int, border: bool, name: str, half: int = HALF_WINDOW) -> list[int]:
    """Indices of the frames that get an output; refuses videos too short for any."""
    if border:
        if count < half:
            raise UserError(f"{name}: has {count} frame(s); restoring it needs at least {half}")
        return list(range(count))
    if count < 2 * half + 1:
        raise UserError(
            f"{name}: has {count} frame(s); without --border a video needs at least {2 * half + 1} "
            "(or pass --border to restore every frame)"
        )
    return list(range(half, count - half))


def check_size(name: str, size: tuple[int, int], crop: bool, scored: bool) -> None:
    height, width = size
    if crop:
        height, width = height - height % SIZE_MULTIPLE, width - width % SIZE_MULTIPLE
    smallest = MIN_SIZE if scored else SIZE_MULTIPLE
    if min(height, width) < smallest:
        raise UserError(f"{name}: frames of {size[1]}x{size[0]} are too small; at least {smallest}x{smallest} needed")


def check_no_overwrite(inputs: list[Path], outputs: list[Path]) -> None:
    """No output may replace an input file."""
    resolved = {path.resolve() for path in inputs}
    for path in outputs:
        if path.resolve() in resolved:
            raise UserError(f"{path}: this output would overwrite an input frame; choose another output folder")


def check_folder_target(path: Path, option: str) -> None:
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path}: exists and is not a folder")


def plan_evaluation(args: argparse.Namespace, preset: Preset) -> Plan:
    data_path = given_or_default(args.data_path, preset.data_path)
    model_path = given_or_default(args.model_path, preset.model_path)
    result_path = given_or_default(args.result_path, preset.result_path)
    border = preset.border if args.border is None else args.border
    showcase = preset.showcase if args.showcase is None else args.showcase
    if args.output:
        raise UserError("--output goes with --input; evaluation writes to --result_path")
    device = pick_device(args.device)
    if is_demo_split(data_path) and ensure_demo_split(data_path):
        logger.warning("made the demo data set %s (synthetic blur over held-out sample photos)", data_path)
    if not data_path.is_dir():
        raise UserError(
            f"dataset not found: {data_path}; put the test set there as blur/<video>/<frames> and gt/<video>/<frames> "
            f"or pass --data_path ({README_HINT}, and dataset/README.md)"
        )
    check_model_file(model_path)
    check_folder_target(result_path, "--result_path")

    jobs, inputs, outputs = [], [], []
    for video in scan_dataset(data_path):
        source = folder_source(video.name, video.blur)
        if video.gt is not None:
            gt_size = check_same_size(video.gt, f"{video.name} (gt)")
            if gt_size != source.size:
                raise UserError(
                    f"{video.name}: blurred frames are {source.size[1]}x{source.size[0]}, "
                    f"sharp frames {gt_size[1]}x{gt_size[0]}"
                )
        check_size(video.name, source.size, crop=True, scored=video.gt is not None)
        targets = frames_with_output(len(source), border, video.name)
        frames_dir = result_path / video.name if args.save_image else None
        jobs.append(Job(source, video.gt, targets, frames_dir, None))
        inputs += video.blur + (video.gt or [])
        if frames_dir is not None:
            check_folder_target(frames_dir, "--result_path")
            outputs += [frames_dir / f"{source.frame_names[index]}.png" for index in targets]
    check_no_overwrite(inputs, outputs)
    return Plan(
        jobs=jobs,
        model_path=model_path,
        device=device,
        border=border,
        window=args.window,
        crop=True,
        report_dir=result_path,
        log_prefix="inference_log",
        results_path=result_path / "results.json",
        settings={"data_path": data_path, "result_path": result_path, "save_image": args.save_image},
        showcase_dir=result_path / SHOWCASE_DIR if showcase else None,
    )


def default_output(source: FolderSource | VideoSource) -> Path:
    if isinstance(source, VideoSource):
        suffix = source.path.suffix if is_video_path(source.path) else ".mp4"
        return from_repo(f"infer_results/{source.path.stem}_deblurred{suffix}")
    return from_repo(f"infer_results/{source.name}_deblurred")


def plan_input(args: argparse.Namespace, preset: Preset) -> Plan:
    if args.data_path or args.result_path:
        raise UserError("--input deblurs one folder or video; leave out --data_path and --result_path")
    if not args.save_image:
        raise UserError("--no_save_image: with --input the deblurred frames are the result; leave it out")
    if args.showcase:
        raise UserError("--showcase goes with a dataset (it shows the sharp frames too); leave it out with --input")
    model_path = given_or_default(args.model_path, preset.model_path)
    border = True if args.border is None else args.border
    device = pick_device(args.device)
    input_path = Path(args.input).expanduser().resolve()
    source = open_input(input_path)
    check_model_file(model_path)
    check_size(source.name, source.size, crop=False, scored=False)
    targets = frames_with_output(len(source), border, source.name)
    output = Path(args.output).expanduser().resolve() if args.output else default_output(source)

    if is_video_path(output):
        if not isinstance(source, VideoSource):
            raise UserError(f"--output {output}: a video file, but the input is a folder of frames; give a folder")
        if output.is_dir():
            raise UserError(f"--output {output}: exists and is a folder")
        if output == source.path:
            raise UserError(f"--output {output}: is the input video; choose another file")
        job = Job(source, None, targets, None, output)
        report_dir, stem = output.parent, output.stem
        results_path, log_prefix = report_dir / f"{stem}_results.json", f"{stem}_inference_log"
    else:
        check_folder_target(output, "--output")
        job = Job(source, None, targets, output, None)
        if isinstance(source, FolderSource):
            check_no_overwrite(source.paths, [output / f"{source.frame_names[index]}.png" for index in targets])
        report_dir, results_path, log_prefix = output, output / "results.json", "inference_log"
    return Plan(
        jobs=[job],
        model_path=model_path,
        device=device,
        border=border,
        window=args.window,
        crop=False,
        report_dir=report_dir,
        log_prefix=log_prefix,
        results_path=results_path,
        settings={"input": input_path, "output": output},
    )


def make_plan(args: argparse.Namespace) -> Plan:
    preset = PRESETS[args.default_data]
    return plan_input(args, preset) if args.input else plan_evaluation(args, preset)


def load_model(path: Path, device: torch.device) -> CDVD_TSP:
    model = CDVD_TSP(n_sequence=N_SEQUENCE)
    load_weights(model, path)
    return model.to(device).eval()


# ----- running


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that the times in the log are the model's."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pad_to_multiple(tensor: Tensor, multiple: int = SIZE_MULTIPLE) -> Tensor:
    """Reflect-pad the bottom and right of [B, C, H, W] up to multiples of ``multiple``."""
    height, width = tensor.shape[-2:]
    pad_bottom, pad_right = -height % multiple, -width % multiple
    if pad_bottom == 0 and pad_right == 0:
        return tensor
    return F.pad(tensor, (0, pad_right, 0, pad_bottom), mode="reflect")


class FramePreparer:
    """Input frames to what the model sees: cropped to multiples of 4 (evaluation) or padded (--input)."""

    def __init__(self, size: tuple[int, int], crop: bool, device: torch.device) -> None:
        height, width = size
        self.crop = crop
        self.device = device
        self.visible = (height - height % SIZE_MULTIPLE, width - width % SIZE_MULTIPLE) if crop else (height, width)

    def image(self, rgb: np.ndarray) -> np.ndarray:
        """The part of the frame that gets an output (the cropped frame, or all of it)."""
        height, width = self.visible
        return rgb[:height, :width]

    def tensor(self, visible: np.ndarray) -> Tensor:
        tensor = to_tensor(visible, self.device)
        return tensor if self.crop else pad_to_multiple(tensor)

    def output(self, tensor: Tensor) -> np.ndarray:
        height, width = self.visible
        return to_uint8(tensor[..., :height, :width])


def deblur_video(
    job: Job, model: CDVD_TSP, plan: Plan, log: RunLog, results: Results, showcase: ShowcaseWriter | None
) -> None:
    """Run one video through the cascade, saving, scoring and logging each output as it comes."""
    source = job.source
    names = source.frame_names
    runner = WindowRunner(model) if plan.window else StreamingRunner(model)
    prepare = FramePreparer(source.size, plan.crop, plan.device)
    frames: Iterator[np.ndarray] = source.frames()
    if plan.border:
        frames = with_border(frames, model.n_stages)
    targets = iter(job.targets)
    if job.frames_dir is not None:
        job.frames_dir.mkdir(parents=True, exist_ok=True)

    with contextlib.ExitStack() as stack:
        writer = None
        if job.video_out is not None:
            fps = source.fps if isinstance(source, VideoSource) and source.fps > 0 else FALLBACK_FPS
            writer = stack.enter_context(VideoWriter(job.video_out, source.size, fps))
        bar = stack.enter_context(tqdm(total=len(job.targets), desc=source.name, unit="frame", dynamic_ncols=True))
        read_seconds = forward_seconds = 0.0
        clock = time.perf_counter()
        for rgb in frames:
            visible = prepare.image(rgb)
            tensor = prepare.tensor(visible)
            started = time.perf_counter()
            read_seconds += started - clock
            restored = runner.push(tensor, visible)
            synchronize(plan.device)
            clock = time.perf_counter()
            forward_seconds += clock - started
            if restored is None:
                continue
            blurred, output = restored.tag, restored.image

            index = next(targets, None)
            if index is None:  # ffmpeg decoded more frames than it counted: the counted ones have their outputs
                logger.warning("%s: more frames than counted; the last ones are left out", source.name)
                break
            image = prepare.output(output)
            if job.frames_dir is not None:
                write_png(job.frames_dir / f"{names[index]}.png", image)
            if writer is not None:
                writer.write(image)
            scores = sharp = None
            if job.gt is not None:
                sharp = prepare.image(read_rgb(job.gt[index]))
                scores = score_frame(image, blurred, sharp)
            if showcase is not None:
                showcase.add(names[index], blurred, image, sharp)
            finished = time.perf_counter()
            times = FrameTimes(read_seconds, forward_seconds, finished - clock)
            results.add(source.name, names[index], scores, times)
            log.write(frame_line(source.name, names[index], scores, times))
            bar.update()
            read_seconds = forward_seconds = 0.0
            clock = finished


def run(plan: Plan, model: CDVD_TSP) -> Results:
    plan.report_dir.mkdir(parents=True, exist_ok=True)
    results = Results()
    showcase = ShowcaseWriter(plan.showcase_dir) if plan.showcase_dir is not None else None
    with RunLog(plan.report_dir, plan.log_prefix) as log:
        log.write(f"Inference - {time.strftime('%Y-%m-%d %H:%M:%S')}")
        for name, value in {
            **plan.settings,
            "model_path": plan.model_path,
            "border": plan.border,
            "runner": "window (every window from scratch)" if plan.window else "streaming",
            "device": plan.device,
            "n_seq": model.n_sequence,
            "size_must_mode": SIZE_MULTIPLE,
        }.items():
            log.write(f"{name}: {value}")
        try:
            with torch.inference_mode():
                for job in plan.jobs:
                    deblur_video(job, model, plan, log, results, showcase)
                    log.write(video_line(job.source.name, results.video(job.source.name)))
                    if showcase is not None:
                        showcase.finish_video(job.source.name)
        except UserError as error:
            log.write(f"error: {error}")
            raise
        log.write(total_line(results))
        results.write_json(plan.results_path)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    args = parse_args(argv)
    plan = make_plan(args)
    model = load_model(plan.model_path, plan.device)
    run(plan, model)
    return 0


if __name__ == "__main__":
    run_cli(main)
