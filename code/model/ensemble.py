"""Self-ensemble ("+" results): the model run on flipped, transposed and time-reversed copies of a video, each output
transformed back and all of them averaged (as MMagic's SpatialTemporalEnsemble and the flip_seq of DSTNet and
CDVD-TSPNL do).

The transforms: the 8 symmetries of the square (`DIHEDRAL`: identity, the two flips, the 180-degree rotation, and
each of these after a transposition, which swaps height and width), optionally each also with the video played
backwards. Cost: one full model evaluation per transform, so 8x the plain run, 16x with time reversal (2x with time
reversal alone: ``transforms=(IDENTITY,)``). Memory on the device barely grows: the runs take turns, each keeping
only its runner's few queued frames.

Streaming. `SelfEnsemble` is a runner (``push(frame, tag) -> Restored | None``, model/streaming.py), a `FanOut` with
one inner runner per transform, each fed its transformed frame; its outputs and tags come out exactly when the plain
runner's would. A caller makes it per video from the factory it already has::

    new_runner = lambda: SelfEnsemble(base_factory)            # base_factory: () -> StreamingRunner(model, step)

Time reversal cannot stream forwards: the first output of the backward run is the video's last frame. It is done
in two passes: `backward_outputs` runs the video backwards first and keeps each output by its tag (on the host by
default: one restored frame per video frame, in float32), then `TimeReversal` wraps the forward runner and averages
each forward output with the stored backward one of the same tag::

    backward = backward_outputs(new_runner(), with_border(reversed(indexed_frames), half, mode))
    runner = TimeReversal(new_runner(), backward)              # then push the frames forwards, tagged alike

The tag must say which frame a push is (the inference pipeline's tags are frame indices). Every border padding of
model/streaming.py commutes with reversal (`with_border` of the reversed frames is the reverse of `with_border` of
the frames), so each pass pads as usual. Frames of a folder can be read backwards directly; a video file has to be
decoded and its frames kept (uint8, on the host) to be fed backwards.

Non-square frames under a transposition have their height and width swapped, so a runner with CUDA graphs captures
two shapes (model/acceleration.py keeps two).
"""

import logging
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from cdvd_tsp.model.streaming import FanOut, Restored, Runner

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Transform:
    """A symmetry of the square on [..., H, W] tensors: transpose (H <-> W), then flip rows, then flip columns."""

    transpose: bool = False
    flip_vertical: bool = False
    flip_horizontal: bool = False

    @property
    def name(self) -> str:
        parts = [
            part
            for part, used in (
                ("transpose", self.transpose),
                ("vflip", self.flip_vertical),
                ("hflip", self.flip_horizontal),
            )
            if used
        ]
        return "+".join(parts) or "identity"

    def apply(self, image: Tensor) -> Tensor:
        if self.transpose:
            image = image.transpose(-2, -1)
        if self.flip_vertical:
            image = image.flip(-2)
        if self.flip_horizontal:
            image = image.flip(-1)
        return image.contiguous()

    def invert(self, image: Tensor) -> Tensor:
        """The inverse of `apply` (each step undone in reverse order; every step is its own inverse)."""
        if self.flip_horizontal:
            image = image.flip(-1)
        if self.flip_vertical:
            image = image.flip(-2)
        if self.transpose:
            image = image.transpose(-2, -1)
        return image.contiguous()


IDENTITY = Transform()
DIHEDRAL: tuple[Transform, ...] = tuple(
    Transform(transpose, vertical, horizontal)
    for transpose in (False, True)
    for vertical in (False, True)
    for horizontal in (False, True)
)
"""The 8 symmetries of the square, identity first."""


def mean(images: Sequence[Tensor]) -> Tensor:
    """The mean by pairwise sums: for 2, 4, 8 or 16 equal images it returns that image exactly."""
    if not images:
        raise ValueError("the mean of no images")
    count, level = len(images), list(images)
    while len(level) > 1:
        pairs = [level[index] + level[index + 1] for index in range(0, len(level) - 1, 2)]
        level = pairs + ([level[-1]] if len(level) % 2 else [])
    return level[0] / count


class SelfEnsemble(FanOut):
    """A runner that averages ``new_runner()``'s outputs over ``transforms`` of every frame (8x the model's work
    with the default `DIHEDRAL`). Outputs and tags come out exactly when the plain runner's would."""

    parts_name = "ensemble's transforms"

    def __init__(self, new_runner: Callable[[], Runner], transforms: Sequence[Transform] = DIHEDRAL) -> None:
        if not transforms:
            raise ValueError("a self-ensemble needs at least one transform")
        super().__init__(new_runner)
        self.transforms = tuple(transforms)

    def split(self, frame: Tensor) -> list[Tensor]:
        """Every transformed copy of ``frame`` [B, C, H, W]."""
        return [transform.apply(frame) for transform in self.transforms]

    def join(self, images: Sequence[Tensor]) -> Tensor:
        """The outputs transformed back, averaged."""
        return mean([transform.invert(image) for transform, image in zip(self.transforms, images, strict=True)])


def backward_outputs(
    runner: Runner, frames_backwards: Iterable[tuple[Tensor, Hashable]], keep_on: torch.device | str | None = "cpu"
) -> dict[Hashable, Tensor]:
    """Run ``(frame, tag)`` pairs given last frame first (border-padded like the forward run) through ``runner``;
    returns each output by its tag, moved to ``keep_on`` (None: left where it is). Call under torch.no_grad."""
    outputs: dict[Hashable, Tensor] = {}
    for frame, tag in frames_backwards:
        restored = runner.push(frame, tag)
        if restored is not None:
            image = restored.image if keep_on is None else restored.image.to(keep_on)
            outputs[restored.tag] = image
    return outputs


class TimeReversal:
    """A runner: each output of ``runner`` (pushed forwards) averaged with the stored output of the same frame from
    the backward run (`backward_outputs`), matched by tag. Each stored output is released once used."""

    def __init__(self, runner: Runner, backward: Mapping[Hashable, Tensor]) -> None:
        self.runner = runner
        self.backward = dict(backward)

    @property
    def latency(self) -> int:
        return self.runner.latency

    def push(self, frame: Tensor, tag: object = None) -> Restored | None:
        restored = self.runner.push(frame, tag)
        if restored is None:
            return None
        if restored.tag not in self.backward:
            raise KeyError(f"no backward output for frame {restored.tag!r}: the backward run did not restore it")
        other = self.backward.pop(restored.tag).to(device=restored.image.device, dtype=restored.image.dtype)
        return Restored(restored.tag, mean([restored.image, other]))
