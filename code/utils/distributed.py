"""Which process this is among torchrun's (RANK, LOCAL_RANK, WORLD_SIZE): shared by training and inference."""

import os
from dataclasses import dataclass


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
