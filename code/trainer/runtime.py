"""Where training runs: the device, and (under torchrun) this process's rank in a DistributedDataParallel group."""

import logging
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from utils.distributed import Ranks
from utils.errors import UserError

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

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


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
        dist.init_process_group(backend="gloo" if cpu else "nccl", rank=rank, world_size=world_size)
        logger.info("process %d of %d on %s", rank, world_size, device)
    return Runtime(device=device, rank=rank, local_rank=local_rank, world_size=world_size)


def stop_runtime(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()
