"""How a run makes each video's runner from its plan: streaming (one accelerated step shared by every video) or the
window runner under autocast, tiled with --tile, ensembled with --self_ensemble (each transform tiled)."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import Tensor

from cdvd_tsp.infer.execution import Execution
from cdvd_tsp.infer.planning import Restoration
from cdvd_tsp.infer.runners import AutocastRunner, runner_factory
from cdvd_tsp.model.acceleration import RELEASE_OPTIONS, AutocastStep
from cdvd_tsp.model.cdvd_tsp import StepOptions
from cdvd_tsp.model.ensemble import DIHEDRAL, SelfEnsemble
from cdvd_tsp.model.streaming import StreamingRunner, WindowRunner, with_border
from cdvd_tsp.model.tiling import TiledRunner
from cdvd_tsp.utils.precision import PRECISIONS
from conftest import run_frames

PLAIN = Restoration(
    model_path=Path("model.pt"),
    n_stages=2,
    border_mode="release",
    crop=True,
    window=False,
    self_ensemble=None,
    tile=None,
    tile_overlap=None,
)
CPU = Execution(
    device=torch.device("cpu"),
    precision=PRECISIONS["fp32"],
    cuda_graphs=False,
    compile=False,
    step_options=RELEASE_OPTIONS,
    workers=0,
    threads=1,
    deterministic=False,
)


class Pointwise:
    """A stand-in model: what the runners need (stages, window length, the step, the whole cascade)."""

    n_stages, n_sequence = 2, 5

    def __init__(self) -> None:
        self.options_used: list[StepOptions | None] = []

    def restore_center(
        self, previous: Tensor, center: Tensor, following: Tensor, options: StepOptions | None = None
    ) -> Tensor:
        self.options_used.append(options)
        return 0.5 * center + 0.25 * (previous - following) * center + 0.125

    def __call__(self, x: Tensor) -> tuple[Tensor | None, ...]:
        frames = list(x.unbind(dim=1))
        first = [self.restore_center(*frames[index - 1 : index + 2]) for index in range(1, 4)]
        return (*first, self.restore_center(*first), None)


def test_the_streaming_runners_of_a_run_share_one_accelerated_step() -> None:
    new_runner = runner_factory(Pointwise(), PLAIN, CPU)  # type: ignore[arg-type]
    first, second = new_runner(), new_runner()
    assert isinstance(first, StreamingRunner) and isinstance(first.step, AutocastStep)
    assert first is not second and first.step is second.step


def test_the_window_runner_runs_under_the_precision_s_autocast() -> None:
    runner = runner_factory(Pointwise(), replace(PLAIN, window=True), CPU)()  # type: ignore[arg-type]
    assert isinstance(runner, AutocastRunner) and isinstance(runner.runner, WindowRunner)
    assert runner.precision is CPU.precision and runner.latency == 2


def test_tiles_wrap_the_plain_runner_and_the_ensemble_wraps_the_tiles() -> None:
    tiled = replace(PLAIN, tile=8, tile_overlap=4)
    runner = runner_factory(Pointwise(), tiled, CPU)()  # type: ignore[arg-type]
    assert isinstance(runner, TiledRunner) and (runner.tiler.tile, runner.tiler.overlap) == ((8, 8), 4)
    ensemble = runner_factory(Pointwise(), replace(tiled, self_ensemble="x16"), CPU)()  # type: ignore[arg-type]
    assert isinstance(ensemble, SelfEnsemble) and ensemble.transforms == DIHEDRAL
    frames = [torch.rand(1, 3, 12, 16, generator=torch.Generator().manual_seed(index)) for index in range(3)]
    with torch.no_grad():
        outputs = run_frames(ensemble, with_border(frames, 2))
        plain = run_frames(StreamingRunner(Pointwise()), with_border(frames, 2))  # type: ignore[arg-type]
    assert all(isinstance(inner, TiledRunner) for inner in ensemble.runners) and len(ensemble.runners) == 8
    for output, expected in zip(outputs, plain, strict=True):  # a pointwise model has every symmetry and tiles exactly
        assert (output - expected).abs().max().item() < 1e-6


@pytest.mark.parametrize("window", [False, True])
def test_a_runner_gives_the_model_s_outputs(window: bool) -> None:
    frames = [torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(index)) for index in range(5)]
    runner = runner_factory(Pointwise(), replace(PLAIN, window=window), CPU)()  # type: ignore[arg-type]
    with torch.no_grad():
        (output,) = run_frames(runner, frames)
        expected = Pointwise()(torch.stack(frames, dim=1))[-2]
    assert expected is not None and (output - expected).abs().max().item() < 1e-6


def test_the_streaming_step_runs_with_the_plan_s_step_options() -> None:
    model = Pointwise()
    options = StepOptions(batch_flows=True, channels_last_restoration=True)
    frames = [torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(index)) for index in range(5)]
    with torch.no_grad():
        run_frames(runner_factory(model, PLAIN, replace(CPU, step_options=options))(), frames)  # type: ignore[arg-type]
    assert model.options_used and all(used == options for used in model.options_used)
