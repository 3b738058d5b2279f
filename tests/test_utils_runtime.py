"""utils/runtime.py: a process alone is a group of one; two real processes (forked, gloo through a file store)
agree.

The stop vote: a request in one process stops both at the same poll, one poll later (or at once where asked); the
check that every process read the same commit; gathering each process's state in rank 0, and every process's in
every process; rank 0's value broadcast.
"""

import datetime
import multiprocessing
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from cdvd_tsp.utils.errors import UserError
from cdvd_tsp.utils.runtime import Ranks, Runtime, StopVote, join, leave, pick_device
from cdvd_tsp.utils.signals import StopRequests
from conftest import free_port


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
        everywhere = runtime.all_gather(("results", rank))
        broadcast = runtime.broadcast({"token": f"from {rank}"})
        vote.close()
        dist.destroy_process_group()
        results.put((rank, stepwise, at_once, same, gathered, everywhere, broadcast))
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
        stepwise, at_once, same, gathered, everywhere, broadcast = answers[rank]
        assert stepwise == [0, 0, 0, 15]  # requested in rank 1 before poll 3: both stop at poll 4
        assert at_once == [0, 15]  # requested in rank 0 before poll 2, answered at once: both stop there
        assert same == [True, False]
        assert gathered == ([{"rank": 0, "sums": [0.0]}, {"rank": 1, "sums": [0.5]}] if rank == 0 else None)
        assert everywhere == [("results", 0), ("results", 1)] and broadcast == {"token": "from 0"}


def test_one_process_stops_where_it_polls() -> None:
    requests = StopRequests()
    vote = StopVote(Runtime(device=torch.device("cpu")), requests)
    assert polls_until_stop(vote, requests, request_at=2, at_once=False) == [0, 15]
    runtime = Runtime(device=torch.device("cpu"))
    assert runtime.same_everywhere([3, 1]) and runtime.gather({"a": 1}) == [{"a": 1}]


def test_a_process_alone_is_a_group_of_one_that_forms_no_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(variable, raising=False)
    runtime = join(Ranks.from_environment(), torch.device("cpu"))
    assert not dist.is_initialized()
    assert (runtime.rank, runtime.world_size, runtime.is_main, runtime.distributed) == (0, 1, True, False)
    runtime.barrier()
    assert runtime.broadcast({"token": "abc"}) == {"token": "abc"}
    assert runtime.all_gather(("results", 3)) == [("results", 3)]
    assert runtime.sum(torch.tensor([2.0])).item() == 2.0 and runtime.all_true(False) is False
    assert runtime.smallest(None) is None and runtime.smallest(4) == 4
    leave()  # nothing to leave


def test_a_group_of_one_launched_by_torchrun_joins_and_leaves_its_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    runtime = join(Ranks(rank=0, local_rank=0, world_size=1), torch.device("cpu"))
    assert not dist.is_initialized()  # world size 1 is alone, whoever started it
    assert runtime.all_gather(1) == [1]


def test_the_one_device_picker_names_how_each_command_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    assert pick_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
    with pytest.raises(UserError) as refused:
        pick_device("cuda")
    assert str(refused.value) == "--device cuda: PyTorch sees no CUDA device here; use --device cpu (or auto)"
    with pytest.raises(UserError) as refused:
        pick_device("cuda", 0, asked="training on CUDA", instead="pass --cpu to train on the CPU")
    assert str(refused.value) == "training on CUDA: PyTorch sees no CUDA device here; pass --cpu to train on the CPU"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("auto", 1) == torch.device("cuda", 1)
    with pytest.raises(UserError, match=r"^process 2 of this machine has no GPU: PyTorch sees 2; start at most"):
        pick_device("cuda", 2)


@pytest.fixture(autouse=True)
def _no_leftover_group() -> None:
    assert not dist.is_initialized()
