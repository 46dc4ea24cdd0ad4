"""Where this process sits in a torchrun launch: the one reader of torchrun's environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Launch:
    """Rank, world size and local rank from torchrun's environment; ``(0, 1, 0)`` outside torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Launch:
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world <= 1:
            return cls()
        return cls(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class ProcessGroup:
    """The gloo group of a torchrun launch (created here if the caller has not), or nothing outside torchrun.

    Use as a context manager; the group is destroyed on exit only if it was created here.
    """

    def __init__(self, launch: Launch, backend: str = "gloo") -> None:
        self.launch = launch
        self.backend = backend
        self.created = False

    def __enter__(self) -> ProcessGroup:
        if self.launch.world_size > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group(self.backend)
                self.created = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.created:
            import torch.distributed as dist

            dist.destroy_process_group()

    def barrier(self) -> None:
        if self.launch.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order (``[value]`` outside torchrun)."""
        if self.launch.world_size == 1:
            return [value]
        import torch.distributed as dist

        values: list[Any] = [None] * self.launch.world_size
        dist.all_gather_object(values, value)
        return values
