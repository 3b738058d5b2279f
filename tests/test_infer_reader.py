"""infer/reader.py: reading ahead in a thread of its own (`Prefetcher`) and its serial counterpart (`Inline`).

The order of the items, how far ahead the thread reads, an error raised in the consumer at the item that failed,
the thread stopped and joined (and the source closed in it) however the consumer leaves, and the serial path
giving what the threaded one gives. Waits on the reader run in helper threads with a time limit, so that a reader
that hangs fails its test instead of hanging the suite.
"""

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from cdvd_tsp.infer.reader import Inline, Prefetcher, read_ahead
from cdvd_tsp.utils.errors import UserError

WAIT = 10.0
"""Seconds a test waits for another thread before it calls the code hung (it never waits that long when right)."""


def reader_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("infer-read")]


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "the reader thread did not get there"
        time.sleep(0.001)


def within(call: Callable[[], object]) -> object:
    """``call()`` in a helper thread: what it returned or raised, or a failure if it is still waiting after WAIT s."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as error:
            outcome.append(error)

    helper = threading.Thread(target=run, name="test-helper", daemon=True)
    helper.start()
    helper.join(WAIT)
    assert not helper.is_alive(), f"{call} waited forever"
    return outcome[0]


@contextlib.contextmanager
def closed_in_time(reader: Prefetcher | Inline) -> Iterator[Prefetcher | Inline]:
    """``with reader``, its exit (the stop and the join) bounded by `within`."""
    with contextlib.ExitStack() as stack:
        stack.callback(within, lambda: reader.__exit__(None, None, None))
        yield reader.__enter__()


class Source:
    """A generator of 0, 1, 2... (held here, so that only an explicit close ends it early) that records what it
    produced, in which thread, and where it was closed; it fails at ``fail_at`` with a `UserError`."""

    def __init__(self, count: int | None = None, fail_at: int | None = None) -> None:
        self.count, self.fail_at = count, fail_at
        self.produced: list[int] = []
        self.threads: set[str] = set()
        self.closed_in: list[str] = []
        self.error = UserError(f"cannot read image {fail_at or 0:05d}.png: truncated")
        self.generator = self._generate()

    def _generate(self) -> Iterator[int]:
        number = 0
        try:
            while self.count is None or number < self.count:
                self.threads.add(threading.current_thread().name)
                if number == self.fail_at:
                    raise self.error
                self.produced.append(number)
                yield number
                number += 1
        finally:
            self.closed_in.append(threading.current_thread().name)


def test_items_come_out_in_order_however_the_reading_is_timed() -> None:
    def jittered() -> Iterator[int]:
        for number in range(40):
            time.sleep(0.002 * (number % 3 == 0))
            yield number

    with Prefetcher(jittered(), ahead=3) as items:
        assert list(items) == list(range(40))
    assert reader_threads() == []


@pytest.mark.parametrize("ahead", [1, 3])
def test_a_consumer_that_takes_nothing_lets_the_thread_read_exactly_ahead_plus_the_item_in_hand(ahead: int) -> None:
    source = Source()
    with closed_in_time(Prefetcher(source.generator, ahead=ahead)) as items:
        wait_until(lambda: len(source.produced) == ahead + 1)
        time.sleep(0.2)  # room for a reader that does not stop to read further
        assert len(source.produced) == ahead + 1  # `ahead` queued, one waiting to be put
        assert next(items) == 0
        wait_until(lambda: len(source.produced) == ahead + 2)  # one taken: one more read
        time.sleep(0.1)
        assert len(source.produced) == ahead + 2
    assert source.closed_in == ["infer-read"] and reader_threads() == []


def test_ahead_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match="ahead must be at least 1, got 0"):
        Prefetcher(iter([1]), ahead=0)
    assert reader_threads() == []


def test_a_read_error_is_raised_in_the_consumer_at_the_item_that_failed_and_then_the_items_end() -> None:
    source = Source(count=10, fail_at=3)
    seen = []
    with closed_in_time(Prefetcher(source.generator, ahead=5)) as items:
        with pytest.raises(UserError, match=r"00003\.png") as raised:
            for number in items:
                seen.append(number)
        assert seen == [0, 1, 2]  # every item before the failed one, none after
        assert raised.value is source.error
        assert isinstance(within(lambda: next(items)), StopIteration)  # not a wait for an item that never comes
    assert source.threads == {"infer-read"} and reader_threads() == []


def test_asking_again_after_the_end_stops_again_instead_of_waiting() -> None:
    with closed_in_time(Prefetcher(iter([1, 2]), ahead=2)) as items:
        assert within(lambda: list(items)) == [1, 2]
        assert isinstance(within(lambda: next(items)), StopIteration)


def test_on_start_runs_first_in_the_reader_thread_and_its_error_reaches_the_consumer() -> None:
    calls: list[tuple[str, int]] = []
    source = Source(count=2)

    def on_start() -> None:
        calls.append((threading.current_thread().name, len(source.produced)))

    with closed_in_time(Prefetcher(source.generator, 1, name="infer-read-started", on_start=on_start)) as items:
        assert list(items) == [0, 1]
    assert calls == [("infer-read-started", 0)]

    def failing_start() -> None:
        raise RuntimeError("cannot select CUDA device 3")

    untouched = Source(count=2)
    with closed_in_time(Prefetcher(untouched.generator, ahead=1, on_start=failing_start)) as items:
        error = within(lambda: next(items))
    assert isinstance(error, RuntimeError) and "CUDA device 3" in str(error)
    assert untouched.produced == [] and reader_threads() == []


def test_closing_early_stops_a_reader_blocked_on_a_full_queue_and_closes_the_source_in_its_thread() -> None:
    source = Source()  # endless
    with closed_in_time(Prefetcher(source.generator, ahead=1, name="infer-read-early")) as items:
        assert next(items) == 0
        wait_until(lambda: len(source.produced) == 3)  # blocked: one queued, one in hand
    assert source.closed_in == ["infer-read-early"]  # the generator's clean-up ran in the reader thread
    assert reader_threads() == []


def test_an_error_in_the_consumer_leaves_no_thread_behind() -> None:
    source = Source()
    with pytest.raises(KeyError), closed_in_time(Prefetcher(source.generator, ahead=2)) as items:
        for number in items:
            if number == 4:
                raise KeyError(number)
    assert source.closed_in == ["infer-read"] and reader_threads() == []


def test_a_source_that_is_not_a_generator_is_read_too() -> None:
    with closed_in_time(Prefetcher([3, 1, 2], ahead=1)) as items:
        assert list(items) == [3, 1, 2]
    assert reader_threads() == []


# ----- the serial path


def test_nothing_ahead_reads_in_the_calling_thread_only_when_asked() -> None:
    source = Source(count=4)
    with read_ahead(source.generator, 0) as items:
        assert isinstance(items, Inline)
        assert source.produced == []  # nothing read before it is asked for
        assert next(items) == 0 and source.produced == [0]
        assert list(items) == [1, 2, 3]
    assert source.threads == {threading.current_thread().name} and reader_threads() == []


@pytest.mark.parametrize("ahead", [1, 2])
def test_read_ahead_with_items_ahead_is_a_prefetcher_in_a_thread_of_that_name(ahead: int) -> None:
    source = Source(count=2)
    with closed_in_time(read_ahead(source.generator, ahead, name="infer-read-named")) as items:
        assert isinstance(items, Prefetcher)
        assert list(items) == [0, 1]
    assert source.threads == {"infer-read-named"} and reader_threads() == []


@pytest.mark.parametrize("ahead", [0, 1, 4])
def test_the_serial_and_the_threaded_path_give_the_same_items_and_the_same_error(ahead: int) -> None:
    source = Source(count=9, fail_at=6)
    seen = []
    with pytest.raises(UserError, match=r"00006\.png"), closed_in_time(read_ahead(source.generator, ahead)) as items:
        for number in items:
            seen.append(number)
    assert seen == [0, 1, 2, 3, 4, 5]
    assert len(source.closed_in) == 1 and reader_threads() == []


def test_leaving_the_serial_path_early_closes_the_source() -> None:
    source = Source()
    with Inline(source.generator) as items:
        assert [next(items), next(items)] == [0, 1]
    assert source.closed_in == [threading.current_thread().name]
