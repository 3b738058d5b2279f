"""The per-stage step a runner calls, made fast for a device: layout options, autocast, torch.compile, CUDA graphs.

`accelerated_step` wraps `CDVD_TSP.restore_center`; the model itself is never changed (its parameters keep their
layout, its `step_options` their values), so the parity tests keep testing the plain model. A streamed video calls
the step with the same shapes frame after frame, which is what a CUDA graph needs: one graph launch replaces the
~1,500 kernel launches of a step, which otherwise keep the GPU waiting on the CPU.

`recommended_choice` picks the `StepOptions` measured fastest for a device and precision, on the CPU by its
bfloat16 unit and instruction set (docs/benchmarks-inference.md); where nothing was measured faster, the
release's way.
"""

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from cdvd_tsp.model.cdvd_tsp import CDVD_TSP, StepOptions
from cdvd_tsp.model.streaming import Step
from cdvd_tsp.utils.cpu import bf16_support, cpu_capability, this_bf16_unit
from cdvd_tsp.utils.precision import Precision, autocast

logger = logging.getLogger(__name__)

GRAPH_WARMUP_CALLS = 2
"""Eager calls per input shape before a capture: they let cuDNN pick its algorithms, the cost-volume kernel pass
its check and torch.compile compile (none of which may happen during a capture)."""
MAX_GRAPHS = 2
"""Graphs kept at once (one per frame size); each holds its own memory pool, so older sizes are dropped."""
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", "reduce-overhead")
"""torch.compile modes `accelerated_step` takes. ``reduce-overhead`` replays the compiled step from torch's own
CUDA graphs, so it excludes ``cuda_graphs`` (the project's graphs); the others can be captured in the project's."""

RELEASE_OPTIONS = StepOptions()
"""The release's way: flows one after the other, NCHW everywhere."""
CHANNELS_LAST_RESTORATION = StepOptions(channels_last_restoration=True)
BF16_FLOW = StepOptions(flow_in_bf16=True)
BF16_FLOW_CHANNELS_LAST_RESTORATION = StepOptions(channels_last_restoration=True, flow_in_bf16=True)


@dataclass(frozen=True)
class Measured:
    options: StepOptions
    evidence: str
    """What was measured, in a few words (recorded with a run's settings as the reason for its layout)."""


MEASURED_OPTIONS: dict[tuple[str, str], Measured] = {
    # Intel Xeon with AMX-BF16 (the issue 21 measurements, 2 vCPUs, one thread, 448x256); PWC-Net was slower in
    # channels_last (0.37-0.56 s against 0.31-0.44 s per flow) in both precisions
    # PWC-Net in bf16 too (issue 31, bench/bench_cpu_flow_bf16.py, the Xeon, one thread, 448x256): 0.51 s a flow
    # against 0.95 s in float32, the outputs at least 57.9 dB from those with PWC-Net in float32, the DEMO set's
    # PSNR 26.0444 against 26.0445 dB
    ("AMX-BF16", "bf16"): Measured(
        BF16_FLOW_CHANNELS_LAST_RESTORATION,
        "Intel Xeon, AMX-BF16: the bf16 restoration net 0.20 s in channels_last, 0.54 s NCHW; PWC-Net in bf16 0.51 s "
        "a flow against 0.95 s in fp32, the DEMO set's PSNR unchanged to 0.0001 dB",
    ),
    ("AVX512", "fp32"): Measured(
        CHANNELS_LAST_RESTORATION, "Intel Xeon, AVX512: the fp32 restoration net 1.34 s in channels_last, 1.95 s NCHW"
    ),
    # AMD Zen 4 (AVX512-BF16 without AMX, issue 31, one thread, the restoration net at 448x256), speed-ups over NCHW
    # fp32: channels_last fp32 1.14x, bf16 NCHW 3.87x, bf16 channels_last 2.39x; without tile units the bf16
    # kernels of the reordered (channels_last) layout are the slower ones
    ("AVX512-BF16", "bf16"): Measured(
        BF16_FLOW,
        "AMD Zen 4, AVX512-BF16 without AMX: the bf16 restoration net 3.87x fp32's speed NCHW, 2.39x in channels_last; "
        "PWC-Net in bf16 (measured on the Xeon: 1.85x faster, the DEMO set's PSNR unchanged to 0.0001 dB)",
    ),
    ("AVX512-BF16", "fp32"): Measured(
        CHANNELS_LAST_RESTORATION, "AMD Zen 4, AVX512-BF16: the fp32 restoration net 1.14x faster in channels_last"
    ),
    # AMD EPYC Zen 3, AVX2 (docs/benchmarks-inference.md, the CPU sweep, one thread): the restoration net 1.2 times
    # faster in channels_last from 960x540 up, the same at 640x360 and below; PWC-Net the same in either layout, and
    # slower with its two flows batched
    ("AVX2", "fp32"): Measured(
        CHANNELS_LAST_RESTORATION, "AMD EPYC Zen 3, AVX2: the fp32 restoration net 1.2x faster in channels_last"
    ),
}
"""(CPU kind, precision) -> the options measured fastest there; `recommended_choice` reads it. A CPU's kinds
(`cpu_kinds`), most specific first: its bfloat16 unit (``AMX-BF16``, ``AVX512-BF16``; in bf16 the unit decides the
layout: tile units favour channels_last, vector dot products NCHW), then PyTorch's CPU capability (``AVX512``,
``AVX2``: the float32 kernels'). A GPU's kind is ``cuda``."""


@dataclass(frozen=True)
class LayoutChoice:
    options: StepOptions
    reason: str
    """Why: the measurement it follows, or that none was made (recorded with a run's settings)."""


def cpu_kinds() -> tuple[str, ...]:
    """This CPU's kinds in `MEASURED_OPTIONS`, most specific first: its bfloat16 unit, if any, then PyTorch's CPU
    capability."""
    unit = this_bf16_unit()
    return (unit, cpu_capability()) if unit else (cpu_capability(),)


def recommended_choice(device: torch.device, precision: Precision) -> LayoutChoice:
    """The `StepOptions` measured fastest for ``device`` and ``precision``, and why; the release's way where no
    other was measured faster (so far: every CUDA setting, which the GPU sweep of bench/bench_inference.py
    measures)."""
    if device.type != "cpu":
        return LayoutChoice(RELEASE_OPTIONS, f"the release's: nothing measured faster on {device.type} yet")
    kinds = cpu_kinds()
    if precision.name == "bf16" and not bf16_support().native:
        return LayoutChoice(RELEASE_OPTIONS, "the release's: no native bf16 here")  # refused by utils.precision
    for kind in kinds:
        measured = MEASURED_OPTIONS.get((kind, precision.name))
        if measured is not None:
            return LayoutChoice(measured.options, f"for {kind} in {precision.name}, measured ({measured.evidence})")
    return LayoutChoice(
        RELEASE_OPTIONS, f"the release's: nothing measured faster for {'/'.join(kinds)} in {precision.name}"
    )


def recommended_options(device: torch.device, precision: Precision) -> StepOptions:
    """The options of `recommended_choice`."""
    return recommended_choice(device, precision).options


class AutocastStep:
    """``restore`` (``model.restore_center`` with options, or a compiled form of it) under the autocast of
    ``precision``.

    The output has the inputs' dtype: under autocast the restoration net ends in float16 or bfloat16, and casting
    back keeps every stage's inputs in one dtype (one CUDA graph serves all stages, the frames keep full precision).
    ``clone_output`` copies the output, for steps whose output memory is reused by their next call (torch.compile's
    ``reduce-overhead`` graphs).
    """

    def __init__(self, restore: Step, precision: Precision, device: torch.device, clone_output: bool = False) -> None:
        self.restore = restore
        self.precision = precision
        self.device = device
        self.clone_output = clone_output

    def __call__(self, previous: Tensor, center: Tensor, following: Tensor) -> Tensor:
        with autocast(self.precision, self.device, cache=False):
            output = self.restore(previous, center, following).to(center.dtype)
        return output.clone() if self.clone_output else output


class CapturedStep:
    """One CUDA graph of a step for one input shape: inputs are copied into its buffers, the graph is replayed, and
    a copy of its output is returned (the next replay overwrites the output buffer).

    Before the capture the step runs once on the buffers themselves, on a side stream as PyTorch's recipe asks:
    whatever that call needs the first time (a torch.compile guard failing on the buffers' strides and compiling
    again, a lazy initialisation) happens outside the capture.
    """

    def __init__(self, step: Step, inputs: tuple[Tensor, Tensor, Tensor]) -> None:
        self.inputs = tuple(tensor.clone() for tensor in inputs)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step(*self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: the pipeline's reader threads may allocate pinned memory meanwhile, which a global capture
        # would take for an error
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.output = step(*self.inputs)

    def __call__(self, *inputs: Tensor) -> Tensor:
        for buffer, tensor in zip(self.inputs, inputs, strict=True):
            buffer.copy_(tensor)
        self.graph.replay()
        return self.output.clone()


class GraphedStep:
    """``step`` replayed from CUDA graphs, one per input shape, after `GRAPH_WARMUP_CALLS` eager calls; eager
    whenever autograd is on."""

    def __init__(self, step: Step, capture: Callable[[Step, tuple[Tensor, Tensor, Tensor]], Step] = CapturedStep):
        self.step = step
        self.capture = capture
        self.graphs: dict[tuple, Step] = {}
        self.eager_calls: Counter[tuple] = Counter()

    def __call__(self, previous: Tensor, center: Tensor, following: Tensor) -> Tensor:
        if torch.is_grad_enabled():  # a graph cannot record autograd: eager, and no warm-up either
            return self.step(previous, center, following)
        key = tuple((tensor.shape, tensor.dtype, tensor.device) for tensor in (previous, center, following))
        captured = self.graphs.get(key)
        if captured is None:
            if self.eager_calls[key] < GRAPH_WARMUP_CALLS:
                self.eager_calls[key] += 1
                return self.step(previous, center, following)
            if len(self.graphs) >= MAX_GRAPHS:
                del self.graphs[next(iter(self.graphs))]
            captured = self.graphs[key] = self.capture(self.step, (previous, center, following))
            logger.info("captured a CUDA graph of the stage step for inputs of %s", list(center.shape))
        return captured(previous, center, following)


def bound_step(model: CDVD_TSP, options: StepOptions) -> Step:
    """``model.restore_center`` with ``options`` fixed, as a three-argument step."""

    def restore(previous: Tensor, center: Tensor, following: Tensor) -> Tensor:
        return model.restore_center(previous, center, following, options)

    return restore


def compiled(model: CDVD_TSP, options: StepOptions = RELEASE_OPTIONS, mode: str = "default") -> Step:
    """``model.restore_center`` with ``options`` through torch.compile (the first call of each shape compiles: a
    minute or more on a GPU; Inductor's cache makes a second process's compilation shorter)."""
    return torch.compile(bound_step(model, options), dynamic=False, mode=mode)


def accelerated_step(
    model: CDVD_TSP,
    precision: Precision,
    device: torch.device,
    cuda_graphs: bool = False,
    compile: bool = False,
    options: StepOptions | None = None,
    compile_mode: str = "default",
) -> Step:
    """The step for a runner on ``device``: ``model.restore_center`` with ``options`` (default: the model's
    `step_options`) under ``precision``, optionally compiled (``compile_mode``) and/or replayed from CUDA graphs
    (CUDA only). A compiled step in the project's graphs is compiled by the warm-up calls and captured after them.
    """
    if cuda_graphs and device.type != "cuda":
        raise ValueError(f"CUDA graphs need a CUDA device, not {device}")
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"compile mode {compile_mode!r}: use one of {', '.join(COMPILE_MODES)}")
    own_graphs = compile and compile_mode == "reduce-overhead"
    if own_graphs and cuda_graphs:
        raise ValueError("torch.compile's reduce-overhead mode replays its own CUDA graphs: leave out cuda_graphs")
    options = model.step_options if options is None else options
    restore = compiled(model, options, compile_mode) if compile else bound_step(model, options)
    step: Step = AutocastStep(restore, precision, device, clone_output=own_graphs)
    return GraphedStep(step) if cuda_graphs else step
