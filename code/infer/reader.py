"""Read ahead: an iterator run in a background thread, a bounded number of items ahead of its consumer.

Decoding a frame (PIL, ffmpeg) releases the GIL, so a thread hides it behind the model. Items come out in order;
an error raised while reading (a corrupt frame's `UserError`) is raised in the consuming thread, at the place of
the item that failed. Leaving the context stops the thread and joins it, whether or not everything was read.
`read_ahead` with nothing ahead reads in the consuming thread instead (the serial path, no thread).
"""

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Generic, TypeVar

Item = TypeVar("Item")

_ITEM, _END, _FAILED = range(3)
_POLL_SECONDS = 0.05
"""How often a producer waiting for room in a full queue checks whether it was told to stop."""


class Prefetcher(Generic[Item]):
    """Iterate ``items`` in a thread of its own, at most ``ahead`` items ahead; use as a context manager.

    ``on_start`` runs first in that thread (to pick the thread's CUDA device, say).
    """

    def __init__(
        self, items: Iterable[Item], ahead: int, name: str = "infer-read", on_start: Callable[[], None] | None = None
    ) -> None:
        if ahead < 1:
            raise ValueError(f"ahead must be at least 1, got {ahead}")
        self._queue: queue.Queue[tuple[int, object]] = queue.Queue(maxsize=ahead)
        self._stopping = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._produce, args=(items, on_start), name=name, daemon=True)
        self._thread.start()

    def _produce(self, items: Iterable[Item], on_start: Callable[[], None] | None) -> None:
        iterator = None
        try:
            if on_start is not None:
                on_start()
            iterator = iter(items)
            for item in iterator:
                if not self._put(_ITEM, item):
                    return
            self._put(_END, None)
        except BaseException as error:  # handed to the consumer, which raises it
            self._put(_FAILED, error)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:  # a generator: its own clean-up (an ffmpeg reader's) runs in this thread
                close()

    def _put(self, kind: int, value: object) -> bool:
        while not self._stopping.is_set():
            try:
                self._queue.put((kind, value), timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[Item]:
        return self

    def __next__(self) -> Item:
        if self._finished:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == _ITEM:
            return value  # type: ignore[return-value]
        self._finished = True
        if kind == _FAILED:
            raise value  # type: ignore[misc]
        raise StopIteration

    def close(self) -> None:
        """Stop reading and wait for the thread to end."""
        self._stopping.set()
        self._thread.join()

    def __enter__(self) -> "Prefetcher[Item]":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


class Inline(Generic[Item]):
    """`Prefetcher`'s serial counterpart: ``items`` read in the consuming thread when asked for."""

    def __init__(self, items: Iterable[Item]) -> None:
        self._iterator = iter(items)

    def __iter__(self) -> Iterator[Item]:
        return self

    def __next__(self) -> Item:
        return next(self._iterator)

    def close(self) -> None:
        close = getattr(self._iterator, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "Inline[Item]":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def read_ahead(
    items: Iterable[Item], ahead: int, name: str = "infer-read", on_start: Callable[[], None] | None = None
) -> Prefetcher[Item] | Inline[Item]:
    """``items`` read ``ahead`` items ahead in a thread, or in the calling thread when ``ahead`` is 0."""
    return Prefetcher(items, ahead, name, on_start) if ahead else Inline(items)
