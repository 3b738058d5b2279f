"""How a run makes each video's runner (model/streaming.py) from its plan: the streaming runner with the
accelerated step (made once, shared by all videos, with the plan's step options) or the window runner under autocast
(the release's way, the model's own step options), or the streaming runner with an exported step
(``--backend onnxruntime``, model/onnx_step.py), then one runner per tile
with ``--tile`` (`model.tiling.TiledRunner`) and one per transform with ``--self_ensemble``
(`model.ensemble.SelfEnsemble`, each transform tiled). Time reversal (x16) is the pipeline's: it needs a pass of
its own (infer/pipeline.py)."""

from collections.abc import Callable

import torch
from torch import Tensor

from cdvd_tsp.infer.execution import Execution
from cdvd_tsp.infer.planning import Restoration
from cdvd_tsp.model.acceleration import accelerated_step
from cdvd_tsp.model.cdvd_tsp import CDVD_TSP
from cdvd_tsp.model.ensemble import SelfEnsemble
from cdvd_tsp.model.onnx_step import OnnxModel
from cdvd_tsp.model.streaming import Restored, Runner, StreamingRunner, WindowRunner
from cdvd_tsp.model.tiling import TiledRunner
from cdvd_tsp.utils.precision import Precision, autocast


class AutocastRunner:
    """A runner whose pushes run under a precision's autocast (the window runner calls the whole model)."""

    def __init__(self, runner: Runner, precision: Precision, device: torch.device) -> None:
        self.runner = runner
        self.precision = precision
        self.device = device

    @property
    def latency(self) -> int:
        return self.runner.latency

    def push(self, frame: Tensor, tag: object = None) -> Restored | None:
        with autocast(self.precision, self.device):
            return self.runner.push(frame, tag)


def runner_factory(model: CDVD_TSP | OnnxModel, restoration: Restoration, execution: Execution) -> Callable[[], Runner]:
    """What makes a new runner for each video of the run (and for the backward pass of x16); for an exported step
    (``--backend onnxruntime``) the streaming runner calls onnxruntime's step."""
    new_runner: Callable[[], Runner]
    if isinstance(model, OnnxModel):
        exported = model
        new_runner = lambda: StreamingRunner(exported, step=exported.step)  # type: ignore[arg-type] # noqa: E731
    elif restoration.window:
        new_runner = lambda: AutocastRunner(WindowRunner(model), execution.precision, execution.device)  # noqa: E731
    else:
        step = accelerated_step(
            model,
            execution.precision,
            execution.device,
            cuda_graphs=execution.cuda_graphs,
            compile=execution.compile,
            options=execution.step_options,
        )
        new_runner = lambda: StreamingRunner(model, step=step)  # noqa: E731
    if restoration.tile is not None:
        untiled, tile, overlap = new_runner, restoration.tile, restoration.tile_overlap
        assert overlap is not None
        new_runner = lambda: TiledRunner(untiled, tile, overlap)  # noqa: E731
    if restoration.self_ensemble is not None:
        plain = new_runner
        new_runner = lambda: SelfEnsemble(plain)  # noqa: E731
    return new_runner
