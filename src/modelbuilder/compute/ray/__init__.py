"""The Ray backend: provision computes on a Ray cluster and run training there as Ray jobs.

Importing this package registers the ``ray`` backend (``compute.backend`` imports it on first use).
Modules: ``cluster`` (address, token, dashboard HTTP), ``resources`` (live node resources, can a size
ever be scheduled), ``jobs`` (one Ray job per run), ``jobspec`` (what the job is told), ``entrypoint``
(the job's side: run events as log lines), ``events`` (that line format), ``follow`` (this machine's
side: events into the store), ``backend`` (the plugin).
Needs the ``[ray]`` extra: ``pip install "modelbuilder[ray]"``.
"""

from __future__ import annotations

import ray.job_submission  # noqa: F401 - without the extra, this ImportError names "ray": the install hint

from ..backend import register_backend
from .backend import RayBackend, RayWorkerHandle

register_backend(RayBackend.name, RayBackend)

__all__ = ["RayBackend", "RayWorkerHandle"]
