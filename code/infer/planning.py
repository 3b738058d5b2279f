"""What a run will do, decided and checked before anything is written: the presets, the videos (`Job`) and the
run's settings (`Plan`), and which process of a torchrun run restores which videos (`shard`).

Everything that can be checked here is: paths, the dataset's layout, frame lists and sizes, the model file, the
device, the precision, the acceleration flags and the evaluation settings (metrics, self-ensemble, tiles).
Problems are a `UserError` naming the file or option.
"""

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from data.demo import ensure_demo_split, is_demo_split
from data.frames import BLUR_DIR, GT_DIR, check_same_size
from data.layouts import AUTO, detect_layout, find_videos
from data.video_io import FolderSource, VideoSource, folder_source, is_video_path, open_input
from model.tiling import Tiler
from utils.errors import UserError
from utils.image import cropped_size
from utils.metrics import check_options, min_size
from utils.paths import from_repo
from utils.precision import Precision, get_precision
from utils.showcase import ShowcaseWriter

logger = logging.getLogger(__name__)

N_SEQUENCE = 5
"""The released cascade: five frames, two stages; the first and last two frames of a video have no full window."""
HALF_WINDOW = N_SEQUENCE // 2
SIZE_MULTIPLE = 4
"""The restoration net downsamples twice by 2: frames are cropped (evaluation) or padded (--input) to multiples of 4."""
ENSEMBLES = ("x8", "x16")
"""``--self_ensemble``: x8 the 8 flips and transpositions of every frame, x16 those and the video played backwards."""
README_HINT = 'see README.md, section "Released weights and datasets"'
SHOWCASE_DIR = "showcase"


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
    """The run's paths, for the log's header."""
    precision: Precision
    cuda_graphs: bool
    compile: bool
    workers: int
    """Threads that write and score outputs; 0: everything in the main thread."""
    showcase_dir: Path | None = None
    outputs: tuple[Path, ...] = ()
    """Every file the run will make (frames, showcase pictures, the video), where it goes once committed."""
    option: str = "--result_path"
    """The option that picks where the outputs go, for errors."""
    dataset: dict[str, object] = field(default_factory=dict)
    """How the dataset was read (layout, split, gopro_blur, videos), for the log and results.json; empty with
    --input."""
    metric_channel: str = "rgb"
    crop_border: int = 4
    self_ensemble: str | None = None
    """None, or one of `ENSEMBLES`."""
    tile: int | None = None
    tile_overlap: int = 32

    @property
    def runner(self) -> str:
        return "window" if self.window else "streaming"


def given_or_default(given: str | None, default: str) -> Path:
    """A path given on the command line is taken as usual (relative to the working directory); defaults are
    relative to the repository, so that the presets work from any directory."""
    return Path(given).expanduser().resolve() if given else from_repo(default)


def pick_device(choice: str, local_rank: int = 0) -> torch.device:
    """The device of ``--device``; on CUDA the GPU of this process's local rank (torchrun), cuda:0 alone."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: PyTorch sees no CUDA device here; use --device cpu (or auto)")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    if local_rank >= torch.cuda.device_count():
        raise UserError(
            f"process {local_rank} of this machine has no GPU: PyTorch sees {torch.cuda.device_count()}; "
            "start at most that many processes per machine, or pass --device cpu"
        )
    return torch.device("cuda", local_rank)


def pick_precision(name: str | None, device: torch.device, evaluation: bool) -> Precision:
    """``--precision``, or its default: fp32 on the CPU; on CUDA tf32 for evaluation (it leaves the published
    totals unchanged at their printed precision) and fp16 for deblurring (the fastest setting measured with a PSNR
    change under 0.01 dB)."""
    if name is None:
        name = "fp32" if device.type != "cuda" else "tf32" if evaluation else "fp16"
    return get_precision(name, device)


def pick_acceleration(args: argparse.Namespace, device: torch.device) -> tuple[bool, bool]:
    """(cuda_graphs, compile): both apply to the streaming runner's per-stage step."""
    if args.window and (args.compile or args.cuda_graphs):
        flag = "--compile" if args.compile else "--cuda_graphs"
        raise UserError(f"{flag} applies to the streaming runner's step; leave it out with --window")
    if args.cuda_graphs and device.type != "cuda":
        raise UserError(f"--cuda_graphs: needs a CUDA device, and this run is on {device}; leave it out")
    cuda_graphs = args.cuda_graphs if args.cuda_graphs is not None else device.type == "cuda" and not args.window
    return cuda_graphs, args.compile


def check_workers(workers: int) -> int:
    if workers < 0:
        raise UserError(f"--workers {workers}: give 0 (everything in the main thread) or more threads")
    return workers


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


def check_size(name: str, size: tuple[int, int], crop: bool, scored: bool, crop_border: int = 4) -> None:
    """Frames must be at least the metrics' smallest size (``min_size(crop_border)``) when scored, else 4 x 4."""
    height, width = size
    if crop:
        height, width = cropped_size(height, width, SIZE_MULTIPLE)
    smallest = min_size(crop_border) if scored else SIZE_MULTIPLE
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


def check_not_in_dataset(result_path: Path, data_path: Path, layout: str = "release") -> None:
    """Results inside the dataset's blur/ or gt/ (any other layout: inside the dataset) would be taken for videos
    by every later run."""
    if layout != "release":
        if result_path == data_path or data_path in result_path.parents:
            raise UserError(
                f"--result_path {result_path}: is inside the {layout} dataset {data_path}, where every later run "
                "would take it for a video; choose a folder outside it"
            )
        return
    for name in (BLUR_DIR, GT_DIR):
        folder = (data_path / name).resolve()
        if result_path == folder or folder in result_path.parents:
            raise UserError(
                f"--result_path {result_path}: is inside the dataset's {name}/ folder, where every later run would "
                f"take it for a video; choose a folder outside {folder}"
            )


def make_demo_data(args: argparse.Namespace) -> None:
    """Make the DEMO preset's test set if this run evaluates on it and it is not there yet (once, before planning;
    under torchrun only rank 0 calls this)."""
    if args.input:
        return
    data_path = given_or_default(args.data_path, PRESETS[args.default_data].data_path)
    if is_demo_split(data_path) and ensure_demo_split(data_path):
        logger.warning("made the demo data set %s (synthetic blur over held-out sample photos)", data_path)


def plan_evaluation(args: argparse.Namespace, preset: Preset, run: dict[str, Any]) -> Plan:
    """The videos of a dataset (``--data_path`` or the preset's); ``run`` holds the settings both modes share."""
    data_path = given_or_default(args.data_path, preset.data_path)
    result_path = given_or_default(args.result_path, preset.result_path)
    border = preset.border if args.border is None else args.border
    showcase = preset.showcase if args.showcase is None else args.showcase
    if args.output:
        raise UserError("--output goes with --input; evaluation writes to --result_path")
    if not data_path.is_dir():
        raise UserError(
            f"dataset not found: {data_path}; put the test set there as blur/<video>/<frames> and gt/<video>/<frames> "
            f"or pass --data_path ({README_HINT}, and dataset/README.md)"
        )
    layout = detect_layout(data_path) if args.layout == AUTO else args.layout
    only = [name.strip() for name in args.videos.split(",") if name.strip()] if args.videos else None
    videos = find_videos(data_path, layout, split=args.split, gopro_blur=args.gopro_blur, only=only)
    if args.gopro_blur != "blur" and layout != "gopro":
        raise UserError(f"--gopro_blur goes with the gopro layout; {data_path} has the {layout} layout")
    check_model_file(run["model_path"])
    check_folder_target(result_path, "--result_path")
    check_not_in_dataset(result_path, data_path, layout)

    jobs, inputs, outputs = [], [], []
    for video in videos:
        source = folder_source(video.name, video.blur)
        if video.gt is not None:
            gt_size = check_same_size(video.gt, f"{video.name} (gt)")
            if gt_size != source.size:
                raise UserError(
                    f"{video.name}: blurred frames are {source.size[1]}x{source.size[0]}, "
                    f"sharp frames {gt_size[1]}x{gt_size[0]}"
                )
        check_size(video.name, source.size, crop=True, scored=video.gt is not None, crop_border=run["crop_border"])
        targets = frames_with_output(len(source), border, video.name)
        frames_dir = result_path / video.name if args.save_image else None
        jobs.append(Job(source, video.gt, targets, frames_dir, None))
        inputs += video.blur + (video.gt or [])
        if frames_dir is not None:
            check_folder_target(frames_dir, "--result_path")
            outputs += [frames_dir / f"{source.frame_names[index]}.png" for index in targets]
        if showcase:
            names = [source.frame_names[index] for index in targets]
            outputs += [result_path / SHOWCASE_DIR / name for name in ShowcaseWriter.file_names(video.name, names)]
    check_no_overwrite(inputs, outputs)
    return Plan(
        jobs=jobs,
        border=border,
        crop=True,
        report_dir=result_path,
        log_prefix="inference_log",
        results_path=result_path / "results.json",
        settings={"data_path": data_path, "result_path": result_path, "save_image": args.save_image},
        showcase_dir=result_path / SHOWCASE_DIR if showcase else None,
        outputs=tuple(outputs),
        dataset={"layout": layout, "split": args.split, "gopro_blur": args.gopro_blur, "videos": only},
        **run,
    )


def default_output(source: FolderSource | VideoSource) -> Path:
    if isinstance(source, VideoSource):
        suffix = source.path.suffix if is_video_path(source.path) else ".mp4"
        return from_repo(f"infer_results/{source.path.stem}_deblurred{suffix}")
    return from_repo(f"infer_results/{source.name}_deblurred")


def plan_input(args: argparse.Namespace, preset: Preset, run: dict[str, Any]) -> Plan:
    """One folder of frames or video file (``--input``) and where its result goes."""
    if args.data_path or args.result_path:
        raise UserError("--input deblurs one folder or video; leave out --data_path and --result_path")
    if not args.save_image:
        raise UserError("--no_save_image: with --input the deblurred frames are the result; leave it out")
    if args.showcase:
        raise UserError("--showcase goes with a dataset (it shows the sharp frames too); leave it out with --input")
    for flag, given in (
        ("--layout", args.layout != AUTO),
        ("--split", args.split is not None),
        ("--gopro_blur", args.gopro_blur != "blur"),
        ("--videos", args.videos is not None),
    ):
        if given:
            raise UserError(f"{flag} goes with a dataset (--data_path); leave it out with --input")
    border = True if args.border is None else args.border
    input_path = Path(args.input).expanduser().resolve()
    source = open_input(input_path)
    check_model_file(run["model_path"])
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
        outputs = [output]
        report_dir, stem = output.parent, output.stem
        results_path, log_prefix = report_dir / f"{stem}_results.json", f"{stem}_inference_log"
    else:
        check_folder_target(output, "--output")
        job = Job(source, None, targets, output, None)
        outputs = [output / f"{source.frame_names[index]}.png" for index in targets]
        if isinstance(source, FolderSource):
            check_no_overwrite(source.paths, outputs)
        report_dir, results_path, log_prefix = output, output / "results.json", "inference_log"
    return Plan(
        jobs=[job],
        border=border,
        crop=False,
        report_dir=report_dir,
        log_prefix=log_prefix,
        results_path=results_path,
        settings={"input": input_path, "output": output},
        outputs=tuple(outputs),
        option="--output",
        **run,
    )


def check_metrics(channel: str, crop_border: int) -> None:
    try:
        check_options(channel, crop_border)
    except ValueError:
        raise UserError(f"--crop_border {crop_border}: give a whole number of pixels, 0 or more") from None


def check_tiles(tile: int | None, overlap: int) -> None:
    """``--tile`` and ``--tile_overlap``: what `model.tiling.Tiler` accepts, refused in one line otherwise."""
    if tile is None:
        if overlap != 32:
            raise UserError("--tile_overlap goes with --tile; give --tile too or leave it out")
        return
    if tile < SIZE_MULTIPLE or tile % SIZE_MULTIPLE:
        raise UserError(f"--tile {tile}: give a positive multiple of {SIZE_MULTIPLE} (e.g. 256)")
    if overlap < 0 or overlap % SIZE_MULTIPLE or overlap >= tile:
        raise UserError(
            f"--tile_overlap {overlap}: give a multiple of {SIZE_MULTIPLE} from 0 to less than --tile {tile}"
        )
    Tiler(tile, overlap)  # the same rules; a change there should not go unnoticed here


def make_plan(args: argparse.Namespace, local_rank: int = 0) -> Plan:
    """Check everything and decide what the run does; every process of a torchrun run makes the same plan (only
    the device differs: each takes the GPU of its local rank)."""
    preset = PRESETS[args.default_data]
    device = pick_device(args.device, local_rank)
    precision = pick_precision(args.precision, device, evaluation=not args.input)
    cuda_graphs, compile_step = pick_acceleration(args, device)
    run = {
        "model_path": given_or_default(args.model_path, preset.model_path),
        "device": device,
        "window": args.window,
        "precision": precision,
        "cuda_graphs": cuda_graphs,
        "compile": compile_step,
        "workers": check_workers(args.workers),
        "metric_channel": args.metric_channel,
        "crop_border": args.crop_border,
        "self_ensemble": args.self_ensemble,
        "tile": args.tile,
        "tile_overlap": args.tile_overlap,
    }
    check_metrics(args.metric_channel, args.crop_border)
    check_tiles(args.tile, args.tile_overlap)
    return plan_input(args, preset, run) if args.input else plan_evaluation(args, preset, run)


def shard(jobs: list[Job], processes: int) -> list[list[int]]:
    """Which jobs each of ``processes`` processes restores (indices into ``jobs``, in plan order).

    Balanced by frame count and deterministic: the longest video first, each to the process with the fewest frames
    so far (the lowest rank among equals).
    """
    loads = [0] * processes
    assigned: list[list[int]] = [[] for _ in range(processes)]
    for index in sorted(range(len(jobs)), key=lambda index: (-len(jobs[index].source), index)):
        rank = min(range(processes), key=lambda rank: (loads[rank], rank))
        assigned[rank].append(index)
        loads[rank] += len(jobs[index].source)
    return [sorted(indices) for indices in assigned]
