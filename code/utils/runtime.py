"""Where a command runs, for both commands: this process's place among torchrun's (`Ranks`), its device
(`pick_device`, the one device picker), what the processes tell each other (`Runtime`'s collectives) and how they
agree on a stop (`StopVote`).

A process alone is a group of one: every collective is an identity and no process group is formed, so each command
has one run path whether torchrun started one process or several. Under torchrun `join` forms the group (gloo,
or NCCL for training on GPUs) and leaves it at exit. torchrun's restarts (``--max-restarts``) need
``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` (`check_restarts_can_meet`).
"""

import atexit
import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from cdvd_tsp.utils.errors import UserError
from cdvd_tsp.utils.signals import StopRequests

logger = logging.getLogger(__name__)

SHARED_STORE_SWITCH = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_environment(cls) -> "Ranks":
        """What torchrun says in RANK, LOCAL_RANK and WORLD_SIZE."""
        return cls(
            int(os.environ.get("RANK", "0")),
            int(os.environ.get("LOCAL_RANK", "0")),
            int(os.environ.get("WORLD_SIZE", "1")),
        )

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the logs and the results."""
        return self.rank == 0


def check_restarts_can_meet() -> None:
    """Refuse torchrun --max-restarts where the restarted processes could not form their process group.

    torchrun (torch 2.13) shares its rendezvous store with the processes it starts and keeps it across restarts,
    with the keys the first start's process group wrote: the restarted processes read those and look for processes
    that are gone. Launched with ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``, every start has a store of its own
    (hosted by its rank 0).
    """
    restarts = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0"))
    if restarts > 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        raise UserError(
            f"torchrun --max-restarts {restarts}: launch torchrun with {SHARED_STORE_SWITCH}=1 (and --standalone or "
            "--rdzv_backend c10d); with the rendezvous store it shares, the restarted processes would look for the "
            "first start's"
        )


def pick_device(
    choice: str, local_rank: int = 0, asked: str = "--device cuda", instead: str = "use --device cpu (or auto)"
) -> torch.device:
    """The device of ``choice`` (``auto``: CUDA when there is one, ``cpu``, ``cuda``); on CUDA the GPU of this
    process's local rank (torchrun), cuda:0 alone. ``asked`` and ``instead`` name the command's way of asking for
    CUDA and for the CPU, in the errors."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{asked}: PyTorch sees no CUDA device here; {instead}")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    if local_rank >= torch.cuda.device_count():
        raise UserError(
            f"process {local_rank} of this machine has no GPU: PyTorch sees {torch.cuda.device_count()}; "
            f"start at most that many processes per machine, or {instead}"
        )
    return torch.device("cuda", local_rank)


@dataclass(frozen=True, kw_only=True)
class Runtime(Ranks):
    """This process's device and place among the processes, and what they tell each other (identities alone).
    Tensors are exchanged on ``device`` (the process group's backend must serve it), Python objects as pickles."""

    device: torch.device

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def sum(self, values: Tensor) -> Tensor:
        """``values`` summed over all processes (itself when there is one)."""
        if self.distributed:
            values = values.clone()
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def all_true(self, flag: bool) -> bool:
        """True when ``flag`` is true in every process."""
        if not self.distributed:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return bool(value.item())

    def smallest(self, value: int | None) -> int | None:
        """The smallest of every process's ``value`` (None: this process has none); None if no process has one."""
        if not self.distributed:
            return value
        none = torch.iinfo(torch.int64).max
        smallest = torch.tensor([none if value is None else value], dtype=torch.int64, device=self.device)
        dist.all_reduce(smallest, op=dist.ReduceOp.MIN)
        found = int(smallest.item())
        return None if found == none else found

    def same_everywhere(self, values: list[int]) -> bool:
        """Whether every process holds the same ``values`` (integers)."""
        if not self.distributed:
            return True
        both = torch.tensor([*values, *(-value for value in values)], dtype=torch.int64, device=self.device)
        dist.all_reduce(both, op=dist.ReduceOp.MAX)
        highest, lowest = both[: len(values)], -both[len(values) :]
        return bool(torch.equal(highest, lowest))

    def broadcast(self, value: object) -> object:
        """Rank 0's ``value``, on every process."""
        values = [value]
        if self.distributed:
            dist.broadcast_object_list(values, src=0)
        return values[0]

    def gather(self, value: Any) -> list[Any] | None:
        """Every process's ``value`` (picklable), in rank order, in rank 0; None in the others."""
        if not self.distributed:
            return [value]
        gathered = [None] * self.world_size if self.is_main else None
        dist.gather_object(value, gathered, dst=0)
        return gathered

    def all_gather(self, value: Any) -> list[Any]:
        """Every process's ``value`` (picklable), in rank order, on every process."""
        if not self.distributed:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values


def join(
    ranks: Ranks, device: torch.device, backend: str = "gloo", timeout: datetime.timedelta | None = None
) -> Runtime:
    """This process's `Runtime`; under torchrun it joins the process group (``backend``, `UserError` first for
    restarts that could not meet), which it leaves at exit. On CUDA ``device`` becomes the current device."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if ranks.distributed:
        check_restarts_can_meet()
        dist.init_process_group(backend, rank=ranks.rank, world_size=ranks.world_size, timeout=timeout)
        atexit.register(leave)
        logger.info("process %d of %d on %s", ranks.rank, ranks.world_size, device)
    return Runtime(device=device, rank=ranks.rank, local_rank=ranks.local_rank, world_size=ranks.world_size)


def leave() -> None:
    """Leave the process group, if this process is in one."""
    if dist.is_initialized():
        dist.destroy_process_group()


class StopVote:
    """Agrees on a stop: every process stops at the same step boundary, as soon as one has a stop request.

    `poll` is called at every step boundary by every process. One process alone stops where it polls. Under torchrun
    each poll starts an all_reduce (MAX) of this process's request (its signal's number, 0 for none) without waiting
    for it, and the next poll takes its result: the processes stop together one step after the first request, and
    no step waits on the others for it (the reduction ran during the step, on the CPU through gloo, in its own
    process group, so CUDA streams and the training's collectives are not involved). ``at_once`` waits for the
    answer instead (after an epoch's last step and before its first, where the processes meet anyway).
    """

    def __init__(self, runtime: Runtime, requests: StopRequests) -> None:
        self.requests = requests
        self.group = dist.new_group(backend="gloo") if runtime.distributed else None
        self._pending: tuple[Any, Tensor] | None = None

    def _local(self) -> int:
        return self.requests.signal_number or 0

    def _answer(self) -> int:
        """The result of the vote started at the last poll (0 if none is pending)."""
        if self._pending is None:
            return 0
        work, vote = self._pending
        self._pending = None
        work.wait()
        return int(vote.item())

    def poll(self, at_once: bool = False) -> int:
        """The signal's number (the same in every process) if the processes stop here, else 0."""
        if self.group is None:
            return self._local()
        agreed = self._answer()
        if agreed:
            return agreed
        vote = torch.tensor([self._local()], dtype=torch.int64)
        work = dist.all_reduce(vote, op=dist.ReduceOp.MAX, group=self.group, async_op=True)
        self._pending = (work, vote)
        return self._answer() if at_once else 0

    def close(self) -> None:
        """Wait for the vote in flight (every process calls this at the same point)."""
        self._answer()
