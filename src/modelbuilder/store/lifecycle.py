"""The one run lifecycle: every change of a run's status goes through this module.

The allowed transitions are data (``ALLOWED``, the table the store enforces too). Each function here names
one thing that happens to a run (it is queued, its worker starts, it completes, it is lost...) and moves
it along the shortest allowed path to the state that event means, one compare-and-set at a time
(``MetadataStore.set_run_status``), so two processes that race on one run can never both win:

- a step refused because another process changed the run first is re-read and re-planned from the state
  that process left, so e.g. ``complete`` after a cancel arrived during ``Finalizing`` is refused with the
  run's real state, and the worker then ends the run ``Canceled`` (its outputs are kept, as for any cancel);
- ``mark_lost`` is idempotent: two reapers of one lost run give one ``Failed`` run and no error;
- ``request_cancel`` of a run no worker has picked up (``NotStarted``, ``Queued``) ends it ``Canceled`` at
  once; an active run goes to ``CancelRequested`` and its worker ends it. The caller that knows the worker is
  gone (``services.runs.cancel_run``) ends it with ``end_canceled``: a cancel of a run whose worker just died
  ends ``Canceled``, unless a reaper marked it lost first (then it stays ``Failed``: both say it is over);
- terminal runs never change. Resuming a ``Canceled`` (or ``Failed``) run is allowed, and is not a
  transition: ``services.training_run.resume_training`` starts a *new* run from the old run's checkpoint,
  and the old run stays as it ended.

Nothing outside ``modelbuilder.store`` calls ``set_run_status``; this module works over any MetadataStore,
so the worker (``compute``), the services, the CLI and the portal share it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping
from types import MappingProxyType

from .. import hints
from ..entities import RUN_TRANSITIONS, Run, RunError, RunStatus
from ..errors import InvalidStateError
from .base import MetadataStore

logger = logging.getLogger(__name__)

#: The allowed status changes, by current status (shared with the store, which enforces it atomically).
ALLOWED: Mapping[RunStatus, frozenset[RunStatus]] = MappingProxyType(RUN_TRANSITIONS)

#: The text every lost run's error starts with (the portal and CLI show ``Failed (process lost)``).
LOST = "process lost"

#: Re-plans after a lost race before giving up (each race means another process moved the run on).
_MAX_RACES = 8

_VERBS = {
    RunStatus.NOT_STARTED: "reset",
    RunStatus.QUEUED: "queued",
    RunStatus.PREPARING: "prepared",
    RunStatus.RUNNING: "started",
    RunStatus.FINALIZING: "finalized",
    RunStatus.CANCEL_REQUESTED: "asked to cancel",
    RunStatus.COMPLETED: "completed",
    RunStatus.FAILED: "failed",
    RunStatus.CANCELED: "canceled",
}


def path_between(current: RunStatus, target: RunStatus) -> list[RunStatus] | None:
    """The shortest list of statuses that leads from ``current`` to ``target`` through ``ALLOWED``
    (``[]`` when they are equal), or None when ``target`` cannot be reached."""
    if current is target:
        return []
    previous: dict[RunStatus, RunStatus] = {}
    queue = deque([current])
    while queue:
        status = queue.popleft()
        for following in sorted(ALLOWED[status], key=lambda s: s.value):
            if following in previous or following is current:
                continue
            previous[following] = status
            if following is target:
                path = [target]
                while previous[path[-1]] is not current:
                    path.append(previous[path[-1]])
                return path[::-1]
            queue.append(following)
    return None


def is_lost(run: Run) -> bool:
    """True when the run ended Failed because its worker was lost."""
    return run.status is RunStatus.FAILED and run.error is not None and run.error.message.startswith(LOST)


def _refusal(run: Run, target: RunStatus) -> InvalidStateError:
    allowed = ", ".join(sorted(s.value for s in ALLOWED[run.status])) or "none"
    show = hints.command("run", "show", hints.short_id(run.id))
    if run.status in (RunStatus.FAILED, RunStatus.CANCELED):
        resume = hints.command("train", resume=hints.short_id(run.id))
        hint = f"A run that ended never changes. Continue it as a new run from its last checkpoint: {resume}"
    elif run.status.is_terminal:
        hint = f"A run that ended never changes; see it with: {show}"
    else:
        hint = f"Wait for it to end, or see where it is: {show}"
    return InvalidStateError(
        f"Run '{run.id}' is {run.status.value}; it cannot be {_VERBS[target]} "
        f"(from {run.status.value} it may go to: {allowed}).",
        hint=hint,
    )


def _move(
    store: MetadataStore,
    run_id: str,
    target: RunStatus,
    *,
    error: RunError | None = None,
    phase: str | None = None,
    already_ok: bool = False,
    max_steps: int = 1,
) -> Run:
    """Move the run to ``target`` along the shortest allowed path of at most ``max_steps`` changes;
    re-plan when another process wins a step. With ``already_ok``, a run already in ``target`` is
    returned unchanged. ``max_steps`` keeps events honest: a run can skip ``Finalizing`` on its way to
    ``Completed``, but a run no worker ever took cannot be completed."""
    run = store.get_run(run_id)
    for _ in range(_MAX_RACES):
        if run.status is target and already_ok:
            return run
        path = path_between(run.status, target)
        if not path or len(path) > max_steps:
            raise _refusal(run, target)
        try:
            for step in path:
                final = step is target
                run = store.set_run_status(
                    run.id, step, error=error if final else None, phase=phase if final else None
                )
            logger.debug("Run %s is now %s", run.id, run.status.value)
            return run
        except InvalidStateError:
            # Another process changed the run between our read and our write: plan again from there.
            run = store.get_run(run.id)
    raise _refusal(run, target)


def queue(store: MetadataStore, run_id: str) -> Run:
    """``NotStarted -> Queued``: the run waits for a worker.

    Raises:
        InvalidStateError: the run is not NotStarted.
    """
    return _move(store, run_id, RunStatus.QUEUED)


def prepare(store: MetadataStore, run_id: str, phase: str | None = None) -> Run:
    """``-> Preparing``: a worker took the run. Strict (a run already Preparing is refused), so two
    workers started for one run cannot both take it.

    Raises:
        InvalidStateError: the run is past Preparing, asked to cancel, or ended.
    """
    return _move(store, run_id, RunStatus.PREPARING, phase=phase)


def start(store: MetadataStore, run_id: str, phase: str | None = None) -> Run:
    """``-> Running`` (through Preparing from Queued); a run already Running only gets the phase.

    Raises:
        InvalidStateError: the run is finalizing, asked to cancel, or ended.
    """
    run = _move(store, run_id, RunStatus.RUNNING, phase=phase, already_ok=True, max_steps=2)
    if phase is not None and run.phase != phase:
        run = store.set_run_phase(run.id, phase)
    return run


def finalize(store: MetadataStore, run_id: str, phase: str | None = None) -> Run:
    """``-> Finalizing``: training is done, the outputs are being recorded.

    Raises:
        InvalidStateError: the run was asked to cancel or ended.
    """
    return _move(store, run_id, RunStatus.FINALIZING, phase=phase, already_ok=True, max_steps=2)


def complete(store: MetadataStore, run_id: str) -> Run:
    """``Finalizing -> Completed`` (through Finalizing from an earlier active state).

    Raises:
        InvalidStateError: the run was asked to cancel (end it with ``end_canceled``) or ended.
    """
    return _move(store, run_id, RunStatus.COMPLETED, max_steps=2)


def request_cancel(store: MetadataStore, run_id: str) -> Run:
    """Ask a run to stop: ``NotStarted``/``Queued`` end ``Canceled`` at once (no worker has it yet); an
    active run goes to ``CancelRequested`` (its worker stops at its next safe point); a run already asked
    is returned as it is.

    Raises:
        InvalidStateError: the run already ended.
    """
    run = store.get_run(run_id)
    for _ in range(_MAX_RACES):
        if run.status.is_terminal:
            raise InvalidStateError(
                f"Run '{run.id}' already ended ({run.status.value}); there is nothing to cancel.",
                hint=f"See it with: {hints.command('run', 'show', hints.short_id(run.id))}",
            )
        target = (
            RunStatus.CANCELED
            if run.status in (RunStatus.NOT_STARTED, RunStatus.QUEUED)
            else RunStatus.CANCEL_REQUESTED
        )
        try:
            return _move(store, run.id, target, already_ok=True)
        except InvalidStateError:
            run = store.get_run(run.id)
    raise _refusal(run, RunStatus.CANCEL_REQUESTED)


def end_canceled(store: MetadataStore, run_id: str) -> Run:
    """``-> Canceled`` (through CancelRequested from an active state); a Canceled run is returned.

    Raises:
        InvalidStateError: the run ended otherwise (Completed or Failed).
    """
    return _move(store, run_id, RunStatus.CANCELED, already_ok=True, max_steps=2)


def fail(store: MetadataStore, run_id: str, error: RunError) -> Run:
    """``-> Failed`` with the error's type, message and hint.

    Raises:
        InvalidStateError: the run already ended.
    """
    return _move(store, run_id, RunStatus.FAILED, error=error)


def lost_error(run_id: str, reason: str) -> RunError:
    """The error of a run whose worker vanished without ending it."""
    return RunError(
        "TrainingError",
        f"{LOST}: {reason}",
        f"Continue it from its last checkpoint: {hints.command('train', resume=hints.short_id(run_id))}",
    )


def mark_lost_if_active(store: MetadataStore, run_id: str, reason: str) -> Run | None:
    """End an active run ``Failed`` (``process lost: <reason>``) with its active trials; None when the
    run had already ended (another reaper, or its worker, got there first)."""
    run = store.get_run(run_id)
    if run.status.is_terminal:
        return None
    error = lost_error(run.id, reason)
    end_children(store, run.id, RunStatus.FAILED, error)
    try:
        return _move(store, run.id, RunStatus.FAILED, error=error)
    except InvalidStateError:
        return None  # it ended meanwhile


def mark_lost(store: MetadataStore, run_id: str, reason: str) -> Run:
    """``-> Failed`` with ``process lost: <reason>``; idempotent: a run that already ended (another
    reaper marked it, or its worker ended it just in time) is returned as it is, without an error."""
    ended = mark_lost_if_active(store, run_id, reason)
    return ended if ended is not None else store.get_run(run_id)


def end_children(
    store: MetadataStore, run_id: str, status: RunStatus, error: RunError | None = None
) -> list[Run]:
    """End every active trial (child run) of a run with ``status``; return those this call ended.

    Trials that end meanwhile are left as they are.
    """
    ended = []
    for child in store.list_child_runs(run_id):
        if child.status.is_terminal:
            continue
        try:
            if status is RunStatus.FAILED:
                ended.append(fail(store, child.id, error or RunError("TrainingError", "the run failed")))
            elif status is RunStatus.CANCELED:
                ended.append(end_canceled(store, child.id))
            elif status is RunStatus.COMPLETED:
                ended.append(complete(store, child.id))
            else:
                raise ValueError(f"end_children takes a terminal status, not {status.value}")
        except InvalidStateError:
            continue
    return ended


def end(store: MetadataStore, run_id: str, status: RunStatus, error: RunError | None = None) -> Run:
    """End a run with a terminal ``status`` (``complete``, ``end_canceled`` or ``fail``).

    Raises:
        InvalidStateError: the run cannot reach that status (it ended, or a cancel came first).
    """
    if status is RunStatus.COMPLETED:
        return complete(store, run_id)
    if status is RunStatus.CANCELED:
        return end_canceled(store, run_id)
    if status is RunStatus.FAILED:
        return fail(store, run_id, error or RunError("TrainingError", "the run failed"))
    raise ValueError(f"end takes a terminal status, not {status.value}")
