"""Restore frames too big for memory by overlapping tiles: every input frame is cropped at the same tile, the model
runs on the crops, and the tiles' outputs are blended with weights that ramp down across each overlap.

Two ways to use it, both with the model's call signature, so the runners need no change::

    step = TiledStep(model.restore_center, tile=256, overlap=32)     # or around accelerated_step(...)
    runner = StreamingRunner(model, step=step)                       # each stage step is tiled

    runner = WindowRunner(TiledModel(model, tile=256, overlap=32))   # the whole cascade runs per tile

    runner = TiledRunner(lambda: StreamingRunner(model, step=step), tile=256, overlap=32)
                                                                     # a streaming runner per tile (``--tile``)

`TiledRunner` (what ``inference.py --tile`` uses) keeps one runner per tile, each fed that tile of every frame,
and blends their outputs: the whole cascade per tile, as `TiledModel` does, but streamed (each tile's stage-1
outputs are reused across windows). With `TiledStep` each stage's step runs tile by tile on the
three frames it takes, and the next stage sees the blended, whole-frame result. With `TiledModel` the whole cascade
(every frame of the window, both stages) runs on one tile at a time, as tiled evaluation usually does; a
`TiledModel` also has a tiled ``restore_center``, so ``StreamingRunner(TiledModel(...))`` is the per-step form.

Memory: the model's activations are those of one tile (plus a float64 accumulator of the frame's size); the cost
grows with the overlap, by about ((tile) / (tile - overlap))^2. Tiles are ``tile`` x ``tile`` pixels (or
(height, width)), at most the frame's size, and start at multiples of 4 so that every tile sees the
restoration net's two downsamplings with the same phase as the whole frame; the last tile of a row or column ends
at the frame's edge. Frames must have sizes that are multiples of 4, as the model needs anyway (the pipeline crops
or pads them). PWC-Net resizes its input to multiples of 64, so tiles of multiples of 64 spare it a resampling.

Blending: along each axis a tile's weight is 1, ramping linearly (or by a raised cosine) to near 0 across the
overlap with each neighbour; the weights are normalised to sum to 1 at every pixel and the outputs are accumulated
in float64. So a tile as large as the frame gives the untiled output exactly, and so does any tiling of a model
that works pixel by pixel. How close the real model comes is measured by bench/bench_tiling.py.
"""

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from model.cdvd_tsp import CDVD_TSP
from model.streaming import Restored, Runner, Step

logger = logging.getLogger(__name__)

TILE_MULTIPLE = 4
"""The restoration net downsamples twice by 2 (infer.planning.SIZE_MULTIPLE): tile sizes and positions are
multiples of 4."""
BLENDS = ("linear", "cosine")


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Where the tiles of one axis start: every ``tile - overlap`` pixels, the last one ending at ``size``."""
    if tile >= size:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return sorted(set(starts))


def _ramp(length: int, blend: str) -> Tensor:
    """Weights rising from near 0 to near 1 over ``length`` pixels (centred samples: never exactly 0 or 1)."""
    position = (torch.arange(length, dtype=torch.float64) + 0.5) / length
    return position if blend == "linear" else 0.5 - 0.5 * torch.cos(math.pi * position)


def _axis_weights(starts: list[int], length: int, blend: str) -> list[Tensor]:
    """Each tile's weights along one axis: 1, ramped across its overlaps with the previous and the next tile."""
    weights = []
    for index, start in enumerate(starts):
        weight = torch.ones(length, dtype=torch.float64)
        if index > 0:
            rising = starts[index - 1] + length - start
            weight[:rising] *= _ramp(rising, blend)
        if index + 1 < len(starts):
            falling = start + length - starts[index + 1]
            weight[length - falling :] *= _ramp(falling, blend).flip(0)
        weights.append(weight)
    return weights


@dataclass(frozen=True)
class Tile:
    top: int
    left: int
    height: int
    width: int
    weight: Tensor
    """[height, width] float64: this tile's share of each of its pixels (the shares of all tiles sum to 1)."""

    def crop(self, image: Tensor) -> Tensor:
        return image[..., self.top : self.top + self.height, self.left : self.left + self.width]


def plan_tiles(height: int, width: int, tile: tuple[int, int], overlap: int, blend: str = "linear") -> list[Tile]:
    """The tiles of a ``height`` x ``width`` frame, row by row, with normalised blending weights."""
    rows = tile_starts(height, tile[0], overlap)
    columns = tile_starts(width, tile[1], overlap)
    tile_height, tile_width = min(tile[0], height), min(tile[1], width)
    row_weights = _axis_weights(rows, tile_height, blend)
    column_weights = _axis_weights(columns, tile_width, blend)
    total = torch.zeros(height, width, dtype=torch.float64)
    raw = []
    for top, row_weight in zip(rows, row_weights, strict=True):
        for left, column_weight in zip(columns, column_weights, strict=True):
            weight = row_weight[:, None] * column_weight[None, :]
            total[top : top + tile_height, left : left + tile_width] += weight
            raw.append((top, left, weight))
    return [
        Tile(top, left, tile_height, tile_width, weight / total[top : top + tile_height, left : left + tile_width])
        for top, left, weight in raw
    ]


class Tiler:
    """Runs a function of same-sized frames tile by tile and blends what it returns (a tensor, or a tuple of
    tensors and Nones such as `CDVD_TSP.forward`'s)."""

    def __init__(self, tile: int | tuple[int, int], overlap: int = 32, blend: str = "linear") -> None:
        size = (tile, tile) if isinstance(tile, int) else tuple(tile)
        if len(size) != 2 or any(side < TILE_MULTIPLE or side % TILE_MULTIPLE for side in size):
            raise ValueError(f"tile sizes must be positive multiples of {TILE_MULTIPLE}, got {tile}")
        if overlap < 0 or overlap % TILE_MULTIPLE or overlap >= min(size):
            raise ValueError(
                f"overlap must be a multiple of {TILE_MULTIPLE} from 0 to less than the tile size, got {overlap}"
            )
        if blend not in BLENDS:
            raise ValueError(f"blend must be one of {', '.join(BLENDS)}, got {blend!r}")
        self.tile: tuple[int, int] = (int(size[0]), int(size[1]))
        self.overlap = overlap
        self.blend = blend
        self._plans: dict[tuple[int, int, torch.device], list[Tile]] = {}

    def tiles(self, height: int, width: int, device: torch.device) -> list[Tile]:
        if height % TILE_MULTIPLE or width % TILE_MULTIPLE:
            raise ValueError(
                f"tiled frames must have sizes that are multiples of {TILE_MULTIPLE}, got {height}x{width}"
            )
        key = (height, width, device)
        if key not in self._plans:
            plan = plan_tiles(height, width, self.tile, self.overlap, self.blend)
            self._plans[key] = [
                Tile(tile.top, tile.left, tile.height, tile.width, tile.weight.to(device)) for tile in plan
            ]
            logger.info(
                "tiling %dx%d frames: %d tiles of %dx%d, overlap %d", width, height, len(plan), plan[0].width,
                plan[0].height, self.overlap,
            )  # fmt: skip
        return self._plans[key]

    def __call__(self, function: Callable[..., object], *frames: Tensor) -> object:
        """``function(*crops)`` for every tile, blended into outputs of the frames' size."""
        height, width = frames[0].shape[-2:]
        if any(frame.shape[-2:] != (height, width) for frame in frames):
            raise ValueError("tiled frames must all have one size")
        tiles = self.tiles(height, width, frames[0].device)
        sums: list[Tensor | None] | None = None
        single = False
        dtypes: list[torch.dtype | None] = []
        for tile in tiles:
            result = function(*(tile.crop(frame) for frame in frames))
            outputs = [result] if isinstance(result, Tensor) else list(result)
            if sums is None:
                single = isinstance(result, Tensor)
                sums = [
                    None
                    if output is None
                    else output.new_zeros((*output.shape[:-2], height, width), dtype=torch.float64)
                    for output in outputs
                ]
                dtypes = [None if output is None else output.dtype for output in outputs]
            for total, output in zip(sums, outputs, strict=True):
                if total is not None:
                    tile.crop(total).add_(output.to(torch.float64) * tile.weight)
        assert sums is not None
        blended = [None if total is None else total.to(dtype) for total, dtype in zip(sums, dtypes, strict=True)]
        return blended[0] if single else tuple(blended)


class TiledStep:
    """A per-stage step (previous, center, following) -> restored center, run tile by tile and blended."""

    def __init__(self, step: Step, tile: int | tuple[int, int], overlap: int = 32, blend: str = "linear") -> None:
        self.step = step
        self.tiler = Tiler(tile, overlap, blend)

    def __call__(self, previous: Tensor, center: Tensor, following: Tensor) -> Tensor:
        result = self.tiler(self.step, previous, center, following)
        assert isinstance(result, Tensor)
        return result


class TiledModel:
    """``model`` with its call signature (``[B, 2T + 1, C, H, W]`` -> `CDVD_TSP.forward`'s tuple), every tile run
    through the whole cascade; its ``restore_center`` is the tiled step, for the streaming runner."""

    def __init__(self, model: CDVD_TSP, tile: int | tuple[int, int], overlap: int = 32, blend: str = "linear") -> None:
        self.model = model
        self.tiler = Tiler(tile, overlap, blend)
        self.n_sequence = model.n_sequence
        self.n_stages = model.n_stages
        self.restore_center = TiledStep(model.restore_center, self.tiler.tile, overlap, blend)

    def __call__(self, x: Tensor) -> tuple[Tensor | None, ...]:
        result = self.tiler(self.model, x)
        assert isinstance(result, tuple)
        return result


class TiledRunner:
    """A runner (model/streaming.py) made of one ``new_runner()`` per tile, each fed its tile of every frame; their
    outputs are blended into whole frames. The tiles are planned from the first frame's size (one runner per video).
    """

    def __init__(
        self, new_runner: Callable[[], Runner], tile: int | tuple[int, int], overlap: int = 32, blend: str = "linear"
    ) -> None:
        self.new_runner = new_runner
        self.tiler = Tiler(tile, overlap, blend)
        self.tiles: list[Tile] = []
        self.runners: list[Runner] = []
        self.size: tuple[int, int] | None = None

    @property
    def latency(self) -> int:
        return (self.runners[0] if self.runners else self.new_runner()).latency

    def push(self, frame: Tensor, tag: object = None) -> Restored | None:
        """Push every tile of ``frame`` [B, C, H, W]; returns the blended output once one is complete."""
        height, width = frame.shape[-2:]
        if self.size is None:
            self.size = (height, width)
            self.tiles = self.tiler.tiles(height, width, frame.device)
            self.runners = [self.new_runner() for _ in self.tiles]
        elif self.size != (height, width):
            raise ValueError(f"a tiled runner restores frames of one size: {self.size}, then {(height, width)}")
        outputs = [runner.push(tile.crop(frame), tag) for tile, runner in zip(self.tiles, self.runners, strict=True)]
        done = [output is not None for output in outputs]
        if not any(done):
            return None
        if not all(done):
            raise RuntimeError("the tiles' runners went out of step (they must all have the same latency)")
        first = outputs[0].image
        total = first.new_zeros((*first.shape[:-2], height, width), dtype=torch.float64)
        for tile, output in zip(self.tiles, outputs, strict=True):
            tile.crop(total).add_(output.image.to(torch.float64) * tile.weight)
        return Restored(outputs[0].tag, total.to(first.dtype))
