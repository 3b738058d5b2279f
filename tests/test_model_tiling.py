"""Tiled restoration: the tile layout and weights, exactness where it must be exact, and how close the demo model's
tiled output comes to the untiled one."""

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from conftest import blurred, seeded_model, sharp_frames
from infer.planning import PRESETS, SIZE_MULTIPLE
from model.cdvd_tsp import CDVD_TSP
from model.checkpoint import load_weights
from model.streaming import StreamingRunner, WindowRunner, with_border
from model.tiling import TILE_MULTIPLE, TiledModel, TiledStep, Tiler, plan_tiles, tile_starts
from utils.image import to_tensor, to_uint8
from utils.metrics import psnr
from utils.paths import from_repo

pytestmark = pytest.mark.usefixtures("single_thread")


def clip(count: int, height: int, width: int, seed: int = 0) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, height, width, generator=generator) for _ in range(count)]


def streamed(runner: StreamingRunner | WindowRunner, frames: list[Tensor], half: int = 2) -> list[Tensor]:
    with torch.no_grad():
        outputs = [runner.push(frame) for frame in with_border(frames, half)]
    return [output.image for output in outputs if output is not None]


def test_the_multiple_is_the_model_s() -> None:
    assert TILE_MULTIPLE == SIZE_MULTIPLE


@pytest.mark.parametrize(
    ("size", "tile", "overlap", "expected"),
    [(100, 200, 16, [0]), (100, 100, 16, [0]), (96, 64, 16, [0, 32]), (128, 64, 16, [0, 48, 64]), (64, 32, 0, [0, 32])],
)
def test_tiles_start_at_multiples_of_4_and_the_last_ends_at_the_edge(
    size: int, tile: int, overlap: int, expected: list[int]
) -> None:
    starts = tile_starts(size, tile, overlap)
    assert starts == expected
    assert min(tile, size) + starts[-1] == size
    assert all(start % TILE_MULTIPLE == 0 for start in starts)


@pytest.mark.parametrize("blend", ["linear", "cosine"])
@pytest.mark.parametrize(("tile", "overlap"), [((16, 16), 8), ((12, 20), 4), ((32, 24), 20), ((8, 8), 0)])
def test_the_weights_cover_every_pixel_and_sum_to_one(tile: tuple[int, int], overlap: int, blend: str) -> None:
    total = torch.zeros(40, 56, dtype=torch.float64)
    tiles = plan_tiles(40, 56, tile, overlap, blend)
    for piece in tiles:
        assert piece.weight.min().item() > 0
        total[piece.top : piece.top + piece.height, piece.left : piece.left + piece.width] += piece.weight
    assert (total - 1).abs().max().item() < 1e-12
    assert len(tiles) > 1


class PointwiseModel:
    """A stand-in whose stages work pixel by pixel, with exact float arithmetic only (no transcendental functions,
    whose vectorised and scalar code paths may round differently)."""

    n_sequence, n_stages = 5, 2

    @staticmethod
    def restore_center(previous: Tensor, center: Tensor, following: Tensor) -> Tensor:
        return 0.5 * center + 0.25 * (previous - following) * center + 0.125

    def __call__(self, x: Tensor) -> tuple[Tensor | None, ...]:
        frames = list(x.unbind(dim=1))
        first = [self.restore_center(*frames[index - 1 : index + 2]) for index in range(1, 4)]
        return (*first, self.restore_center(*first), None)


@pytest.mark.parametrize(("tile", "overlap", "blend"), [(16, 8, "linear"), ((12, 20), 4, "cosine"), (8, 0, "linear")])
def test_a_pointwise_model_is_tiled_exactly(tile: int | tuple[int, int], overlap: int, blend: str) -> None:
    frames = clip(4, 40, 56)
    model = PointwiseModel()
    plain = streamed(StreamingRunner(model), frames)  # type: ignore[arg-type]
    by_step = streamed(StreamingRunner(model, step=TiledStep(model.restore_center, tile, overlap, blend)), frames)  # type: ignore[arg-type]
    by_window = streamed(WindowRunner(TiledModel(model, tile, overlap, blend)), frames)  # type: ignore[arg-type]
    assert len(plain) == len(by_step) == len(by_window) == 4
    for expected, first, second in zip(plain, by_step, by_window, strict=True):
        assert torch.equal(first, expected) and torch.equal(second, expected)


def test_the_whole_cascade_output_tuple_is_blended() -> None:
    x = torch.stack(clip(5, 24, 32, seed=2), dim=1)
    model = PointwiseModel()
    expected, tiled = model(x), TiledModel(model, 8, 4)(x)  # type: ignore[arg-type]
    assert len(tiled) == len(expected) == 5 and tiled[-1] is None
    assert all(torch.equal(first, second) for first, second in zip(tiled[:-1], expected[:-1], strict=True))


@pytest.fixture(scope="module")
def model() -> CDVD_TSP:
    return seeded_model(seed=1)


def test_a_tile_larger_than_the_frame_is_exactly_untiled(model: CDVD_TSP) -> None:
    frames = clip(3, 16, 24, seed=3)
    plain = streamed(StreamingRunner(model), frames)
    by_step = streamed(StreamingRunner(model, step=TiledStep(model.restore_center, 64)), frames)
    by_window = streamed(WindowRunner(TiledModel(model, (16, 28), 8)), frames)
    for expected, first, second in zip(plain, by_step, by_window, strict=True):
        assert torch.equal(first, expected)
        assert (second - expected).abs().max().item() < 1e-5  # the window runner's own order of work (not tiling)


TILED_PSNR_BOUND = 40.0
"""dB between the demo model's tiled and untiled uint8 outputs at 48x64, tiles of 32 overlapping by 16; measured
49.7 to 50.1 dB (per-step tiling) and 49.7 to 50.0 (whole cascade per tile) on this test's three frames."""
TILED_DIFFERENCE_BOUND = 0.1
"""Largest difference in [0, 1] measured there: 0.048 (both ways; at a tile edge, where the model sees least)."""


def test_the_demo_model_tiled_is_close_to_untiled() -> None:
    demo = CDVD_TSP().eval()
    load_weights(demo, from_repo(PRESETS["DEMO"].model_path))
    frames = [to_tensor(blurred(frame)) for frame in sharp_frames(3, 48, 64, seed=2)]
    plain = streamed(StreamingRunner(demo), frames)
    ways: dict[str, Callable[[], StreamingRunner | WindowRunner]] = {
        "step": lambda: StreamingRunner(demo, step=TiledStep(demo.restore_center, 32, 16)),
        "cascade": lambda: WindowRunner(TiledModel(demo, 32, 16)),
    }
    for make in ways.values():
        tiled = streamed(make(), frames)
        for expected, output in zip(plain, tiled, strict=True):
            assert (output - expected).abs().max().item() < TILED_DIFFERENCE_BOUND
            assert psnr(to_uint8(output), to_uint8(expected), crop_border=0) > TILED_PSNR_BOUND


@pytest.mark.parametrize(
    ("arguments", "message"),
    [((30, 8), "multiples of 4"), ((32, 32), "overlap"), ((32, 6), "overlap"), ((32, 8, "gauss"), "blend")],
)
def test_bad_tiles_are_refused(arguments: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Tiler(*arguments)


def test_frames_of_sizes_not_multiples_of_4_are_refused() -> None:
    with pytest.raises(ValueError, match="multiples of 4"):
        TiledStep(PointwiseModel.restore_center, 8, 4)(*clip(3, 18, 24))
