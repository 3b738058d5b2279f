"""Where training runs: the device, and (under torchrun) this process's rank in a DistributedDataParallel group;
what the processes agree on (sums, a stop at the same step)."""

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from utils.distributed import Ranks, check_restarts_can_meet
from utils.errors import UserError
from utils.signals import StopRequests

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Runtime(Ranks):
    """This process's device and its place among the training processes (rank 0 of 1 without torchrun)."""

    device: torch.device

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

    def gather(self, value: Any) -> list[Any] | None:
        """Every process's ``value`` (picklable), in rank order, in rank 0; None in the others."""
        if not self.distributed:
            return [value]
        gathered = [None] * self.world_size if self.is_main else None
        dist.gather_object(value, gathered, dst=0)
        return gathered

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


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


def start_runtime(cpu: bool, n_gpus: int) -> Runtime:
    """Pick the device and, when launched by torchrun with more than one process, join the process group.

    With ``cpu`` the processes talk through gloo, otherwise each takes the GPU of its local rank and uses NCCL.
    """
    ranks = Ranks.from_environment()
    rank, local_rank, world_size = ranks.rank, ranks.local_rank, ranks.world_size
    if not cpu and not torch.cuda.is_available():
        raise UserError("no CUDA device is available; pass --cpu to train on the CPU")
    if world_size > 1 and n_gpus > 1:
        raise UserError("--n_GPUs > 1 (DataParallel) and torchrun (DistributedDataParallel) exclude each other")
    if not cpu and n_gpus > torch.cuda.device_count():
        raise UserError(f"--n_GPUs {n_gpus}: only {torch.cuda.device_count()} CUDA devices are visible")
    if cpu:
        device = torch.device("cpu")
    else:
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"local rank {local_rank} has no GPU: only {torch.cuda.device_count()} are visible")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if world_size > 1:
        check_restarts_can_meet()
        dist.init_process_group(backend="gloo" if cpu else "nccl", rank=rank, world_size=world_size)
        logger.info("process %d of %d on %s", rank, world_size, device)
    return Runtime(device=device, rank=rank, local_rank=local_rank, world_size=world_size)


def stop_runtime(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()
