"""Helpers of the contract suite: drive a run to any status through allowed transitions only."""

from __future__ import annotations

from collections import deque
from typing import Any

from modelbuilder.entities import RUN_TRANSITIONS, RunStatus
from modelbuilder.store import MetadataStore


def path_to(target: RunStatus) -> list[RunStatus]:
    """The shortest chain of allowed transitions from NotStarted to ``target``."""
    queue: deque[list[RunStatus]] = deque([[RunStatus.NOT_STARTED]])
    while queue:
        chain = queue.popleft()
        if chain[-1] is target:
            return chain[1:]
        queue.extend(chain + [nxt] for nxt in sorted(RUN_TRANSITIONS[chain[-1]]) if nxt not in chain)
    raise AssertionError(f"{target} unreachable")


def new_run(store: MetadataStore, status: RunStatus = RunStatus.NOT_STARTED, **kwargs: Any) -> str:
    experiment = store.get_or_create_experiment(kwargs.pop("experiment", "contract"))
    run = store.create_run(experiment.id, **kwargs)
    for step in path_to(status):
        store.set_run_status(run.id, step)
    return run.id
