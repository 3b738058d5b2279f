"""Between host and device without waiting: frame copies, a marker for "these copies are done", the model's clock.

On CUDA the main thread never waits for the GPU here: input frames are pinned (in the reader's thread) and copied
with ``non_blocking=True``; outputs are copied into pinned host tensors the same way, and an event recorded after
those copies (`Ready`) is what a worker thread waits on before it reads them. The model is timed with CUDA events,
read once they have completed. On the CPU every copy is the tensor itself and the clock is ``time.perf_counter``.
"""

import contextlib
import time
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor


class Ready:
    """Whether the work queued before it was made has finished (always, on the CPU)."""

    def __init__(self, event: torch.cuda.Event | None = None) -> None:
        self.event = event

    def wait(self) -> None:
        """Block this thread (only this one) until that work is done."""
        if self.event is not None:
            self.event.synchronize()


class Transfer:
    """Copies and timing for one device."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"

    def host_frame(self, rgb: np.ndarray) -> Tensor:
        """An H x W x 3 uint8 image as a host tensor that the device can copy without waiting (pinned on CUDA)."""
        tensor = torch.from_numpy(np.require(rgb, requirements="CW"))  # a read-only frame (a caller's) copied
        return tensor.pin_memory() if self.cuda else tensor

    def to_device(self, host: Tensor) -> Tensor:
        return host.to(self.device, non_blocking=True)

    def to_host(self, tensor: Tensor) -> Tensor:
        """A host copy of ``tensor``, complete once a later `ready` is; ``tensor`` itself on the CPU."""
        if not self.cuda:
            return tensor
        host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        host.copy_(tensor.contiguous(), non_blocking=True)
        return host

    def ready(self) -> Ready:
        """A marker of the work queued so far on this thread's current stream."""
        if not self.cuda:
            return Ready()
        event = torch.cuda.Event()
        event.record()
        return Ready(event)

    @contextlib.contextmanager
    def timed(self, spans: list) -> Iterator[None]:
        """Time the block's device work into ``spans`` (read them with `seconds` once a later `ready` is done)."""
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            spans.append((start, end))
        else:
            started = time.perf_counter()
            yield
            spans.append(time.perf_counter() - started)

    def seconds(self, spans: list) -> float:
        """The time of the blocks timed into ``spans``, in seconds."""
        if self.cuda:
            return sum(start.elapsed_time(end) for start, end in spans) / 1000.0
        return float(sum(spans))
