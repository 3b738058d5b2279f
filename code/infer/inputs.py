"""One video's frames as the pipeline pushes them through its runner.

`VideoInput` (a context manager) reads the blurred frames in order, a few ahead in a background thread
(infer/reader.py), prepares them (infer/conversion.py), pads the border as the plan says (`with_border`) and hands
out each as the model's tensor with its frame index, the runner's tag. The blurred frame of an index (on the host
and on the device) is kept until the output of that index takes it (`take`); the sharp frames of the outputs are
read ahead in order too (`sharp`). `backwards` gives the frames last first, padded alike, for the backward pass of
the x16 self-ensemble.
"""

import contextlib
import itertools
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import torch
from torch import Tensor

from cdvd_tsp.data.frames import read_rgb
from cdvd_tsp.data.video_io import FolderSource
from cdvd_tsp.infer.conversion import FramePreparer
from cdvd_tsp.infer.planning import Job, Restoration
from cdvd_tsp.infer.reader import read_ahead
from cdvd_tsp.infer.restorer import padded
from cdvd_tsp.infer.transfer import Transfer

READ_AHEAD = 4
"""Frames decoded ahead of the model, per stream (blurred, sharp)."""


class VideoInput:
    """The frames of ``job``'s video for the runner (see the module's docstring); ``threads`` False reads them in
    the calling thread (the serial path)."""

    def __init__(
        self, job: Job, prepare: FramePreparer, transfer: Transfer, restoration: Restoration, threads: bool = True
    ) -> None:
        self.job = job
        self.prepare = prepare
        self.transfer = transfer
        self.restoration = restoration
        self.ahead = READ_AHEAD if threads else 0
        self.kept: dict[int, tuple[Tensor, Tensor]] = {}
        """Pushed frames by index (host, device) until their output takes them."""
        self.stack = contextlib.ExitStack()

    def __enter__(self) -> "VideoInput":
        blurred = self.stack.enter_context(
            read_ahead(self._blurred(), self.ahead, "infer-read-blurred", self._on_reader_start)
        )
        self.pushed = padded(blurred, self.restoration)
        self.sharp_frames = None
        if self.job.gt is not None:
            sharp = read_ahead(self._sharp(self.job.gt), self.ahead, "infer-read-sharp", self._on_reader_start)
            self.sharp_frames = self.stack.enter_context(sharp)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stack.__exit__(kind, error, traceback)

    def _on_reader_start(self) -> None:
        if self.transfer.cuda:  # pinned memory belongs to the current device, which is per thread
            torch.cuda.set_device(self.transfer.device)

    def _blurred(self) -> Iterator[tuple[int, Tensor]]:
        with contextlib.closing(self.job.source.frames()) as frames:
            for index, rgb in enumerate(frames):
                yield index, self.transfer.host_frame(self.prepare.image(rgb))

    def _sharp(self, paths: list[Path]) -> Iterator[tuple[int, Tensor]]:
        for index in self.job.targets:
            yield index, self.transfer.host_frame(self.prepare.image(read_rgb(paths[index])))

    def next_frame(self) -> tuple[int, Tensor] | None:
        """The next frame to push (the border ones repeated): its index and the model's tensor on the device; None
        after the last."""
        item = next(self.pushed, None)
        if item is None:
            return None
        index, host = item
        frame = self.transfer.to_device(host)
        self.kept[index] = (host, frame)
        return index, self.prepare.tensor(frame)

    def take(self, index: int) -> tuple[Tensor, Tensor]:
        """The blurred frame of output ``index`` (host, device). Outputs come in index order, so the frames of
        earlier indices (those without an output) are let go too."""
        frames = self.kept.pop(index)
        for earlier in [kept for kept in self.kept if kept < index]:
            del self.kept[earlier]
        return frames

    def sharp(self, index: int) -> Tensor | None:
        """The sharp frame of output ``index`` on the host (None without ground truth)."""
        if self.sharp_frames is None:
            return None
        sharp_index, host = next(self.sharp_frames)
        if sharp_index != index:
            raise RuntimeError(f"sharp frame {sharp_index} read for output {index}")
        return host

    def backwards(self) -> Iterator[tuple[Tensor, int]]:
        """The frames last first, padded like the forward pass: (the model's tensor, index) pairs. A folder's frames
        are read last first; a video file is decoded and its frames kept (uint8) to be fed backwards."""
        source = self.job.source
        if isinstance(source, FolderSource):
            indexed: list = [(index, None) for index in range(len(source))]
        else:
            with contextlib.closing(source.frames()) as decoded:
                indexed = list(itertools.islice(enumerate(decoded), len(source)))

        def frames() -> Iterator[tuple[Tensor, int]]:
            for index, rgb in reversed(indexed):
                image = read_rgb(source.paths[index]) if isinstance(source, FolderSource) else rgb
                host = self.transfer.host_frame(self.prepare.image(image))
                yield self.prepare.tensor(self.transfer.to_device(host)), index

        return padded(frames(), self.restoration)
