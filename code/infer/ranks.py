"""The processes of a run: which one this is, its process group, and what they tell each other. A process alone
is a group of one, whose exchanges are identities (no process group is formed), so one run path serves both.

Inference shares out videos, not batches, so the processes only talk twice: rank 0 makes the demo data while the
others wait (`barrier`), and at the end every process hands its results, or its error, to all (`all_gather`). They
talk through gloo (Python objects; on GPU machines too). The group is left when the process exits, after every
process has gathered and rank 0 has reported: a process that ended sooner would make torchrun stop the others,
perhaps before rank 0 had printed its error.

With ``--resume`` rank 0 also tells the others which videos an earlier start finished (the same broadcast as the
staging folder's token). torchrun's restarts (``--max-restarts``) need ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``
(utils/distributed.py, `check_restarts_can_meet`).
"""

import atexit
import datetime
import logging

import torch.distributed as dist

from utils.distributed import Ranks, check_restarts_can_meet

logger = logging.getLogger(__name__)

WAIT_LIMIT = datetime.timedelta(days=7)
"""How long a process waits for the others at the final gather. A process with longer videos may finish hours
later on CPUs; a process that dies makes torchrun stop the others, so this only bounds a hang."""


class ProcessGroup:
    """The processes of the run: under torchrun their gloo group, joined on creation and left at exit (see the
    module's docstring); alone, a group of one."""

    def __init__(self, ranks: Ranks) -> None:
        """Join the group (`UserError` first for torchrun restarts that could not meet, see utils/distributed.py)."""
        self.ranks = ranks
        self.gathered = False
        if ranks.distributed:
            check_restarts_can_meet()
            dist.init_process_group("gloo", rank=ranks.rank, world_size=ranks.world_size, timeout=WAIT_LIMIT)
            atexit.register(self.leave)

    def barrier(self) -> None:
        if self.ranks.distributed:
            dist.barrier()

    def broadcast(self, value: object) -> object:
        """Rank 0's ``value``, on every process."""
        values = [value]
        if self.ranks.distributed:
            dist.broadcast_object_list(values, src=0)
        return values[0]

    def all_gather(self, value: object) -> list:
        """Every process's ``value``, in rank order, on every process."""
        values: list = [value]
        if self.ranks.distributed:
            values = [None] * self.ranks.world_size
            dist.all_gather_object(values, value)
        self.gathered = True
        return values

    def leave(self) -> None:
        if not dist.is_initialized():
            return
        if self.gathered:  # not after Ctrl-C or a crash: the others may never come
            dist.barrier()
        dist.destroy_process_group()
