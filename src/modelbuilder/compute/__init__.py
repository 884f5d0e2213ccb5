"""Computes: the size catalog, provisioning, and the backends that run training jobs.

``get_compute_backend(compute.backend).start(job)`` runs a ``TrainingJob``; the local backend starts
``python -m modelbuilder.compute.worker`` in its own process. Ray registers its backend here when its
extra is installed.
"""

from __future__ import annotations

from .backend import (
    LOST_EXIT_CODE,
    ComputeBackend,
    WorkerHandle,
    get_compute_backend,
    register_compute_backend,
)
from .job import DEFAULT_TRAINING_TARGET, RunFolders, TrainingJob, WorkerRecord
from .local import LocalBackend, LocalWorkerHandle

__all__ = [
    "DEFAULT_TRAINING_TARGET",
    "LOST_EXIT_CODE",
    "ComputeBackend",
    "LocalBackend",
    "LocalWorkerHandle",
    "RunFolders",
    "TrainingJob",
    "WorkerHandle",
    "WorkerRecord",
    "get_compute_backend",
    "register_compute_backend",
]
