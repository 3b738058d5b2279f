"""What a run will do, decided and checked before anything is written: the presets, the videos (`Job`) and the
run's `Plan`, made of typed parts, and which process of a torchrun run restores which videos (`shard`).

Everything that can be checked here is (infer/checks.py): paths, the dataset's layout, frame lists and sizes, the
model file and its number of stages, and the evaluation settings (border, metrics, self-ensemble, tiles); how the
model runs (the device, the backend, the precision, CUDA graphs, compile, the step's layouts) is one `Execution`
(infer/execution.py). Problems are a `UserError` naming the file or option.
"""

import argparse
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cdvd_tsp.data.frames import check_same_size
from cdvd_tsp.data.layouts import AUTO, detect_layout, find_videos
from cdvd_tsp.data.video_io import (
    Encoding,
    FolderSource,
    VideoSource,
    folder_source,
    is_video_path,
    open_input,
    plan_encoding,
)
from cdvd_tsp.infer.checks import (
    INPUT_META,
    check_dataset_folder,
    check_default_place,
    check_folder_target,
    check_metrics,
    check_model_file,
    check_no_overwrite,
    check_not_in_dataset,
    check_not_input_folder,
    check_size,
    frames_with_output,
    pick_border,
    pick_n_stages,
    pick_onnx_n_stages,
    pick_tiles,
)
from cdvd_tsp.infer.execution import ONNXRUNTIME, PYTORCH, Execution, make_execution
from cdvd_tsp.infer.report import LOG_PREFIX
from cdvd_tsp.utils.errors import UserError
from cdvd_tsp.utils.paths import from_repo
from cdvd_tsp.utils.runtime import pick_device
from cdvd_tsp.utils.showcase import ShowcaseWriter

logger = logging.getLogger(__name__)

SPATIAL_ENSEMBLE, TIME_ENSEMBLE = "x8", "x16"
ENSEMBLES = (SPATIAL_ENSEMBLE, TIME_ENSEMBLE)
"""``--self_ensemble``: x8 (also ``--self_ensemble`` alone) the 8 flips and transpositions of every frame, x16 those
and the video played backwards."""
GOPRO_BLUR = "blur"
"""GOPRO_Large's blurred frames unless ``--gopro_blur`` says otherwise: what CDVD-TSP and most peers evaluate."""
SHOWCASE_DIR = "showcase"
RESULTS_NAME = "results.json"
RECORDS_DIR = "infer_results/records"
"""Where the reports of runs that write a video file go (`records_folder`), in the repository..."""
RECORDS_ENV = "CDVD_TSP_RECORDS"
"""... or where this environment variable says."""
CLAIM_NAME = "output.json"
DEMO = "DEMO"


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
    DEMO: Preset(
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
    files: tuple[Path, ...] = ()
    """Every file this video makes (frames, showcase pictures, the video), where it goes once committed."""
    encoding: Encoding | None = None
    """How ``video_out`` is coded (``--codec``, ``--quality``); None: the container's default."""


@dataclass(frozen=True)
class Evaluation:
    """A dataset evaluated (``--data_path`` or a preset): where its videos are and how they were read."""

    data_path: Path
    result_path: Path
    save_image: bool
    layout: str
    split: str | None
    gopro_blur: str
    videos: list[str] | None
    """Only these videos (``--videos``), or None: all."""


@dataclass(frozen=True)
class Deblurring:
    """One folder of frames or video file deblurred (``--input``) and where its result goes (``--output``)."""

    input: Path
    output: Path


@dataclass(frozen=True)
class Restoration:
    """How every frame is restored: the model, the border, the runner and the evaluation variants."""

    model_path: Path
    n_stages: int
    """T: the model takes 2T + 1 frames, and the first and last T frames of a video have no full window."""
    border_mode: str | None
    """How the border frames are padded (`model.streaming.BORDER_MODES`), or None: they get no output."""
    crop: bool
    """Evaluation crops frames to multiples of 4 (the protocol); --input pads them and crops the output back."""
    window: bool
    """Every window from scratch (the release's way) instead of the streaming runner."""
    self_ensemble: str | None
    """None, or one of `ENSEMBLES`."""
    tile: int | None
    tile_overlap: int | None
    """With ``tile`` only."""

    @property
    def n_sequence(self) -> int:
        return 2 * self.n_stages + 1

    @property
    def border(self) -> bool:
        return self.border_mode is not None

    @property
    def runner(self) -> str:
        return "window" if self.window else "streaming"

    @property
    def time_reversal(self) -> bool:
        """Whether each video is also restored backwards (x16)."""
        return self.self_ensemble == TIME_ENSEMBLE


@dataclass(frozen=True)
class Metrics:
    """How outputs are scored (``--metric_channel``, ``--crop_border``)."""

    channel: str
    crop_border: int


@dataclass(frozen=True)
class Destination:
    """Where the run's log, results.json and files go."""

    report_dir: Path
    log_prefix: str
    results_path: Path
    showcase_dir: Path | None
    files: tuple[Path, ...]
    """Every file the run will make (frames, showcase pictures, the video), where it goes once committed."""
    option: str
    """The option that picks where the outputs go, for errors."""
    meta: dict[str, str]
    """What the run records in its manifest (``{"input": <the resolved input>}``, `checks.INPUT_META`), read by
    `checks.check_default_place`."""


@dataclass(frozen=True)
class Plan:
    task: Evaluation | Deblurring
    jobs: list[Job]
    restoration: Restoration
    execution: Execution
    metrics: Metrics
    destination: Destination


def given_or_default(given: str | None, default: str) -> Path:
    """A path given on the command line is taken as usual (relative to the working directory); defaults are
    relative to the repository, so that the presets work from any directory."""
    return Path(given).expanduser().resolve() if given else from_repo(default)


def demo_folders(args: argparse.Namespace) -> list[Path]:
    """The dataset this run evaluates (none with ``--input``), for `data.demo.make_demo_data`: made before planning
    if it is the DEMO preset's test set and not there yet."""
    return [] if args.input else [given_or_default(args.data_path, PRESETS[args.default_data].data_path)]


def demo_hint(args: argparse.Namespace, given: str | None) -> str:
    """What to run instead when a preset's released file (``given`` None: not named on the command line) is missing:
    the same command with the demo preset, which works offline."""
    if given is not None or args.default_data == DEMO:
        return ""
    command = ["python code/inference.py"]
    if args.input:
        command += [f"--input {args.input}"] + ([f"--output {args.output}"] if args.output else [])
    return f"; to try it offline with the shipped demo model: {' '.join(command)} --default_data DEMO"


def plan_restoration(args: argparse.Namespace, model_path: Path, border_default: bool, crop: bool) -> Restoration:
    """The restoration settings of either mode (``border_default``: whether a run of this mode restores the border
    frames unless told otherwise)."""
    check_model_file(model_path, demo_hint(args, args.model_path))
    onnx = getattr(args, "backend", PYTORCH) == ONNXRUNTIME
    return Restoration(
        model_path=model_path,
        n_stages=pick_onnx_n_stages(model_path, args.n_stages) if onnx else pick_n_stages(model_path, args.n_stages),
        border_mode=pick_border(args.border, args.border_mode, border_default),
        crop=crop,
        window=args.window,
        self_ensemble=args.self_ensemble,
        tile=args.tile,
        tile_overlap=pick_tiles(args.tile, args.tile_overlap),
    )


def plan_evaluation(
    args: argparse.Namespace, preset: Preset, model_path: Path, execution: Execution, metrics: Metrics
) -> Plan:
    """The videos of a dataset (``--data_path`` or the preset's), checked, and where their results go."""
    data_path = given_or_default(args.data_path, preset.data_path)
    result_path = given_or_default(args.result_path, preset.result_path)
    showcase = preset.showcase if args.showcase is None else args.showcase
    if args.output:
        raise UserError("--output goes with --input; evaluation writes to --result_path")
    if args.codec is not None or args.quality is not None:
        raise UserError("--codec and --quality go with --input and a video --output; evaluation writes frames")
    check_dataset_folder(data_path, demo_hint(args, args.data_path))
    layout = detect_layout(data_path) if args.layout == AUTO else args.layout
    only = [name.strip() for name in args.videos.split(",") if name.strip()] if args.videos else None
    gopro_blur = args.gopro_blur or GOPRO_BLUR
    videos = find_videos(data_path, layout, split=args.split, gopro_blur=gopro_blur, only=only)
    if args.gopro_blur is not None and layout != "gopro":
        raise UserError(f"--gopro_blur goes with the gopro layout; {data_path} has the {layout} layout")
    restoration = plan_restoration(args, given_or_default(args.model_path, preset.model_path), preset.border, True)
    check_folder_target(result_path, "--result_path")
    check_not_in_dataset(result_path, data_path, layout)

    jobs, inputs, files = [], [], []
    for video in videos:
        source = folder_source(video.name, video.blur)
        folder = video.blur[0].parent  # named in the errors
        if video.gt is not None:
            gt_size = check_same_size(video.gt, str(video.gt[0].parent))
            if gt_size != source.size:
                raise UserError(
                    f"{folder}: blurred frames are {source.size[1]}x{source.size[0]}, but the sharp frames in "
                    f"{video.gt[0].parent} are {gt_size[1]}x{gt_size[0]}"
                )
        check_size(str(folder), source.size, crop=True, scored=video.gt is not None, crop_border=metrics.crop_border)
        targets = frames_with_output(len(source), restoration.border_mode, str(folder), restoration.n_stages)
        frames_dir = result_path / video.name if args.save_image else None
        inputs += video.blur + (video.gt or [])
        video_files = []
        if frames_dir is not None:
            check_folder_target(frames_dir, "--result_path")
            video_files += [frames_dir / f"{source.frame_names[index]}.png" for index in targets]
        if showcase:
            names = [source.frame_names[index] for index in targets]
            video_files += [result_path / SHOWCASE_DIR / name for name in ShowcaseWriter.file_names(video.name, names)]
        jobs.append(Job(source, video.gt, targets, frames_dir, None, tuple(video_files)))
        files += video_files
    check_no_overwrite(inputs, files, "--result_path")
    if args.result_path is None:
        check_default_place(result_path, result_path / RESULTS_NAME, data_path, "--result_path")
    return Plan(
        task=Evaluation(
            data_path=data_path,
            result_path=result_path,
            save_image=args.save_image,
            layout=layout,
            split=args.split,
            gopro_blur=gopro_blur,
            videos=only,
        ),
        jobs=jobs,
        restoration=restoration,
        execution=execution,
        metrics=metrics,
        destination=Destination(
            report_dir=result_path,
            log_prefix=LOG_PREFIX,
            results_path=result_path / RESULTS_NAME,
            showcase_dir=result_path / SHOWCASE_DIR if showcase else None,
            files=tuple(files),
            option="--result_path",
            meta={INPUT_META: str(data_path)},
        ),
    )


def records_folder(output: Path) -> Path:
    """Where the log, results.json and the records for --resume of a run writing the video file ``output`` go, so
    that nothing but the video lands in the user's folder: ``infer_results/records/<file name>-<hash of its path>``
    in the repository, or under ``$CDVD_TSP_RECORDS`` where that is set."""
    digest = hashlib.sha256(str(output).encode()).hexdigest()[:10]
    given = os.environ.get(RECORDS_ENV)
    root = Path(given).expanduser().resolve() if given else from_repo(RECORDS_DIR)
    return root / f"{output.name}-{digest}"


def check_video_target(output: Path, records: Path) -> None:
    """An existing file at ``--output`` is replaced only if a run of this project wrote it (its claim in
    ``records``, `run.claim_video`); anything else there is refused."""
    if not output.exists() and not output.is_symlink():
        return
    if not output.is_file() or output.is_symlink():
        raise UserError(f"--output {output}: is not a regular file (a link, a device...); give another name")
    if claimed_output(records) != str(output):
        raise UserError(
            f"--output {output}: exists and was not written by this project; give another name or move it away"
        )


def claimed_output(records: Path) -> str | None:
    try:
        document = json.loads((records / CLAIM_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document.get("output") if isinstance(document, dict) else None


def default_output(source: FolderSource | VideoSource) -> Path:
    if isinstance(source, VideoSource):
        suffix = source.path.suffix if is_video_path(source.path) else ".mp4"
        return from_repo(f"infer_results/{source.path.stem}_deblurred{suffix}")
    return from_repo(f"infer_results/{source.name}_deblurred")


def plan_input(
    args: argparse.Namespace, preset: Preset, model_path: Path, execution: Execution, metrics: Metrics
) -> Plan:
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
        ("--gopro_blur", args.gopro_blur is not None),
        ("--videos", args.videos is not None),
    ):
        if given:
            raise UserError(f"{flag} goes with a dataset (--data_path); leave it out with --input")
    input_path = Path(args.input).expanduser().resolve()
    source = open_input(input_path)
    restoration = plan_restoration(args, model_path, border_default=True, crop=False)
    check_size(str(input_path), source.size, crop=False, scored=False, crop_border=metrics.crop_border)
    targets = frames_with_output(len(source), restoration.border_mode, str(input_path), restoration.n_stages)
    output = Path(args.output).expanduser().resolve() if args.output else default_output(source)
    encoding = plan_encoding(output, source, args.codec, args.quality)

    if is_video_path(output):
        if not isinstance(source, VideoSource):
            raise UserError(f"--output {output}: a video file, but the input is a folder of frames; give a folder")
        if output.is_dir():
            raise UserError(
                f"--output {output}: is a folder, and a name ending in {output.suffix} is written as a video file; "
                "give another name"
            )
        if output == source.path:
            raise UserError(f"--output {output}: is the input video; choose another file")
        report_dir = records_folder(output)
        check_video_target(output, report_dir)
        files = []  # the video is written beside itself and renamed into place (data.video_io.VideoWriter)
        job = Job(source, None, targets, None, output, (), encoding)
        results_path, log_prefix = report_dir / RESULTS_NAME, LOG_PREFIX
    else:
        check_folder_target(output, "--output")
        files = [output / f"{source.frame_names[index]}.png" for index in targets]
        job = Job(source, None, targets, output, None, tuple(files))
        if isinstance(source, FolderSource):
            check_not_input_folder(output, input_path)
            check_no_overwrite(source.paths, files, "--output")
        report_dir, results_path, log_prefix = output, output / RESULTS_NAME, LOG_PREFIX
    if args.output is None:
        check_default_place(output, results_path, input_path, "--output")
    return Plan(
        task=Deblurring(input=input_path, output=output),
        jobs=[job],
        restoration=restoration,
        execution=execution,
        metrics=metrics,
        destination=Destination(
            report_dir=report_dir,
            log_prefix=log_prefix,
            results_path=results_path,
            showcase_dir=None,
            files=tuple(files),
            option="--output",
            meta={INPUT_META: str(input_path)},
        ),
    )


def make_plan(args: argparse.Namespace, local_rank: int = 0) -> Plan:
    """Check everything and decide what the run does; every process of a torchrun run makes the same plan (only
    the device differs: each takes the GPU of its local rank)."""
    preset = PRESETS[args.default_data]
    execution = make_execution(args, pick_device(args.device, local_rank), evaluation=not args.input)
    check_metrics(args.metric_channel, args.crop_border)
    metrics = Metrics(channel=args.metric_channel, crop_border=args.crop_border)
    model_path = given_or_default(args.model_path, preset.model_path)
    plan_mode = plan_input if args.input else plan_evaluation
    return plan_mode(args, preset, model_path, execution, metrics)


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
