"""How the model runs: the device's backend, precision, acceleration and step layout picked from the options (or
refused with a `UserError` naming the option), gathered in an `Execution` (infer/planning.py and the Python API
make one with `make_execution`)."""

import argparse
import dataclasses
from dataclasses import dataclass

import torch

from cdvd_tsp.model.acceleration import RELEASE_OPTIONS, LayoutChoice, recommended_choice
from cdvd_tsp.model.cdvd_tsp import StepOptions
from cdvd_tsp.model.onnx_step import EXPORTED_OPTIONS
from cdvd_tsp.utils.cpu import bf16_support, thread_choice
from cdvd_tsp.utils.errors import UserError
from cdvd_tsp.utils.precision import Precision, get_precision

PYTORCH, ONNXRUNTIME = "pytorch", "onnxruntime"
BACKENDS = (PYTORCH, ONNXRUNTIME)
"""``--backend``: the model in PyTorch, or the step exported to ONNX (model/onnx_export.py) run by onnxruntime."""
ONNX_FIXED = (
    ("--window", "window", False),
    ("--compile", "compile", False),
    ("--cuda_graphs", "cuda_graphs", (None, False)),
    ("--precision", "precision", None),
    ("--release_step", "release_step", False),
    ("--channels_last", "channels_last", "auto"),
    ("--batched_flows", "batched_flows", "auto"),
    ("--flow_bf16", "flow_bf16", "auto"),
)
"""Flags of the PyTorch step that the onnxruntime backend does not take: (flag, attribute, values it accepts)."""


@dataclass(frozen=True)
class Execution:
    """Where and how fast the model runs, and how the work around it is shared out."""

    device: torch.device
    precision: Precision
    cuda_graphs: bool
    compile: bool
    step_options: StepOptions
    """How the streaming runner's step lays out its work (layouts, batched flows)."""
    workers: int
    """Threads that write and score outputs; 0: everything in the main thread."""
    threads: int
    """Torch's intra-op threads (set by infer/switches.py before the run plans)."""
    deterministic: bool
    """Deterministic algorithms (``--deterministic``, set by infer/switches.py)."""
    threads_reason: str = ""
    """Why torch has ``threads`` threads (`utils.cpu.thread_choice`)."""
    layout_reason: str = ""
    """Why the step has ``step_options`` (`pick_step_choice`)."""
    backend: str = PYTORCH
    """What computes the step: the model in PyTorch, or the exported ONNX step in onnxruntime (`BACKENDS`)."""

    @property
    def channels_last(self) -> str:
        """The ``--channels_last`` value that gives the step's layouts."""
        return channels_last_name(self.step_options)


def pick_precision(name: str | None, device: torch.device, evaluation: bool) -> Precision:
    """``--precision``, or its default: fp32 for evaluation on the CPU, and on CUDA tf32 (it leaves the published
    totals unchanged at their printed precision); for deblurring fp16 on CUDA and bf16 on a CPU that computes
    bfloat16 natively (each the fastest setting measured with a PSNR change under 0.01 dB on the DEMO set), fp32 on
    other CPUs."""
    if name is None:
        if device.type == "cuda":
            name = "tf32" if evaluation else "fp16"
        else:
            name = "bf16" if not evaluation and bf16_support().native else "fp32"
    return get_precision(name, device)


LEVER_AUTO = "auto"
"""``--channels_last`` and ``--batched_flows``: what measured fastest on the device (`recommended_choice`)."""
CHANNELS_LAST = {"off": (False, False), "restoration": (False, True), "flow": (True, False), "all": (True, True)}
"""``--channels_last``: which parts of the step run in channels_last layout, as (PWC-Net and the warps, the
restoration net)."""
BATCHED_FLOWS = {"on": True, "off": False}
"""``--batched_flows``: both flows of a step in one call of PWC-Net, or one after the other."""
FLOW_BF16 = {"on": True, "off": False}
"""``--flow_bf16``: PWC-Net in bfloat16 under ``--precision bf16``, or in float32 there."""


def channels_last_name(options: StepOptions) -> str:
    """The ``--channels_last`` value that gives ``options``' layouts."""
    layouts = (options.channels_last_flow, options.channels_last_restoration)
    return next(name for name, value in CHANNELS_LAST.items() if value == layouts)


def pick_step_options(args: argparse.Namespace, device: torch.device, precision: Precision) -> StepOptions:
    """The options of `pick_step_choice`."""
    return pick_step_choice(args, device, precision).options


def pick_step_choice(args: argparse.Namespace, device: torch.device, precision: Precision) -> LayoutChoice:
    """How the streaming runner's step lays out its work, and why: the release's way with ``--release_step`` or
    ``--window`` (which runs the whole model the release's way), otherwise `recommended_choice` for the device and
    precision (on the CPU: its bfloat16 unit and instruction set), each lever overridden by ``--channels_last``,
    ``--batched_flows`` and ``--flow_bf16`` when given.

    Evaluation and deblurring have the same default: the recommended options left the DEMO set's printed totals
    unchanged on the CPU (26.043 dB / 0.7715; the full values within 1.2e-6 dB, docs/benchmarks-inference.md);
    on CUDA they are the release's options until the GPU sweep measures others faster.
    """
    given = [
        f"--{flag} {value}"
        for flag, value in (
            ("channels_last", args.channels_last),
            ("batched_flows", args.batched_flows),
            ("flow_bf16", args.flow_bf16),
        )
        if value != LEVER_AUTO
    ]
    if given and (args.release_step or args.window):
        reason = "runs the release's step" if args.release_step else "runs the whole model the release's way"
        raise UserError(f"{given[0]}: {'--release_step' if args.release_step else '--window'} {reason}; leave it out")
    if args.flow_bf16 == "on" and precision.name != "bf16":
        raise UserError(
            f"--flow_bf16 on: runs PWC-Net in bfloat16 under --precision bf16, and this run is in "
            f"{precision.name}; leave it out"
        )
    if args.release_step or args.window:
        return LayoutChoice(RELEASE_OPTIONS, "--release_step" if args.release_step else "--window")
    recommended = recommended_choice(device, precision)
    options = recommended.options
    if args.channels_last != LEVER_AUTO:
        flow, restoration = CHANNELS_LAST[args.channels_last]
        options = dataclasses.replace(options, channels_last_flow=flow, channels_last_restoration=restoration)
    if args.batched_flows != LEVER_AUTO:
        options = dataclasses.replace(options, batch_flows=BATCHED_FLOWS[args.batched_flows])
    if args.flow_bf16 != LEVER_AUTO:
        options = dataclasses.replace(options, flow_in_bf16=FLOW_BF16[args.flow_bf16])
    if given:
        return LayoutChoice(options, f"{', '.join(given)}; otherwise {recommended.reason}")
    return recommended


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


def check_backend(args: argparse.Namespace) -> str:
    """``--backend``; for onnxruntime: the package importable, the CPU, and none of the PyTorch step's flags (the
    exported file fixes the step and its dtype)."""
    if args.backend == PYTORCH:
        return PYTORCH
    from cdvd_tsp.model.onnx_step import import_onnxruntime

    import_onnxruntime()
    if args.device == "cuda":
        raise UserError("--backend onnxruntime runs on the CPU; leave out --device cuda (or use --backend pytorch)")
    for flag, name, accepted in ONNX_FIXED:
        value = getattr(args, name)
        if value not in (accepted if isinstance(accepted, tuple) else (accepted,)):
            raise UserError(f"{flag} applies to the PyTorch backend; leave it out with --backend onnxruntime")
    return ONNXRUNTIME


def make_execution(args: argparse.Namespace, device: torch.device, evaluation: bool) -> Execution:
    """Where and how fast the model runs on ``device``: the backend, the precision (its default for ``evaluation``
    or for deblurring), the acceleration flags and the step's layouts, checked. The onnxruntime backend runs the
    exported step on the CPU, in float32."""
    backend = check_backend(args)
    onnx = backend == ONNXRUNTIME
    device = torch.device("cpu") if onnx else device
    cuda_graphs, compile_step = (False, False) if onnx else pick_acceleration(args, device)
    precision = pick_precision("fp32" if onnx else args.precision, device, evaluation)
    exported = LayoutChoice(EXPORTED_OPTIONS, "the exported step's")
    layout = exported if onnx else pick_step_choice(args, device, precision)
    threads = thread_choice()
    return Execution(
        device=device,
        precision=precision,
        cuda_graphs=cuda_graphs,
        compile=compile_step,
        step_options=layout.options,
        workers=check_workers(args.workers),
        threads=threads.threads,
        deterministic=args.deterministic,
        threads_reason=threads.reason,
        layout_reason=layout.reason,
        backend=backend,
    )
