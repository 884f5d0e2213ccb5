"""Use cases that combine the pieces: workspaces, computes, experiments and training runs.

The CLI, the Python API (``modelbuilder.workspace``) and the portal call these; nothing here prints.

- ``workspaces``: resource groups, workspaces, ``open_workspace`` (a ``WorkspaceSession``);
- ``computes``: provision / list / delete computes, ``require_usable_compute``;
- ``experiments``: get-or-create by name;
- ``training_run``: ``submit_training`` and ``resume_training``;
- ``runs``: follow and supervise runs, ``reap_stale_runs`` / ``reap_lost_runs``, cancel, kill,
  download, results;
- ``views``: entities as JSON-ready dicts.
"""

from __future__ import annotations

from . import computes, experiments, runs, training_run, views, workspaces
from .runs import reap_lost_runs, reap_stale_runs
from .training_run import Submission, resume_training, submit_training
from .workspaces import WorkspaceSession, open_workspace

__all__ = [
    "Submission",
    "WorkspaceSession",
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
