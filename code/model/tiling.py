"""Restore frames too big for memory by overlapping tiles: every input frame is cropped at the same tiles, a runner
per tile restores its crops, and the tiles' outputs are blended with weights that ramp down across each overlap.

`TiledRunner` (what ``inference.py --tile`` uses) is a `FanOut` runner (model/streaming.py) with one inner runner per
tile, each fed that tile of every frame::

    runner = TiledRunner(lambda: StreamingRunner(model, step=step), tile=256, overlap=32)

so the whole cascade runs per tile, as tiled evaluation usually does, and still streams (each tile's flows and
stage-1 outputs are reused across windows). `blend_tiles` puts the tiles' outputs together; `Tiler` plans the
tiles of a frame size once.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from cdvd_tsp.model.streaming import SIZE_MULTIPLE, FanOut, Runner

logger = logging.getLogger(__name__)

DEFAULT_OVERLAP = 32
"""Pixels that neighbouring tiles share unless told otherwise (``inference.py --tile_overlap``)."""
LINEAR = "linear"
BLENDS = (LINEAR, "cosine")
"""How a tile's weight ramps across an overlap: linearly (the default) or by a raised cosine."""


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
    return position if blend == LINEAR else 0.5 - 0.5 * torch.cos(math.pi * position)


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


def plan_tiles(height: int, width: int, tile: tuple[int, int], overlap: int, blend: str = LINEAR) -> list[Tile]:
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


def blend_tiles(tiles: list[Tile], images: list[Tensor], height: int, width: int) -> Tensor:
    """The outputs ``images`` of ``tiles`` (in order) as one ``height`` x ``width`` image: each weighted by its tile's
    share, summed in float64, returned in the outputs' dtype."""
    first = images[0]
    total = first.new_zeros((*first.shape[:-2], height, width), dtype=torch.float64)
    for tile, image in zip(tiles, images, strict=True):
        tile.crop(total).add_(image.to(torch.float64) * tile.weight)
    return total.to(first.dtype)


class Tiler:
    """The tiles of ``tile`` x ``tile`` pixels (or (height, width)) overlapping by ``overlap``, planned once per
    frame size and device."""

    def __init__(self, tile: int | tuple[int, int], overlap: int = DEFAULT_OVERLAP, blend: str = LINEAR) -> None:
        size = (tile, tile) if isinstance(tile, int) else tuple(tile)
        if len(size) != 2 or any(side < SIZE_MULTIPLE or side % SIZE_MULTIPLE for side in size):
            raise ValueError(f"tile sizes must be positive multiples of {SIZE_MULTIPLE}, got {tile}")
        if overlap < 0 or overlap % SIZE_MULTIPLE or overlap >= min(size):
            raise ValueError(
                f"overlap must be a multiple of {SIZE_MULTIPLE} from 0 to less than the tile size, got {overlap}"
            )
        if blend not in BLENDS:
            raise ValueError(f"blend must be one of {', '.join(BLENDS)}, got {blend!r}")
        self.tile: tuple[int, int] = (int(size[0]), int(size[1]))
        self.overlap = overlap
        self.blend = blend
        self._plans: dict[tuple[int, int, torch.device], list[Tile]] = {}

    def tiles(self, height: int, width: int, device: torch.device) -> list[Tile]:
        if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
            raise ValueError(
                f"tiled frames must have sizes that are multiples of {SIZE_MULTIPLE}, got {height}x{width}"
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


class TiledRunner(FanOut):
    """A runner made of one ``new_runner()`` per tile, each fed its tile of every frame; their outputs are blended
    into whole frames. The tiles are planned from the first frame's size (one runner per video)."""

    parts_name = "tiles"

    def __init__(
        self,
        new_runner: Callable[[], Runner],
        tile: int | tuple[int, int],
        overlap: int = DEFAULT_OVERLAP,
        blend: str = LINEAR,
    ) -> None:
        super().__init__(new_runner)
        self.tiler = Tiler(tile, overlap, blend)
        self.tiles: list[Tile] = []
        self.size: tuple[int, int] | None = None

    def split(self, frame: Tensor) -> list[Tensor]:
        """The tiles of ``frame`` [B, C, H, W]; every frame of a video has the first one's size."""
        height, width = frame.shape[-2:]
        if self.size is None:
            self.tiles = self.tiler.tiles(height, width, frame.device)
            self.size = (height, width)
        elif self.size != (height, width):
            raise ValueError(f"a tiled runner restores frames of one size: {self.size}, then {(height, width)}")
        return [tile.crop(frame) for tile in self.tiles]

    def join(self, images: Sequence[Tensor]) -> Tensor:
        assert self.size is not None
        return blend_tiles(self.tiles, list(images), *self.size)
