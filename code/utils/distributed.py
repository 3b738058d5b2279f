"""Which process this is among torchrun's (RANK, LOCAL_RANK, WORLD_SIZE), and whether torchrun's restarts can form
a process group again: shared by training and inference."""

import os
from dataclasses import dataclass

from utils.errors import UserError

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
        """Rank 0 writes the log and results.json."""
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
