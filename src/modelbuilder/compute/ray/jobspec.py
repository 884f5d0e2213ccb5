"""What the cluster is told about one run: ``RayJobSpec``, passed to the entrypoint as base64 JSON.

Its own small module, so the package's ``__init__`` (which registers the backend) never imports the
entrypoint module that ``python -m`` runs.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ...entities import ComputeSize

JOB_FORMAT_VERSION = 1


@dataclass(frozen=True)
class WorkerPlan:
    """How a size runs its training: ``workers`` processes (data-parallel when more than one), each with
    ``cpus_per_worker`` CPUs and, with ``use_gpu``, one GPU."""

    workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 0.0

    @property
    def data_parallel(self) -> bool:
        return self.workers > 1


def worker_plan(size: ComputeSize, nodes: int = 1) -> WorkerPlan:
    """The training workers of ``size``: one per GPU (NCCL) for a GPU size; for a CPU size, the compute's
    node count (``max_nodes``) of workers sharing the size's vCPUs (gloo), at most one per vCPU. The whole
    size stays one request on one node (the workers are packed with ``STRICT_PACK``, as on one VM)."""
    if size.gpus:
        return WorkerPlan(size.gpus, True, size.vcpus / size.gpus)
    workers = max(1, min(nodes, size.vcpus))
    return WorkerPlan(workers, False, size.vcpus / workers)


@dataclass(frozen=True)
class RayJobSpec:
    """What the cluster needs to run one training run (no store URL, no credentials).

    Args:
        run_id: the run.
        config: ``TrainingConfig.to_dict()``; its ``data`` is a path the cluster can read, or "" when
            the data was uploaded as the job's working directory.
        target: ``module:function`` of the trainer.
        output_dir: where the trainer writes its outputs ("" : a folder in the job's working directory).
        checkpoint_dir: where it keeps checkpoints ("" : none).
        workers, use_gpu, cpus_per_worker: the ``WorkerPlan``; with more than one worker the entrypoint
            trains in a Ray Train worker group and itself asks for no CPUs or GPUs (the workers hold the
            size), else it trains in its own process and asks for the whole size.
    """

    run_id: str
    config: dict[str, Any]
    target: str
    output_dir: str = ""
    checkpoint_dir: str = ""
    workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 0.0
    format_version: int = JOB_FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def worker_plan(self) -> WorkerPlan:
        return WorkerPlan(self.workers, self.use_gpu, self.cpus_per_worker)

    def entrypoint_resources(self, size: ComputeSize) -> tuple[float, float]:
        """The CPUs and GPUs the entrypoint itself asks for."""
        return (0.0, 0.0) if self.worker_plan.data_parallel else (float(size.vcpus), float(size.gpus))

    def to_argument(self) -> str:
        return base64.urlsafe_b64encode(json.dumps(asdict(self)).encode()).decode()

    @classmethod
    def from_argument(cls, text: str) -> RayJobSpec:
        data = json.loads(base64.urlsafe_b64decode(text.encode()))
        if data.get("format_version") != JOB_FORMAT_VERSION:
            raise ValueError(f"job format {data.get('format_version')!r}, expected {JOB_FORMAT_VERSION}")
        return cls(**data)
