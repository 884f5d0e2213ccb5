"""Computes: the size catalog, compute specs, provisioning, and the backends that run training jobs.

``ComputeSpec.create(...)`` validates a compute once; ``get_backend(spec.backend)`` is its plugin, which
checks whether it can ever satisfy the size (``check(spec) -> Fit``) and runs jobs on it
(``start(job, spec) -> WorkerHandle``, ``find(job, spec)``). The local backend starts
``python -m modelbuilder.compute.worker`` in its own process; the ray backend registers itself when its
extra is installed. ``compute.events`` is how a backend whose worker cannot reach the store ships a run's
events back.
"""

from __future__ import annotations

from .backend import (
    ComputeBackend,
    Fit,
    WorkerHandle,
    WorkerState,
    WorkerStatus,
    get_backend,
    known_backends,
    register_backend,
)
from .job import DEFAULT_TRAINING_TARGET, RunFolders, TrainingJob, WorkerRecord
from .local import LocalBackend, LocalWorkerHandle
from .spec import ComputeSpec

__all__ = [
    "DEFAULT_TRAINING_TARGET",
    "ComputeBackend",
    "ComputeSpec",
    "Fit",
    "LocalBackend",
    "LocalWorkerHandle",
    "RunFolders",
    "TrainingJob",
    "WorkerHandle",
    "WorkerRecord",
    "WorkerState",
    "WorkerStatus",
    "get_backend",
    "known_backends",
    "register_backend",
]
