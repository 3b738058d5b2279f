"""infer/workers.py: jobs on a pool of threads, completed in the order given, in the calling thread (`InOrder`).

Completion in order when jobs finish out of order, at most ``2 * workers`` jobs in flight, a job's error raised by
the call that completes it (and no later job completed), the serial path (no workers) equal to the threaded one,
and leaving early: the jobs not started are cancelled and the threads joined. Jobs are held by events that the test
sets, so the order in which they finish is the test's, not the machine's.
"""

import threading
import time
from collections.abc import Callable

import pytest

from cdvd_tsp.infer.workers import THREAD_PREFIX, InOrder, done_inline

WAIT = 10.0
"""Seconds an event is waited for before the test calls the code hung (never that long when it is right)."""


def worker_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith(THREAD_PREFIX)]


def current() -> str:
    return threading.current_thread().name


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "the workers did not get there"
        time.sleep(0.001)


class Jobs:
    """Job ``k`` records that it started, waits for its gate, records that it finished and returns ``k * 10``;
    its completion records ``(result, thread)``."""

    def __init__(self, count: int) -> None:
        self.gates = [threading.Event() for _ in range(count)]
        self.started: list[int] = []
        self.finished: list[int] = []
        self.completed: list[tuple[int, str]] = []
        self.finished_event = [threading.Event() for _ in range(count)]

    def job(self, number: int) -> Callable[[], int]:
        def run() -> int:
            self.started.append(number)
            assert self.gates[number].wait(WAIT), f"job {number} was never let go"
            self.finished.append(number)
            self.finished_event[number].set()
            return number * 10

        return run

    def complete(self, result: int) -> None:
        self.completed.append((result, current()))

    def release(self, number: int) -> None:
        """Let job ``number`` finish and wait until it has."""
        self.gates[number].set()
        assert self.finished_event[number].wait(WAIT), f"job {number} did not finish"


def test_jobs_finishing_out_of_order_are_completed_in_order_in_the_calling_thread() -> None:
    jobs = Jobs(6)
    with InOrder(3) as work:
        for number in range(6):
            work.submit(jobs.job(number), jobs.complete)
        jobs.release(2)
        jobs.release(1)
        work.poll()
        assert jobs.completed == []  # job 0 is still running: nothing after it may be completed
        jobs.release(0)
        work.poll()
        assert jobs.completed == [(0, "MainThread"), (10, "MainThread"), (20, "MainThread")]
        for number in (5, 4, 3):
            jobs.gates[number].set()
        work.drain()
    assert jobs.finished[:3] == [2, 1, 0]
    assert jobs.completed == [(number * 10, "MainThread") for number in range(6)]
    assert worker_threads() == []


def test_poll_completes_the_done_jobs_up_to_the_first_that_is_not_and_does_not_wait() -> None:
    jobs = Jobs(4)
    with InOrder(2) as work:
        for number in range(4):
            work.submit(jobs.job(number), jobs.complete)
        jobs.release(0)
        jobs.release(1)
        work.poll()  # job 2 is held: poll must come back, having completed 0 and 1
        assert [result for result, _ in jobs.completed] == [0, 10]
        jobs.gates[2].set()
        jobs.gates[3].set()
        work.drain()
    assert [result for result, _ in jobs.completed] == [0, 10, 20, 30]


@pytest.mark.parametrize("workers", [1, 2])
def test_at_most_twice_the_workers_are_in_flight_submit_completes_the_oldest_first(workers: int) -> None:
    limit = 2 * workers
    jobs = Jobs(limit + 1)
    with InOrder(workers) as work:
        for number in range(limit):
            work.submit(jobs.job(number), jobs.complete)
        assert jobs.completed == [] and len(work.pending) == limit  # still within the limit: nothing waited for
        timer = threading.Timer(0.3, lambda: [gate.set() for gate in jobs.gates])
        timer.start()
        work.submit(jobs.job(limit), jobs.complete)  # one over: waits for job 0 and completes it
        assert jobs.completed[:1] == [(0, "MainThread")]
        assert len(work.pending) <= limit
        work.drain()
        timer.join()
    assert [result for result, _ in jobs.completed] == [number * 10 for number in range(limit + 1)]


def test_a_jobs_error_is_raised_by_the_call_that_completes_it_and_no_later_job_is_completed() -> None:
    jobs = Jobs(4)
    failure = OSError(28, "No space left on device")

    def failing() -> int:
        assert jobs.gates[1].wait(WAIT)
        raise failure

    with InOrder(2) as work:
        work.submit(jobs.job(0), jobs.complete)
        work.submit(failing, jobs.complete)
        work.submit(jobs.job(2), jobs.complete)
        jobs.release(0)
        jobs.release(2)
        jobs.gates[1].set()
        with pytest.raises(OSError, match="No space left") as raised:
            work.drain()
    assert raised.value is failure
    assert jobs.completed == [(0, "MainThread")]  # job 2 finished, but it comes after the failed one
    assert worker_threads() == []


def test_without_workers_each_job_runs_at_submit_in_the_calling_thread_and_is_completed_at_once() -> None:
    ran_in: list[str] = []
    completed: list[int] = []
    with InOrder(0) as work:
        assert work.pool is None
        for number in range(3):
            work.submit(lambda number=number: ran_in.append(current()) or number, completed.append)
            assert completed == list(range(number + 1))  # completed before the next job is given
            assert len(work.pending) == 0
    assert ran_in == ["MainThread"] * 3 and worker_threads() == []


def test_without_workers_a_jobs_error_is_raised_by_its_own_submit() -> None:
    completed: list[int] = []

    def failing() -> int:
        raise ValueError("frame 2: cannot encode PNG")

    with InOrder(0) as work:
        work.submit(lambda: 1, completed.append)
        with pytest.raises(ValueError, match="frame 2"):
            work.submit(failing, completed.append)
        assert completed == [1]


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_the_serial_and_the_threaded_path_complete_the_same_results_in_the_same_order(workers: int) -> None:
    completed: list[int] = []

    def job(number: int) -> int:
        if number == 7:
            raise KeyError(number)
        return number * number

    with pytest.raises(KeyError), InOrder(workers) as work:
        for number in range(12):
            work.submit(lambda number=number: job(number), completed.append)
        work.drain()
    assert completed == [number * number for number in range(7)]
    assert worker_threads() == []


def test_leaving_early_cancels_the_jobs_not_started_completes_nothing_and_joins_the_threads() -> None:
    jobs = Jobs(4)
    with pytest.raises(RuntimeError, match="stopped by the model"), InOrder(2) as work:
        for number in range(4):
            work.submit(jobs.job(number), jobs.complete)
        wait_until(lambda: len(jobs.started) == 2)  # both threads busy, jobs 2 and 3 queued
        threading.Timer(0.2, lambda: [gate.set() for gate in jobs.gates]).start()  # once the exit waits
        raise RuntimeError("stopped by the model")
    assert sorted(jobs.started) == [0, 1]  # jobs 2 and 3 never started
    assert jobs.completed == [] and worker_threads() == []


def test_close_waits_for_the_running_jobs() -> None:
    jobs = Jobs(2)
    work = InOrder(2)
    work.submit(jobs.job(0), jobs.complete)
    work.submit(jobs.job(1), jobs.complete)
    threading.Timer(0.2, lambda: [gate.set() for gate in jobs.gates]).start()
    work.close()
    assert sorted(jobs.finished) == [0, 1] and worker_threads() == []


def test_workers_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="workers must be 0 or more, got -1"):
        InOrder(-1)


def test_done_inline_runs_the_job_now_and_keeps_its_error_for_result() -> None:
    ran: list[str] = []
    future = done_inline(lambda: ran.append(current()) or 42)
    assert ran == ["MainThread"] and future.done() and future.result() == 42
    failing = done_inline(lambda: 1 / 0)  # not raised here
    assert failing.done()
    with pytest.raises(ZeroDivisionError):
        failing.result()


def test_complete_through_completes_the_jobs_up_to_a_number_and_leaves_the_later_ones() -> None:
    jobs = Jobs(4)
    with InOrder(2) as work:
        numbers = [work.submit(jobs.job(number), jobs.complete) for number in range(3)]
        assert numbers == [0, 1, 2]
        for number in range(3):
            jobs.gates[number].set()
        work.complete_through(1)  # waits for jobs 0 and 1
        assert [result for result, _ in jobs.completed] == [0, 10] and [entry[0] for entry in work.pending] == [2]
        work.drain()
    assert [result for result, _ in jobs.completed] == [0, 10, 20] and worker_threads() == []


def test_after_a_failed_job_complete_through_completes_nothing_more() -> None:
    """A job that failed (a PNG that could not be written) must not let the jobs after it (its video's end) count
    as done."""
    jobs = Jobs(3)

    def failing() -> int:
        assert jobs.gates[0].wait(WAIT)
        raise OSError(28, "No space left on device")

    with InOrder(2) as work:
        work.submit(failing, jobs.complete)
        work.submit(jobs.job(1), jobs.complete)
        jobs.release(1)
        jobs.gates[0].set()
        with pytest.raises(OSError):
            work.complete_through(1)
        assert work.failed
        work.complete_through(1)
    assert jobs.completed == [] and worker_threads() == []
