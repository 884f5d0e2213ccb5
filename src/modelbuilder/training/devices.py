"""Where a training loop runs: a small strategy object the loop is given, so the loop has no device code.

- ``CPUStrategy``: float32, channels-last images (faster convolutions on CPU).
- ``CUDAStrategy``: one GPU, autocast mixed precision (bfloat16 where supported, else float16 with a
  gradient scaler).
- ``DataParallelStrategy``: the seam for training on several workers with torch's
  DistributedDataParallel. Each worker runs the same loop on its shard of every epoch's order; the
  process group is set up by whoever starts the workers (the Ray backend), not here.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn as nn

from ..errors import TrainingError


class DeviceStrategy:
    """One device, one process. Subclasses override what differs; the loop calls only these methods."""

    name = "cpu"
    world_size = 1
    rank = 0

    def __init__(self, device: torch.device | str = "cpu", *, channels_last: bool = True) -> None:
        self.device = torch.device(device)
        self.channels_last = channels_last

    def prepare(self, model: nn.Module) -> nn.Module:
        """Move ``model`` to the device; return the module to call in training steps."""
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return model

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, non_blocking=True)

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        """The memory layout the model was prepared for (image batches only)."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        """This worker's part of an epoch's sample order (all of it on one worker)."""
        return order

    def batch_size(self, global_batch: int) -> int:
        """This worker's batch for a planned (global) batch: all of it on one worker."""
        return global_batch

    def reduce_sum(self, value: float) -> float:
        """Sum of ``value`` over the workers (metrics of a data-parallel epoch)."""
        return value

    def reduce_max(self, value: float) -> float:
        """The largest ``value`` over the workers. The loop passes its clock and its stop flag through
        this, so that every worker stops at the same step and follows the same schedule."""
        return value

    def release(self, model: nn.Module) -> nn.Module:
        """Back to the CPU in the default layout, ready to export."""
        return model.to(memory_format=torch.contiguous_format).to("cpu")  # type: ignore[call-overload]


class CPUStrategy(DeviceStrategy):
    name = "cpu"

    def __init__(self, *, channels_last: bool = True) -> None:
        super().__init__("cpu", channels_last=channels_last)


class CUDAStrategy(DeviceStrategy):
    """One CUDA device with autocast mixed precision; float16 needs a gradient scaler, bfloat16 does not."""

    name = "cuda"

    def __init__(self, index: int = 0, *, channels_last: bool = True) -> None:
        super().__init__(torch.device("cuda", index), channels_last=channels_last)
        self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(device_type="cuda", dtype=self.dtype)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
        self.scaler.step(optimizer)
        self.scaler.update()


class DataParallelStrategy(DeviceStrategy):
    """Several workers, one replica each, gradients averaged by DistributedDataParallel.

    ``inner`` is the per-worker device strategy (CPU or CUDA). The torch.distributed process group must
    be initialised before the loop starts (the compute backend does it: rank, world size, rendezvous).
    Every worker must be given the same seed so that all draw the same epoch order before sharding; the
    loop agrees on the clock and on cancellation through ``reduce_max``, so all workers take the same
    steps with the same learning rates. Reporting and exporting are the caller's to do on rank 0 only.
    """

    name = "data_parallel"

    def __init__(self, inner: DeviceStrategy) -> None:
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            raise TrainingError(
                "Data-parallel training needs an initialised torch.distributed process group.",
                hint="Start the workers through a compute that sets it up (a Ray compute), or train on "
                "one device.",
            )
        super().__init__(inner.device, channels_last=inner.channels_last)
        self.inner = inner
        self.world_size = dist.get_world_size()
        self.rank = dist.get_rank()

    def prepare(self, model: nn.Module) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        self.inner.prepare(model)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return self.inner.autocast()

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        self.inner.step(loss, optimizer)

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        # Equal shards (the remainder is left out of this epoch), so every worker takes the same batches.
        usable = len(order) - len(order) % self.world_size
        return order[self.rank:usable:self.world_size]

    def batch_size(self, global_batch: int) -> int:
        # The plan's batch is the global one: splitting it keeps the optimizer steps per epoch and the
        # learning-rate schedule of one worker (a doubled global batch halved the steps and cost accuracy).
        return max(1, global_batch // self.world_size)

    def reduce_sum(self, value: float) -> float:
        import torch.distributed as dist

        total = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return float(total.item())

    def reduce_max(self, value: float) -> float:
        import torch.distributed as dist

        largest = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(largest, op=dist.ReduceOp.MAX)
        return float(largest.item())


def default_strategy() -> DeviceStrategy:
    """A CUDA device when there is one, else the CPU."""
    return CUDAStrategy() if torch.cuda.is_available() else CPUStrategy()
