"""Walk a video through the CDVD-TSP cascade one frame at a time.

Runners share one interface, ``push(frame, tag) -> Restored or None``: `StreamingRunner` computes every stage's
result for every frame once and keeps only the last three inputs of each stage; `WindowRunner` recomputes each window
of 2T + 1 frames from scratch with `CDVD_TSP.forward`, as the release did. Both use the model's own per-stage step
(`CDVD_TSP.restore_center`), so they cannot drift apart; the streaming runner only decides what to keep. An output
comes out T pushes after its frame went in; the runner hands back the tag that was pushed with that frame (the
inference pipeline pushes the frame's index), so callers need not count. `FanOut` is a runner made of one inner
runner per part of every frame: the self-ensemble's transformed copies (model/ensemble.py) and the tiles
(model/tiling.py) are its two kinds.

A video's first and last T frames have no full window; `with_border` pads the frames so that every frame becomes
the center of one, in one of `BORDER_MODES`: ``release`` (the published protocol, docs/faithfulness.md §9: the
first and the last T frames repeated in order), ``replicate`` (the first and the last frame repeated T times) or
``reflect`` (mirrored about the first and the last frame, which is not repeated).
"""

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import torch
from torch import Tensor

from cdvd_tsp.model.cdvd_tsp import CDVD_TSP
from cdvd_tsp.model.stages import CascadeOutputs

Item = TypeVar("Item")
Tag = TypeVar("Tag")
Step = Callable[[Tensor, Tensor, Tensor], Tensor]
"""A per-stage step: (previous, center, following) -> restored center (`CDVD_TSP.restore_center` or a compiled or
graphed form of it)."""

SIZE_MULTIPLE = 4
"""The restoration net downsamples twice by 2: the frames a runner takes (and tiles) have sizes in multiples of 4."""

RELEASE_BORDER = "release"
BORDER_MODES = (RELEASE_BORDER, "replicate", "reflect")
"""How `with_border` pads a video; ``release`` is the published protocol."""


@dataclass(frozen=True)
class Restored(Generic[Tag]):
    """An output of a runner and the tag pushed with the input frame it restores."""

    tag: Tag
    image: Tensor


class Runner(Protocol):
    """Takes frames in order and returns an output as soon as one is complete (call under torch.no_grad)."""

    @property
    def latency(self) -> int: ...

    def push(self, frame: Tensor, tag: object = None) -> Restored | None: ...


class TagQueue(Generic[Tag]):
    """The tags of the last ``latency + 1`` pushes: an output produced now restores the oldest of them."""

    def __init__(self, latency: int) -> None:
        self.tags: deque[Tag] = deque(maxlen=latency + 1)

    def add(self, tag: Tag) -> None:
        self.tags.append(tag)

    def restored(self, image: Tensor | None) -> Restored[Tag] | None:
        return None if image is None else Restored(self.tags[0], image)


class StreamingRunner:
    """Frame-by-frame cascade: each new frame costs one step per stage once the stage has three inputs.

    Stage s keeps its last three inputs; when it has three, it restores the middle one and passes the result to
    stage s + 1. The last stage's results are the outputs: the output for input frame i comes out when frame
    i + T has been pushed.
    """

    def __init__(self, model: CDVD_TSP, step: Step | None = None) -> None:
        self.model = model
        self.step = step or model.restore_center
        self.stage_inputs: list[deque[Tensor]] = [deque(maxlen=3) for _ in range(model.n_stages)]
        self.tags: TagQueue = TagQueue(self.latency)

    @property
    def latency(self) -> int:
        """How many frames after a frame its output comes out (T)."""
        return self.model.n_stages

    def push(self, frame: Tensor, tag: object = None) -> Restored | None:
        """Add the next frame [B, C, H, W]; returns the output for the frame ``latency`` pushes back, if complete."""
        self.tags.add(tag)
        result = frame
        for inputs in self.stage_inputs:
            inputs.append(result)
            if len(inputs) < 3:
                return None
            result = self.step(*inputs)
        return self.tags.restored(result)


class WindowRunner:
    """The release's way: every window of 2T + 1 frames goes through the whole cascade from scratch."""

    def __init__(self, model: CDVD_TSP) -> None:
        self.model = model
        self.window: deque[Tensor] = deque(maxlen=model.n_sequence)
        self.tags: TagQueue = TagQueue(self.latency)

    @property
    def latency(self) -> int:
        return self.model.n_stages

    def push(self, frame: Tensor, tag: object = None) -> Restored | None:
        """Add the next frame [B, C, H, W]; returns the window's output once the window is full."""
        self.tags.add(tag)
        self.window.append(frame)
        if len(self.window) < self.window.maxlen:
            return None
        outputs = self.model(torch.stack(list(self.window), dim=1))
        return self.tags.restored(CascadeOutputs.from_forward(outputs, self.model.n_stages).final)


class FanOut:
    """A runner made of one inner runner per part of every frame: `split` cuts a frame into parts, each part goes
    through its own runner (made by ``new_runner`` at the first push, one per part), and `join` makes one output of
    their outputs. The inner runners share one latency, so outputs and tags come out exactly when a plain runner's
    would. Subclasses say what the parts are (`model.ensemble.SelfEnsemble`, `model.tiling.TiledRunner`)."""

    parts_name = "parts"
    """What the parts are called in errors."""

    def __init__(self, new_runner: Callable[[], Runner]) -> None:
        self.new_runner = new_runner
        self.runners: list[Runner] = []

    @property
    def latency(self) -> int:
        return (self.runners[0] if self.runners else self.new_runner()).latency

    def split(self, frame: Tensor) -> Sequence[Tensor]:
        """The parts of ``frame`` [B, C, H, W], one per inner runner, in the same order for every frame."""
        raise NotImplementedError

    def join(self, images: Sequence[Tensor]) -> Tensor:
        """One output from the inner runners' outputs for the same frame (in the order of `split`)."""
        raise NotImplementedError

    def push(self, frame: Tensor, tag: object = None) -> Restored | None:
        """Push every part of ``frame``; returns the joined output once the inner runners give one."""
        parts = self.split(frame)
        if not self.runners:
            self.runners = [self.new_runner() for _ in parts]
        outputs = [runner.push(part, tag) for runner, part in zip(self.runners, parts, strict=True)]
        done = [output is not None for output in outputs]
        if not any(done):
            return None
        if not all(done):
            raise RuntimeError(f"the {self.parts_name}' runners went out of step (they must all have the same latency)")
        return Restored(outputs[0].tag, self.join([output.image for output in outputs]))  # type: ignore[union-attr]


def frames_needed(half: int, mode: str | None) -> int:
    """The fewest frames a video needs for every frame to get an output (``mode``), or for any output at all (None:
    no border, one full window of 2 * half + 1 frames)."""
    if mode is None:
        return 2 * half + 1
    return {"release": half, "replicate": 1, "reflect": half + 1}[mode]


def with_border(items: Iterable[Item], half: int, mode: str = RELEASE_BORDER) -> Iterator[Item]:
    """``items`` padded with ``half`` items before and after, lazily (only ``half`` + 1 items are held):

    - ``release``: [f0 .. f(half-1)] + all + [f(n-half) .. f(n-1)], the release's rule. With fewer than ``half``
      items the head and tail are shorter (as the release's list slicing gives).
    - ``replicate``: [f0] * half + all + [f(n-1)] * half.
    - ``reflect``: [f(half) .. f1] + all + [f(n-2) .. f(n-1-half)], mirrored about the first and the last item,
      which are not repeated; needs at least ``half`` + 1 items (a `ValueError` otherwise).

    Each padding commutes with reversal: padding the reversed items gives the reversed padded items.
    """
    if mode not in BORDER_MODES:
        raise ValueError(f"border mode must be one of {', '.join(BORDER_MODES)}, got {mode!r}")
    iterator = iter(items)
    kept = half + 1 if mode == "reflect" else half
    head = list(itertools.islice(iterator, max(kept, 1)))
    if mode == "reflect" and len(head) < kept:
        raise ValueError(f"reflect padding of {half} needs at least {kept} frames, got {len(head)}")
    if mode == "release":
        yield from head
    elif mode == "replicate":
        yield from head[:1] * half
    else:
        yield from reversed(head[1:])
    tail: deque[Item] = deque(maxlen=kept)
    for item in itertools.chain(head, iterator):
        tail.append(item)
        yield item
    if mode == "release":
        yield from tail
    elif mode == "replicate":
        yield from list(tail)[-1:] * half
    else:
        yield from list(reversed(tail))[1:]
