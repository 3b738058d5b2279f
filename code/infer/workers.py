"""Work done beside the model, handed back in order: `InOrder` runs jobs on a pool of threads (or in the calling
thread with no workers) and calls each job's completion in the calling thread, in the order the jobs were given.

PNG encoding, file writes and the numpy metrics release the GIL, so the threads run side by side, one core each
while busy (how many a fast model needs: docs/inference.md, "How a run is overlapped"). The number of jobs in
flight is bounded, so memory stays bounded however slow the disk is. Each job gets a number in the order given;
`InOrder.complete_through` completes the jobs up to one of them, which the pipeline uses after a failure to finish
the videos fully restored before it (never after a failed job: what came after it does not count as done).
"""

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any

THREAD_PREFIX = "infer-worker"


def done_inline(job: Callable[[], Any]) -> Future:
    """Run ``job`` now, in this thread, as a finished future (its error kept for `Future.result`)."""
    future: Future = Future()
    try:
        future.set_result(job())
    except Exception as error:
        future.set_exception(error)
    return future


class InOrder:
    """Jobs on ``workers`` threads, completed in order in the calling thread; use as a context manager.

    With ``workers == 0`` each job runs when it is submitted and is completed at once: the serial path. Otherwise
    at most ``2 * workers`` jobs are in flight; `submit` waits for the oldest when there are more. A job's error
    is raised by the call that completes it; leaving the context cancels the jobs not started and joins the threads.
    """

    def __init__(self, workers: int) -> None:
        if workers < 0:
            raise ValueError(f"workers must be 0 or more, got {workers}")
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix=THREAD_PREFIX) if workers else None
        self.limit = 2 * workers
        self.pending: deque[tuple[int, Future, Callable[[Any], None]]] = deque()
        self.submitted = 0
        """How many jobs were given so far: the number of the next one."""
        self.failed = False
        """Whether a job or its completion raised: then nothing more is completed."""

    def submit(self, job: Callable[[], Any], complete: Callable[[Any], None]) -> int:
        """Run ``job``; ``complete(job's result)`` is called in this thread once every earlier job was completed.
        Returns the job's number (0 for the first), for `complete_through`."""
        number = self.submitted
        self.submitted += 1
        future = self.pool.submit(job) if self.pool is not None else done_inline(job)
        self.pending.append((number, future, complete))
        while len(self.pending) > self.limit:
            self._complete_oldest()
        self.poll()
        return number

    def poll(self) -> None:
        """Complete the jobs that are done, oldest first, up to the first one that is not."""
        while self.pending and self.pending[0][1].done():
            self._complete_oldest()

    def drain(self) -> None:
        """Complete every job given so far."""
        while self.pending:
            self._complete_oldest()

    def complete_through(self, number: int) -> None:
        """Complete the jobs given up to job ``number`` (waiting for them), unless a job or a completion has
        failed: after a failure elsewhere, what was done before it is still kept."""
        while not self.failed and self.pending and self.pending[0][0] <= number:
            self._complete_oldest()

    def _complete_oldest(self) -> None:
        _, future, complete = self.pending.popleft()
        try:
            complete(future.result())
        except BaseException:
            self.failed = True
            raise

    def close(self) -> None:
        """Cancel the jobs not yet started and wait for the running ones."""
        for _, future, _ in self.pending:
            future.cancel()
        self.pending.clear()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "InOrder":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
