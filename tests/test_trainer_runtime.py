"""trainer/runtime.py with two real processes (forked, gloo through a file store): what they agree on.

The stop vote: a request in one process stops both at the same poll, one poll later (or at once where asked); the
check that every process read the same commit; gathering each process's state in rank 0.
"""

import datetime
import multiprocessing
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from trainer.runtime import Runtime, StopVote
from utils.signals import StopRequests


def polls_until_stop(vote: StopVote, requests: StopRequests, request_at: int | None, at_once: bool) -> list[int]:
    """Poll until the processes stop; the request (SIGTERM's number) appears before poll ``request_at``."""
    answers: list[int] = []
    while not answers or not answers[-1]:
        if len(answers) + 1 == request_at:
            requests.signal_number = 15
        answers.append(vote.poll(at_once=at_once))
        assert len(answers) < 10
    return answers


def agree(rank: int, store: str, results: multiprocessing.Queue) -> None:
    try:
        timeout = datetime.timedelta(seconds=20)  # a vote that does not agree fails in time, it does not hang
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2, timeout=timeout)
        runtime = Runtime(device=torch.device("cpu"), rank=rank, local_rank=rank, world_size=2)
        requests = StopRequests()  # never opened: the request is set by hand, as a handler would set it
        vote = StopVote(runtime, requests)
        stepwise = polls_until_stop(vote, requests, request_at=3 if rank == 1 else None, at_once=False)
        requests = StopRequests()
        vote = StopVote(runtime, requests)
        at_once = polls_until_stop(vote, requests, request_at=2 if rank == 0 else None, at_once=True)
        same = [runtime.same_everywhere([4, 0]), runtime.same_everywhere([4, rank])]
        gathered = runtime.gather({"rank": rank, "sums": [0.5 * rank]})
        vote.close()
        dist.destroy_process_group()
        results.put((rank, stepwise, at_once, same, gathered))
    except BaseException:
        results.put((rank, traceback.format_exc()))


def test_two_processes_stop_at_the_same_poll_and_see_what_differs(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")  # no new interpreter: a second, not ten
    results = context.Queue()
    processes = [
        context.Process(target=agree, args=(rank, tmp_path / "store", results), daemon=True) for rank in (0, 1)
    ]
    for process in processes:
        process.start()
    try:
        collected = [results.get(timeout=60) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    failures = [item[1] for item in collected if len(item) == 2]
    assert not failures, failures[0]
    answers = {item[0]: item[1:] for item in collected}
    for rank in (0, 1):
        stepwise, at_once, same, gathered = answers[rank]
        assert stepwise == [0, 0, 0, 15]  # requested in rank 1 before poll 3: both stop at poll 4
        assert at_once == [0, 15]  # requested in rank 0 before poll 2, answered at once: both stop there
        assert same == [True, False]
        assert gathered == ([{"rank": 0, "sums": [0.0]}, {"rank": 1, "sums": [0.5]}] if rank == 0 else None)


def test_one_process_stops_where_it_polls() -> None:
    requests = StopRequests()
    vote = StopVote(Runtime(device=torch.device("cpu")), requests)
    assert polls_until_stop(vote, requests, request_at=2, at_once=False) == [0, 15]
    runtime = Runtime(device=torch.device("cpu"))
    assert runtime.same_everywhere([3, 1]) and runtime.gather({"a": 1}) == [{"a": 1}]


@pytest.fixture(autouse=True)
def _no_leftover_group() -> None:
    assert not dist.is_initialized()
