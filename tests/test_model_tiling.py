"""Tiled restoration: the tile layout, the blend weights written as numbers, exactness where it must be exact (a
pointwise stand-in, a box-blur stand-in against a blend computed here), and how close the demo model's tiled output
comes to the untiled one."""

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from cdvd_tsp.infer.planning import PRESETS
from cdvd_tsp.model.cdvd_tsp import CDVD_TSP
from cdvd_tsp.model.checkpoint import load_weights
from cdvd_tsp.model.streaming import SIZE_MULTIPLE, StreamingRunner, WindowRunner, with_border
from cdvd_tsp.model.tiling import TiledRunner, Tiler, plan_tiles, tile_starts
from cdvd_tsp.utils.image import to_tensor, to_uint8
from cdvd_tsp.utils.metrics import psnr
from cdvd_tsp.utils.paths import from_repo
from conftest import blurred, run_frames, seeded_model, sharp_frames

pytestmark = pytest.mark.usefixtures("single_thread")


def clip(count: int, height: int, width: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, height, width, generator=generator, dtype=dtype) for _ in range(count)]


def streamed(runner: object, frames: list[Tensor], half: int = 2) -> list[Tensor]:
    with torch.no_grad():
        return run_frames(runner, with_border(frames, half))  # type: ignore[arg-type]


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
    assert all(start % SIZE_MULTIPLE == 0 for start in starts)


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


# The weights along one axis of tiles of 12 overlapping by 8 on 20 pixels: tiles at 0, 4 and 8, so pixels 8..11 are in
# all three. Linear ramps over 8 pixels rise through (k + 0.5) / 8; the middle tile's two ramps overlap on its pixels
# 4..7. Raw weights, then each divided by the sum of the raw weights at its pixel.
RAMP_8 = [0.0625, 0.1875, 0.3125, 0.4375, 0.5625, 0.6875, 0.8125, 0.9375]
RAW_12_8 = {
    0: [1, 1, 1, 1, 0.9375, 0.8125, 0.6875, 0.5625, 0.4375, 0.3125, 0.1875, 0.0625],
    4: [0.0625, 0.1875, 0.3125, 0.4375, 0.52734375, 0.55859375, 0.55859375, 0.52734375, 0.4375, 0.3125, 0.1875, 0.0625],
    8: [*RAMP_8, 1, 1, 1, 1],
}


def test_the_blend_weights_of_three_overlapping_tiles_are_the_ramps_written_out() -> None:
    tiles = plan_tiles(4, 20, (4, 12), 8)
    assert [(piece.top, piece.left, piece.height, piece.width) for piece in tiles] == [
        (0, 0, 4, 12),
        (0, 4, 4, 12),
        (0, 8, 4, 12),
    ]
    total = [0.0] * 20
    for left, raw in RAW_12_8.items():
        for position, value in enumerate(raw):
            total[left + position] += value
    assert total[8:12] == [1.02734375, 1.05859375, 1.05859375, 1.02734375]  # three tiles: the raw weights exceed 1
    for piece in tiles:
        expected = [value / total[piece.left + position] for position, value in enumerate(RAW_12_8[piece.left])]
        for row in piece.weight:  # one tile per column: every row has the column weights
            assert row.tolist() == pytest.approx(expected, abs=1e-15)


def test_the_last_tile_ends_at_the_edge_and_ramps_across_its_larger_overlap() -> None:
    """Tiles of 12 overlapping by 4 on 24 pixels start at 0, 8 and 12: the last one shares 8 pixels with the middle
    one, so their ramps run over 8 pixels, not 4."""
    tiles = plan_tiles(24, 4, (12, 4), 4)
    assert [piece.top for piece in tiles] == [0, 8, 12]
    columns = [piece.weight[:, 0].tolist() for piece in tiles]
    assert columns[0] == [1, 1, 1, 1, 1, 1, 1, 1, 0.875, 0.625, 0.375, 0.125]
    assert columns[1] == [0.125, 0.375, 0.625, 0.875, *RAMP_8[::-1]]
    assert columns[2] == [*RAMP_8, 1, 1, 1, 1]


def test_two_tiles_ramp_linearly_or_by_a_raised_cosine_across_their_overlap() -> None:
    """Tiles of 8 overlapping by 4 on 12 pixels: complementary ramps over the 4 shared pixels."""
    linear = plan_tiles(4, 12, (4, 8), 4, "linear")
    assert [piece.left for piece in linear] == [0, 4]
    assert linear[0].weight[0].tolist() == [1, 1, 1, 1, 0.875, 0.625, 0.375, 0.125]
    assert linear[1].weight[0].tolist() == [0.125, 0.375, 0.625, 0.875, 1, 1, 1, 1]
    cosine = plan_tiles(12, 4, (8, 4), 4, "cosine")  # the same along the rows
    rising = [0.0380602337, 0.3086582838, 0.6913417162, 0.9619397663]  # 0.5 - 0.5 cos(pi (k + 0.5) / 4)
    assert cosine[1].weight[:, 0].tolist() == pytest.approx([*rising, 1, 1, 1, 1], abs=1e-10)
    assert cosine[0].weight[:, 0].tolist() == pytest.approx([1, 1, 1, 1, *rising[::-1]], abs=1e-10)


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
    by_stream = streamed(TiledRunner(lambda: StreamingRunner(model), tile, overlap, blend), frames)  # type: ignore[arg-type]
    by_window = streamed(TiledRunner(lambda: WindowRunner(model), tile, overlap, blend), frames)  # type: ignore[arg-type]
    assert len(plain) == len(by_stream) == len(by_window) == 4
    for expected, first, second in zip(plain, by_stream, by_window, strict=True):
        assert torch.equal(first, expected) and torch.equal(second, expected)


class BoxBlurModel:
    """A stand-in that is not pointwise: each stage step box-blurs its three frames (zero padding at the edges), so
    a tile's output near its edges differs from the whole frame's, and the blend decides the result there."""

    n_sequence, n_stages = 5, 2

    @staticmethod
    def restore_center(previous: Tensor, center: Tensor, following: Tensor) -> Tensor:
        def box(image: Tensor) -> Tensor:
            return F.avg_pool2d(image, 3, stride=1, padding=1, count_include_pad=True)

        return 0.5 * box(center) + 0.3 * box(previous) + 0.2 * box(following)


def axis_weights(starts: list[int], length: int) -> list[list[float]]:
    """Each tile's linear weight along one axis, raw (not normalised), pixel by pixel: (p + 0.5) / overlap across
    the overlap with the previous tile, (length - p - 0.5) / overlap across the next one, 1 elsewhere."""
    weights = []
    for index, start in enumerate(starts):
        rising = starts[index - 1] + length - start if index > 0 else 0
        falling = start + length - starts[index + 1] if index + 1 < len(starts) else 0
        weights.append(
            [
                min(1.0, (p + 0.5) / rising if rising else 1.0)
                * min(1.0, (length - p - 0.5) / falling if falling else 1.0)
                for p in range(length)
            ]
        )
    return weights


def test_a_box_blur_model_is_tiled_as_the_blend_of_its_tiles_computed_here() -> None:
    height, width, tile, overlap = 24, 40, 16, 8
    rows, columns = [0, 8], [0, 8, 16, 24]  # tile_starts(24, 16, 8) and tile_starts(40, 16, 8)
    frames = clip(3, height, width, seed=5, dtype=torch.float64)
    model = BoxBlurModel()
    tiled = streamed(TiledRunner(lambda: StreamingRunner(model), tile, overlap), frames)  # type: ignore[arg-type]
    row_weights, column_weights = axis_weights(rows, tile), axis_weights(columns, tile)
    total = torch.zeros(height, width, dtype=torch.float64)
    weighted = [torch.zeros(1, 3, height, width, dtype=torch.float64) for _ in frames]
    for top, row_weight in zip(rows, row_weights, strict=True):
        for left, column_weight in zip(columns, column_weights, strict=True):
            weight = torch.tensor(row_weight, dtype=torch.float64)[:, None] * torch.tensor(column_weight)[None, :]
            crops = [frame[..., top : top + tile, left : left + tile] for frame in frames]
            outputs = streamed(StreamingRunner(model), crops)  # type: ignore[arg-type]
            total[top : top + tile, left : left + tile] += weight
            for sums, output in zip(weighted, outputs, strict=True):
                sums[..., top : top + tile, left : left + tile] += output * weight
    expected = [sums / total for sums in weighted]
    untiled = streamed(StreamingRunner(model), frames)  # type: ignore[arg-type]
    assert len(tiled) == len(expected) == 3
    for output, blend, whole in zip(tiled, expected, untiled, strict=True):
        assert (output - blend).abs().max().item() < 1e-12
        assert (output - whole).abs().max().item() > 1e-3  # the tiles' edges show: the blend is what is tested


@pytest.fixture(scope="module")
def model() -> CDVD_TSP:
    return seeded_model(seed=1)


def test_a_tile_larger_than_the_frame_is_exactly_untiled(model: CDVD_TSP) -> None:
    frames = clip(3, 16, 24, seed=3)
    plain = streamed(StreamingRunner(model), frames)
    by_stream = streamed(TiledRunner(lambda: StreamingRunner(model), 64), frames)
    by_window = streamed(TiledRunner(lambda: WindowRunner(model), (16, 28), 8), frames)
    for expected, first, second in zip(plain, by_stream, by_window, strict=True):
        assert torch.equal(first, expected)
        assert (second - expected).abs().max().item() < 1e-5  # the window runner's own order of work (not tiling)


TILED_PSNR_BOUND = 40.0
"""dB between the demo model's tiled and untiled uint8 outputs at 48x64, tiles of 32 overlapping by 16; measured
49.7 to 50.0 dB (whole cascade per tile) on this test's three frames."""
TILED_DIFFERENCE_BOUND = 0.1
"""Largest difference in [0, 1] measured there: 0.048 (at a tile edge, where the model sees least)."""


def test_the_demo_model_tiled_is_close_to_untiled() -> None:
    demo = CDVD_TSP().eval()
    load_weights(demo, from_repo(PRESETS["DEMO"].model_path))
    frames = [to_tensor(blurred(frame)) for frame in sharp_frames(3, 48, 64, seed=2)]
    plain = streamed(StreamingRunner(demo), frames)
    tiled = streamed(TiledRunner(lambda: StreamingRunner(demo), 32, 16), frames)
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


def test_frames_of_sizes_not_multiples_of_4_or_of_another_size_are_refused() -> None:
    runner = TiledRunner(lambda: StreamingRunner(PointwiseModel()), 8, 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="multiples of 4"):
        runner.push(clip(1, 18, 24)[0])
    runner.push(clip(1, 16, 24)[0])
    with pytest.raises(ValueError, match="frames of one size"):
        runner.push(clip(1, 24, 16)[0])
