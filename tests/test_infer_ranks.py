"""The process group of a torchrun run, in one process (a group of one): what the processes tell each other."""

import pytest
import torch.distributed as dist

from conftest import free_port
from infer.ranks import ProcessGroup
from utils.distributed import Ranks


def test_a_group_of_one_broadcasts_and_gathers_its_own_values_and_leaves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    group = ProcessGroup(Ranks(rank=0, world_size=1, local_rank=0))
    try:
        group.barrier()
        assert group.broadcast({"token": "abc"}) == {"token": "abc"}
        assert not group.gathered
        assert group.all_gather(("results", 3)) == [("results", 3)]
        assert group.gathered
    finally:
        group.leave()
    assert not dist.is_initialized()
    group.leave()  # again at exit: nothing left to do
