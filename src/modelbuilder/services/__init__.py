"""Use cases that combine the pieces: workspaces, computes, experiments and training runs.

The CLI, the Python API (``modelbuilder.workspace``) and the portal call these; nothing here prints.

- ``workspaces``: resource groups, workspaces, ``open_workspace`` (a ``WorkspaceSession``);
- ``computes``: provision / list / delete computes, ``require_usable_compute``;
- ``experiments``: get-or-create by name;
- ``training_run``: ``submit_training`` and ``resume_training``;
- ``runs``: follow and supervise runs, ``reap_stale_runs`` / ``reap_lost_runs``, cancel, kill,
  download, results;
- ``artifacts``: a run's recorded artifacts, its files and their (path-safe) real paths;
- ``portal_links``: a run's portal address, only when a portal of this home answers;
- ``views``: entities as JSON-ready dicts.

A long-lived process (the portal) opens the catalog once (``workspaces.open_catalog``) and passes it as
``catalog=``; everything else takes a ``WorkspaceSession``.
"""

from __future__ import annotations

from . import artifacts, computes, experiments, runs, training_run, views, workspaces
from .runs import reap_lost_runs, reap_stale_runs
from .training_run import Submission, resume_training, submit_training
from .workspaces import WorkspaceSession, open_workspace

__all__ = [
    "Submission",
    "WorkspaceSession",
    "artifacts",
    "computes",
    "experiments",
    "open_workspace",
    "reap_lost_runs",
    "reap_stale_runs",
    "resume_training",
    "runs",
    "submit_training",
    "training_run",
    "views",
    "workspaces",
]
