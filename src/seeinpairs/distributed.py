"""Where this process sits in a data-parallel launch (``torchrun`` / ``accelerate launch``).

Read from the environment those launchers set (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``); a
plain run is world size 1. Evaluation and training both split work by rank with it, so it
sits below both. torch is imported only when a launch is distributed.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a data-parallel launch (world_size 1: not distributed)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> DistContext:
        def read(name: str, default: int) -> int:
            value = os.environ.get(name, "")
            try:
                return int(value) if value.strip() else default
            except ValueError:
                raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None

        world = read("WORLD_SIZE", 1)
        rank = read("RANK", 0)
        local = read("LOCAL_RANK", rank)
        if world < 1 or not 0 <= rank < world:
            raise ConfigError(f"inconsistent distributed environment: WORLD_SIZE={world}, RANK={rank}")
        return cls(world, rank, local)

    def init(self) -> None:
        """Join the process group (idempotent); NCCL when CUDA is available, else gloo."""
        if not self.enabled:
            return
        import torch
        import torch.distributed as dist

        if dist.is_initialized():
            return
        if torch.cuda.is_available():
            torch.cuda.set_device(self.local_rank)
            dist.init_process_group("nccl")
        else:
            dist.init_process_group("gloo")

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                if dist.get_backend() == "nccl":
                    import torch

                    dist.barrier(device_ids=[torch.cuda.current_device()])
                else:
                    dist.barrier()

    def shutdown(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    @contextmanager
    def main_first(self):
        """Rank 0 runs the block first (writing files), the other ranks after it (finding them)."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()
