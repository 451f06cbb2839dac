"""torchrun integration for training and evaluation: read the environment torchrun sets, join
the process group, split the samples, reduce and gather results.

Nothing home-made: ``torchrun`` starts the processes (on one node or many), this module
only reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` and calls ``init_process_group`` with
NCCL on CUDA and gloo on CPU. torch is imported only where a process group is used, so a
single-process evaluation on the onnxruntime engine never loads it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device_type: str) -> "DistContext":
        """Join the process group torchrun prepared (a single process needs none)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        context = cls(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
        if world > 1:
            import torch
            import torch.distributed as dist

            if not dist.is_initialized():
                if device_type == "cuda":
                    torch.cuda.set_device(context.local_rank)
                dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        return context

    def local_device(self, device: str | None) -> str | None:
        """The device this process runs on: under torchrun a bare ``cuda`` means the GPU torchrun
        gave this process (``cuda:LOCAL_RANK``), so one command line serves every rank."""
        if self.enabled and device == "cuda":
            return f"cuda:{self.local_rank}"
        return device

    def positions(self, count: int) -> list[int]:
        """This process's share of ``count`` samples: every world-th from its rank, no padding,
        so summed results count each sample exactly once."""
        return list(range(self.rank, count, self.world_size))

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def sum(self, values: list[float], device: "torch.device") -> list[float]:
        """Element-wise sum over all processes."""
        if not self.enabled:
            return values
        import torch
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order (per-rank RNG states, eval outputs)."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
