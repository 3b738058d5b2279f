"""The model ready to restore videos: the one core under inference.py (evaluation and ``--input``, one process or
torchrun's) and the Python API (`cdvd_tsp.Deblurrer`).

A `Restorer` is the loaded model with the run's `Restoration` (border, window, tiles, self-ensemble) and
`Execution` (device, precision, step options); it makes each video's runner (`new_runner`, infer/runners.py) and
its frame conversions (`preparer`, infer/conversion.py). `Restorer.restore` is the whole of it in one loop, frames
in and frames out; the inference pipeline (infer/pipeline.py) runs the same runner and conversions with reading,
writing and scoring overlapped, so both give the same bytes for the same frames.
"""

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from cdvd_tsp.infer.checks import RELEASED_N_STAGES
from cdvd_tsp.infer.conversion import FramePreparer
from cdvd_tsp.infer.execution import ONNXRUNTIME, Execution
from cdvd_tsp.infer.outputs import NonFiniteOutput
from cdvd_tsp.infer.planning import Plan, Restoration
from cdvd_tsp.infer.runners import runner_factory
from cdvd_tsp.infer.transfer import Transfer
from cdvd_tsp.model.cdvd_tsp import CDVD_TSP
from cdvd_tsp.model.checkpoint import load_weights
from cdvd_tsp.model.ensemble import TimeReversal, backward_outputs
from cdvd_tsp.model.onnx_step import OnnxModel
from cdvd_tsp.model.streaming import Runner, with_border
from cdvd_tsp.utils.precision import tf32_switched


def load_model(path: Path, device: torch.device, n_stages: int = RELEASED_N_STAGES) -> CDVD_TSP:
    """The model of ``n_stages`` stages with the weights of ``path`` (refused if the file records another number)."""
    model = CDVD_TSP(n_sequence=2 * n_stages + 1)
    load_weights(model, path)
    return model.to(device).eval()


def padded(items: Iterable, restoration: Restoration) -> Iterator:
    """``items`` (a video's frames, in order) with the border frames ``restoration`` asks for (none without a
    border)."""
    mode = restoration.border_mode
    return iter(items) if mode is None else with_border(items, restoration.n_stages, mode)


@contextlib.contextmanager
def on_device(execution: Execution) -> Iterator[None]:
    """The run's device as this thread's current one, with the precision's TF32 switch (CUDA)."""
    if execution.device.type != "cuda":
        yield
        return
    torch.cuda.set_device(execution.device)
    with tf32_switched(execution.precision.tf32):
        yield


class Restorer:
    """``model`` restoring frames as ``restoration`` and ``execution`` say (see the module's docstring)."""

    def __init__(self, model: CDVD_TSP, restoration: Restoration, execution: Execution) -> None:
        self.model = model
        self.restoration = restoration
        self.execution = execution
        self.new_runner: Callable[[], Runner] = runner_factory(model, restoration, execution)
        """A new runner for each video (one accelerated step shared by all of them)."""

    @classmethod
    def load(cls, restoration: Restoration, execution: Execution) -> "Restorer":
        """The model of ``restoration.model_path`` on ``execution.device`` (strict, ``weights_only``, NaN and inf
        refused, the recorded number of stages); with the onnxruntime backend, the exported step
        (model/onnx_step.py) in its place."""
        if execution.backend == ONNXRUNTIME:
            onnx = OnnxModel(restoration.model_path, threads=execution.threads)
            return cls(onnx, restoration, execution)  # type: ignore[arg-type]
        model = load_model(restoration.model_path, execution.device, restoration.n_stages)
        return cls(model, restoration, execution)

    def serves(self, plan: Plan) -> bool:
        """Whether this restores frames as ``plan`` says (its model, device, precision and step)."""
        mine, theirs = self.execution, plan.execution
        return self.restoration == plan.restoration and (mine.device, mine.precision, mine.step_options) == (
            theirs.device,
            theirs.precision,
            theirs.step_options,
        )

    def preparer(self, size: tuple[int, int]) -> FramePreparer:
        """The conversions of a video's frames of ``size`` (height, width)."""
        return FramePreparer(size, self.restoration.crop)

    def runner(self, backwards: Iterable[tuple[Tensor, int]] | None = None) -> Runner:
        """A video's runner; with time reversal (x16), ``backwards`` are its prepared frames last first (padded),
        restored here first."""
        runner = self.new_runner()
        if not self.restoration.time_reversal:
            return runner
        if backwards is None:
            raise ValueError("time reversal needs the video's frames backwards")
        return TimeReversal(runner, backward_outputs(self.new_runner(), backwards))

    def restore(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Restore a video: H x W x 3 uint8 frames (all of one size) in, in order, and each frame's output out as
        H x W x 3 uint8, as soon as it is complete. Only a few frames are held, except with time reversal (x16),
        which runs the video backwards first and so holds all of it. A non-finite output is refused. The model runs
        in inference mode on its device; between outputs the caller's code runs as it was."""
        frames = iter(frames)
        first = next(frames, None)
        if first is None:
            return
        prepare, transfer = self.preparer(first.shape[:2]), Transfer(self.execution.device)
        indexed: Iterable[tuple[int, Tensor]] = (
            (index, prepare.tensor(transfer.to_device(transfer.host_frame(prepare.image(rgb)))))
            for index, rgb in enumerate(itertools.chain([first], frames))
        )
        backwards = None
        if self.restoration.time_reversal:
            indexed = list(indexed)
            backwards = padded([(tensor, index) for index, tensor in reversed(indexed)], self.restoration)
        with on_device(self.execution), torch.inference_mode():
            runner = self.runner(backwards)
        for index, tensor in padded(indexed, self.restoration):
            with on_device(self.execution), torch.inference_mode():
                restored = runner.push(tensor, index)
                if restored is None:
                    continue
                if not bool(torch.isfinite(restored.image).all()):
                    raise NonFiniteOutput("frames", str(restored.tag), self.execution.precision.name)
                output = prepare.output(restored.image).cpu().numpy()
            yield output
