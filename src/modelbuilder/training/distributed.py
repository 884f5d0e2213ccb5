"""Which worker of a data-parallel run this process is, and how rank 0's decisions reach the others.

A data-parallel run starts the same trainer in every worker (the Ray backend's ``TorchTrainer``). Rank 0
is the run: it measures the machine, makes and revises the plan, computes the features, decides which
trial runs next, exports and writes every output and event. The other ranks only take part in the
gradient steps (``DataParallelStrategy``); for that they must run exactly the same trials with the same
plan, so every decision that depends on rank 0's clock is *shared* from rank 0 (``share``) instead of
being made again from the worker's own clock. With one worker (``SINGLE``) every method is the identity
and no process group is needed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

from .plan import Plan

T = TypeVar("T")


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the run: ``rank`` of ``world_size`` workers."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the worker that reports, exports and writes outputs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_process_group(cls) -> DistributedContext:
        """The context of the initialised torch.distributed process group (``SINGLE`` without one)."""
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            return SINGLE
        return cls(dist.get_rank(), dist.get_world_size())

    def share(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (the others pass anything, e.g. None). Must be called by all
        ranks at the same point: it is a collective."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        box: list[Any] = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[no-any-return]

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value``, in rank order, on every rank (a collective)."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def sync_plan(self, plan: Plan) -> None:
        """Make ``plan`` rank 0's plan, in place (the search iterates over its trial objects)."""
        data = self.share(plan.to_dict() if self.is_main else None)
        if self.is_main or data is None:
            return
        adopt_plan(plan, Plan.from_dict(data))


def adopt_plan(plan: Plan, source: Plan) -> None:
    """Copy ``source`` into ``plan`` field by field, keeping ``plan``'s trial objects.

    Raises:
        ValueError: the plans list different trials (the ranks were started with different configs).
    """
    if [t.name for t in plan.trials] != [t.name for t in source.trials]:
        raise ValueError(f"rank 0 plans the trials {[t.name for t in source.trials]}, this rank "
                         f"{[t.name for t in plan.trials]}: the workers must be given the same config")
    for field in dataclasses.fields(plan):
        if field.name != "trials":
            setattr(plan, field.name, getattr(source, field.name))
    for mine, theirs in zip(plan.trials, source.trials, strict=True):
        for field in dataclasses.fields(mine):
            setattr(mine, field.name, getattr(theirs, field.name))


#: One worker: no process group, every decision is this process's own.
SINGLE = DistributedContext()


class SilentReporter:
    """The reporter of ranks other than 0: they take part in the steps but say nothing (rank 0 reports
    for the run, and its ``should_stop`` reaches them through the loop's ``reduce_max``)."""

    def phase(self, name: str, message: str = "") -> None:
        pass

    def progress(self, task: str, completed: int, total: int | None) -> None:
        pass

    def metric(self, key: str, value: float, step: int = 0, trial: str | None = None) -> None:
        pass

    def log(self, line: str) -> None:
        pass

    def trial_started(self, trial: str, params: dict[str, Any]) -> None:
        pass

    def trial_ended(self, trial: str, status: str, metrics: dict[str, float]) -> None:
        pass

    def artifact(self, path: Any, name: str) -> None:
        pass

    def should_stop(self) -> bool:
        return False
