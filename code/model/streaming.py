"""Walk a video through the CDVD-TSP cascade one frame at a time.

Two runners with one interface, ``push(frame, tag) -> Restored or None``: `StreamingRunner` computes every stage's
result for every frame once and keeps only the last three inputs of each stage; `WindowRunner` recomputes each window
of 2T + 1 frames from scratch with `CDVD_TSP.forward`, as the release did. Both use the model's own per-stage step
(`CDVD_TSP.restore_center`), so they cannot drift apart; the streaming runner only decides what to keep. An output
comes out some pushes after its frame went in; the runner hands back the tag that was pushed with that frame, so
callers need not count.

The border rule of the evaluation protocol (docs/faithfulness.md §9) is `with_border`: the first and the last
``half`` frames are repeated in order, so every frame of the video becomes the center of a window.
"""

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import torch
from torch import Tensor

from model.cdvd_tsp import CDVD_TSP
from model.stages import CascadeOutputs

Item = TypeVar("Item")
Tag = TypeVar("Tag")
Step = Callable[[Tensor, Tensor, Tensor], Tensor]
"""A per-stage step: (previous, center, following) -> restored center (`CDVD_TSP.restore_center` or a compiled or
graphed form of it)."""


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


def with_border(items: Iterable[Item], half: int) -> Iterator[Item]:
    """The release's border padding: [f0 .. f(half-1)] + all frames + [f(n-half) .. f(n-1)], lazily.

    Only the first and the last ``half`` items are held. Needs at least ``half`` items to be meaningful; with
    fewer, the head and tail are simply shorter (as the release's list slicing gives).
    """
    iterator = iter(items)
    head = list(itertools.islice(iterator, half))
    yield from head
    yield from head
    tail: deque[Item] = deque(head, maxlen=half)
    for item in iterator:
        tail.append(item)
        yield item
    yield from tail


def run(runner: Runner, frames: Iterable[Tensor]) -> Iterator[Tensor]:
    """Push every frame through ``runner`` and yield the outputs in order."""
    for frame in frames:
        restored = runner.push(frame)
        if restored is not None:
            yield restored.image
