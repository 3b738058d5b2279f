"""The command line of inference.py: the release's flags, --input/--output, and the speed settings."""

import argparse
from collections.abc import Sequence

from cdvd_tsp.data.layouts import AUTO, GOPRO_BLURS, LAYOUTS
from cdvd_tsp.data.video_io import CODEC_CHOICES
from cdvd_tsp.infer.checks import RELEASED_N_STAGES
from cdvd_tsp.infer.execution import BACKENDS, BATCHED_FLOWS, CHANNELS_LAST, FLOW_BF16, LEVER_AUTO, PYTORCH
from cdvd_tsp.infer.planning import ENSEMBLES, GOPRO_BLUR, PRESETS, SHOWCASE_DIR, SPATIAL_ENSEMBLE
from cdvd_tsp.model.streaming import BORDER_MODES, RELEASE_BORDER
from cdvd_tsp.model.tiling import DEFAULT_OVERLAP
from cdvd_tsp.utils.cli import CommandParser
from cdvd_tsp.utils.cpu import usable_cores
from cdvd_tsp.utils.metrics import CHANNELS, CROP_BORDER
from cdvd_tsp.utils.precision import PRECISIONS

MIN_WORKERS, MAX_WORKERS = 4, 16


def default_workers(cores: int | None = None) -> int:
    """Writer threads by default: every usable core but two (the model's thread and the readers), at least
    `MIN_WORKERS` and at most `MAX_WORKERS`. A 720p PNG takes about 0.1 s to write on one core, so a model at 20 ms
    a frame needs 10 or more writers to be waited for by none (docs/inference.md)."""
    cores = usable_cores() if cores is None else cores
    return max(MIN_WORKERS, min(MAX_WORKERS, cores - 2))


def build_parser() -> CommandParser:
    """inference.py's parser, its options grouped by what they are about."""
    parser = CommandParser(
        usage="%(prog)s [--input PATH [--output PATH]] [--default_data {DVD,GOPRO,DEMO}] [options]",
        description="CDVD-TSP inference: evaluate on a dataset (blur/ and gt/) or deblur a folder of frames or a "
        "video.",
        epilog="examples:\n"
        "  python code/inference.py --default_data DEMO                      # evaluate the demo model (no download)\n"
        "  python code/inference.py --input clip.mp4 --output sharp.mp4      # deblur a video (released DVD model)\n"
        "  python code/inference.py --input frames/ --default_data DEMO      # deblur frames with the demo model\n"
        "docs/inference.md has the details.",
    )
    read = parser.add_argument_group("what to read")
    read.add_argument(
        "--input",
        help="a folder of frames or a video file to deblur (no ground truth); without it, "
        "the dataset of --default_data or --data_path is evaluated (the default)",
    )
    read.add_argument(
        "--default_data",
        choices=list(PRESETS),
        default="DVD",
        help="preset: its model, dataset and results folder (DEMO: the demo model and data, no download)",
    )
    read.add_argument(
        "--data_path", help="dataset folder holding blur/<video>/ and, for metrics, gt/<video>/ (default: the preset's)"
    )
    read.add_argument(
        "--layout",
        choices=[AUTO, *LAYOUTS],
        default=AUTO,
        help="how --data_path is organised: release (blur/, gt/), gopro (GOPRO_Large), dvd (quantitative_datasets), "
        "bsd; auto: detected",
    )
    read.add_argument(
        "--split", help="gopro and bsd: the split to evaluate when --data_path holds several (default test)"
    )
    read.add_argument(
        "--gopro_blur", choices=GOPRO_BLURS, help=f"gopro: the blurred frames to use (default {GOPRO_BLUR})"
    )
    read.add_argument("--videos", help="only these videos, comma-separated, e.g. the DVD test list (default: all)")

    write = parser.add_argument_group("what to write")
    write.add_argument(
        "--output",
        help="with --input: a folder for the frames, or a video file (.mp4, ...) for a video input (default: "
        "infer_results/<input name>_deblurred)",
    )
    write.add_argument(
        "--codec",
        choices=CODEC_CHOICES,
        help="a video --output's codec: h264 (the default of .mp4, .m4v, .mov, .mkv), vp9 (.webm's, .mkv); "
        "a .gif is GIF-coded",
    )
    write.add_argument(
        "--quality",
        type=int,
        help="a video --output's constant rate factor: 0 best (lossless) to 51 (h264) or 63 (vp9) worst; "
        "default near-transparent: h264 16, vp9 20",
    )
    write.add_argument(
        "--result_path", help="evaluation: where frames, the log and results.json go (default: infer_results/<preset>)"
    )
    write.add_argument("--save_image", dest="save_image", action="store_true", default=True, help="save frames")
    write.add_argument("--no_save_image", dest="save_image", action="store_false", help="score only (evaluation)")
    write.add_argument(
        "--showcase",
        dest="showcase",
        action="store_true",
        default=None,
        help=f"also write side-by-side pictures (blurred | deblurred | sharp) and a GIF per video to {SHOWCASE_DIR}/ "
        "(default: on for the DEMO preset)",
    )
    write.add_argument("--no_showcase", dest="showcase", action="store_false", help="no side-by-side pictures")
    write.add_argument(
        "--resume",
        action="store_true",
        help="continue the run that was stopped before its end in the same place, with the same settings: the "
        "videos it finished are kept; with none to continue, the run starts",
    )

    model = parser.add_argument_group("the model")
    model.add_argument("--model_path", help="checkpoint to load (default: the preset's model in pretrain_models/)")
    model.add_argument(
        "--n_stages",
        type=int,
        help="the cascade's stages T (2T + 1 frames) of a checkpoint that does not record them (default "
        f"{RELEASED_N_STAGES}, the released files'); main.py's checkpoints record theirs",
    )
    model.add_argument(
        "--backend",
        choices=BACKENDS,
        default=PYTORCH,
        help="pytorch: the model in PyTorch; onnxruntime: the step exported by export_model.py --format onnx "
        "(--model_path the .onnx file), run by onnxruntime on the CPU (pip install onnxruntime)",
    )
    model.add_argument(
        "--window", action="store_true", help="recompute every 2T+1-frame window (the release's way; same output)"
    )

    protocol = parser.add_argument_group("evaluation protocol")
    protocol.add_argument(
        "--metric_channel",
        choices=CHANNELS,
        default="rgb",
        help="rgb: PSNR/SSIM over the three channels (the protocol); y: on the BT.601 luma (BasicSR's test_y)",
    )
    protocol.add_argument(
        "--crop_border",
        type=int,
        default=CROP_BORDER,
        help="pixels left out of the metrics on every side (the protocol's)",
    )
    protocol.add_argument(
        "--border",
        dest="border",
        action="store_true",
        default=None,
        help="restore every frame (default: on with --input; off in evaluation, the protocol)",
    )
    protocol.add_argument(
        "--no_border", dest="border", action="store_false", help="leave out the first and last T frames (T stages)"
    )
    protocol.add_argument(
        "--border_mode",
        choices=BORDER_MODES,
        help=f"with --border, how the frames before the first and after the last are made up: {RELEASE_BORDER} "
        "(default, the published protocol: the first and last T frames repeated in order), replicate (the first "
        "and last frame T times), reflect (mirrored about the first and last frame)",
    )
    protocol.add_argument(
        "--self_ensemble",
        nargs="?",
        const=SPATIAL_ENSEMBLE,
        choices=ENSEMBLES,
        help="average the model over the 8 flips/transpositions (x8, 8x the time) or those and time reversal "
        "(x16, 16x); --self_ensemble alone is x8 (default: off)",
    )
    protocol.add_argument(
        "--tile", type=int, help="restore frames in tiles of N x N pixels, a multiple of 4 (default: whole frames)"
    )
    protocol.add_argument(
        "--tile_overlap", type=int, help=f"with --tile: overlap of neighbouring tiles (default {DEFAULT_OVERLAP})"
    )

    speed = parser.add_argument_group("device and speed")
    speed.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA if available")
    speed.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        help="numeric precision (default: on CUDA tf32 for evaluation, fp16 with --input; on the CPU fp32, and "
        "bf16 with --input where the CPU computes bfloat16 natively)",
    )
    speed.add_argument(
        "--cuda_graphs",
        dest="cuda_graphs",
        action="store_true",
        default=None,
        help="replay the streaming runner's step from CUDA graphs (default on CUDA)",
    )
    speed.add_argument("--no_cuda_graphs", dest="cuda_graphs", action="store_false", help="no CUDA graphs")
    speed.add_argument("--compile", action="store_true", help="torch.compile the streaming runner's step")
    speed.add_argument(
        "--channels_last",
        choices=[LEVER_AUTO, *CHANNELS_LAST],
        default=LEVER_AUTO,
        help="which parts of the streaming runner's step run in channels_last layout: the restoration net, the flow "
        "net (PWC-Net and the warps), all or off (NCHW, the release's); auto: what measured fastest on this device",
    )
    speed.add_argument(
        "--batched_flows",
        choices=[LEVER_AUTO, *BATCHED_FLOWS],
        default=LEVER_AUTO,
        help="on: both flows of a stage step in one call of the flow net; off: one after the other (the release's); "
        "auto: what measured fastest on this device",
    )
    speed.add_argument(
        "--flow_bf16",
        choices=[LEVER_AUTO, *FLOW_BF16],
        default=LEVER_AUTO,
        help="with --precision bf16, on: PWC-Net in bfloat16 too; off: PWC-Net in float32 (the default elsewhere); "
        "auto: what measured fastest within the accuracy bound on this device (on: CPUs with native bfloat16)",
    )
    speed.add_argument(
        "--release_step",
        action="store_true",
        help="the streaming runner's step the release's way: NCHW, the flows one after the other",
    )
    speed.add_argument(
        "--threads",
        type=int,
        help="threads the model computes with on the CPU (default: OMP_NUM_THREADS or MKL_NUM_THREADS if set, "
        "else the cores this process may use that are idle at start-up, at least one)",
    )
    workers = default_workers()
    speed.add_argument(
        "--workers",
        type=int,
        default=workers,
        help=f"threads that write and score outputs (default: the usable cores but two, {MIN_WORKERS} to "
        f"{MAX_WORKERS}; here {workers}; 0: all in the main thread)",
    )
    speed.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic algorithms: bit-identical reruns on CUDA too (cuDNN without benchmark-mode choices)",
    )

    parser.add_argument_group(
        "distributed",
        "torchrun --nproc_per_node N code/inference.py ... shares the videos among N processes (one GPU each,\n"
        "or several machines), with the same options in every process.",
    )
    return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)
