"""The run lifecycle: every event from every status (allowed and refused), errors as data, and races."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from modelbuilder.entities import RUN_TRANSITIONS, Run, RunError, RunStatus
from modelbuilder.errors import (
    DatasetError,
    ImageError,
    InvalidStateError,
    ModelBuilderError,
    TrainingError,
)
from modelbuilder.store import MetadataStore, SqlAlchemyStore, lifecycle, sqlite_file_url

S = RunStatus
ERROR = RunError("DatasetError", "No images in '/data'.", "Add images.")


@pytest.fixture
def url(tmp_path: Path, store_url: str | None) -> str:
    return store_url or sqlite_file_url(tmp_path / "ws" / "workspace.db")


@pytest.fixture
def store(url: str) -> Iterator[MetadataStore]:
    opened = SqlAlchemyStore(url, workspace="ws1")
    yield opened
    opened.close()


def run_in(store: MetadataStore, status: RunStatus) -> str:
    """A new run driven to ``status`` through the store's own transitions."""
    run = store.create_run(store.get_or_create_experiment("life").id)
    path = lifecycle.path_between(S.NOT_STARTED, status)
    assert path is not None
    for step in path:
        store.set_run_status(run.id, step)
    return run.id


EVENTS: dict[str, Callable[[MetadataStore, str], Run]] = {
    "queue": lifecycle.queue,
    "prepare": lifecycle.prepare,
    "start": lifecycle.start,
    "finalize": lifecycle.finalize,
    "complete": lifecycle.complete,
    "request_cancel": lifecycle.request_cancel,
    "end_canceled": lifecycle.end_canceled,
    "fail": lambda store, run_id: lifecycle.fail(store, run_id, ERROR),
    "mark_lost": lambda store, run_id: lifecycle.mark_lost(store, run_id, "worker pid 1 is gone"),
}

_ACTIVE = (S.QUEUED, S.PREPARING, S.RUNNING, S.FINALIZING, S.CANCEL_REQUESTED)
# What each event does from each status: the resulting status, or None where it is refused. Written out
# by hand (not derived from the table) so a change of the table or of an event shows up here.
EXPECTED: dict[str, dict[RunStatus, RunStatus | None]] = {
    "queue": {S.NOT_STARTED: S.QUEUED},
    "prepare": {S.QUEUED: S.PREPARING},
    "start": {S.QUEUED: S.RUNNING, S.PREPARING: S.RUNNING, S.RUNNING: S.RUNNING},
    "finalize": {S.PREPARING: S.FINALIZING, S.RUNNING: S.FINALIZING, S.FINALIZING: S.FINALIZING},
    "complete": {S.RUNNING: S.COMPLETED, S.FINALIZING: S.COMPLETED},
    "request_cancel": {
        S.NOT_STARTED: S.CANCELED,
        S.QUEUED: S.CANCELED,
        S.PREPARING: S.CANCEL_REQUESTED,
        S.RUNNING: S.CANCEL_REQUESTED,
        S.FINALIZING: S.CANCEL_REQUESTED,
        S.CANCEL_REQUESTED: S.CANCEL_REQUESTED,
    },
    "end_canceled": {
        S.NOT_STARTED: S.CANCELED,
        S.QUEUED: S.CANCELED,
        S.PREPARING: S.CANCELED,
        S.RUNNING: S.CANCELED,
        S.FINALIZING: S.CANCELED,
        S.CANCEL_REQUESTED: S.CANCELED,
        S.CANCELED: S.CANCELED,
    },
    "fail": {status: S.FAILED for status in (S.NOT_STARTED, *_ACTIVE)},
    # mark_lost never raises: a run that already ended is returned as it is.
    "mark_lost": {
        **{status: S.FAILED for status in (S.NOT_STARTED, *_ACTIVE)},
        S.COMPLETED: S.COMPLETED,
        S.FAILED: S.FAILED,
        S.CANCELED: S.CANCELED,
    },
}


def test_allowed_is_the_table_the_store_enforces() -> None:
    assert dict(lifecycle.ALLOWED) == RUN_TRANSITIONS
    assert all(not lifecycle.ALLOWED[s] for s in (S.COMPLETED, S.FAILED, S.CANCELED))
    assert S.CANCELED in lifecycle.ALLOWED[S.QUEUED]  # a cancel needs no worker before one took it


@pytest.mark.parametrize("event", sorted(EVENTS))
def test_every_event_from_every_status(store: MetadataStore, event: str) -> None:
    checked = 0
    for status in RunStatus:
        run_id = run_in(store, status)
        expected = EXPECTED[event].get(status)
        if expected is None:
            with pytest.raises(InvalidStateError) as info:
                EVENTS[event](store, run_id)
            assert info.value.hint, f"{event} from {status.value}: a refusal needs a hint"
            assert status.value in info.value.message and run_id in info.value.message
            assert store.get_run(run_id).status is status, "a refused event changes nothing"
        else:
            assert EVENTS[event](store, run_id).status is expected, f"{event} from {status.value}"
            assert store.get_run(run_id).status is expected
        checked += 1
    assert checked == len(RunStatus)


def test_refusals_say_what_to_do(store: MetadataStore) -> None:
    canceled = run_in(store, S.CANCELED)
    with pytest.raises(InvalidStateError) as info:
        lifecycle.start(store, canceled)
    assert f"modelbuilder train --resume {canceled[:12]}" in (info.value.hint or "")
    completed = run_in(store, S.COMPLETED)
    with pytest.raises(InvalidStateError, match="already ended") as info:
        lifecycle.request_cancel(store, completed)
    assert f"modelbuilder run show {completed[:12]}" in (info.value.hint or "")
    asked = run_in(store, S.CANCEL_REQUESTED)
    with pytest.raises(InvalidStateError, match="cannot be completed") as info:
        lifecycle.complete(store, asked)
    assert "Wait for it to end" in (info.value.hint or "")


def test_phases_and_times(store: MetadataStore) -> None:
    run_id = run_in(store, S.QUEUED)
    prepared = lifecycle.prepare(store, run_id, phase="starting the worker")
    assert prepared.phase == "starting the worker" and prepared.started_at is not None
    assert lifecycle.start(store, run_id, phase="training").phase == "training"
    assert lifecycle.start(store, run_id, phase="trial 2").phase == "trial 2"  # already Running
    assert lifecycle.finalize(store, run_id, phase="recording outputs").phase == "recording outputs"
    done = lifecycle.complete(store, run_id)
    assert done.status is S.COMPLETED and done.ended_at is not None and done.error is None


def test_fail_stores_the_error_as_three_fields(store: MetadataStore, url: str) -> None:
    run_id = run_in(store, S.RUNNING)
    failed = lifecycle.fail(store, run_id, ERROR)
    assert failed.error == ERROR and store.get_run(run_id).error == ERROR
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT error, error_type, error_hint FROM runs WHERE id = :id"), {"id": run_id}
        ).one()
    engine.dispose()
    assert tuple(row) == ("No images in '/data'.", "DatasetError", "Add images.")


def test_an_error_written_before_the_three_fields_is_read_back_split(store: MetadataStore, url: str) -> None:
    run_id = run_in(store, S.RUNNING)
    lifecycle.fail(store, run_id, ERROR)
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # what an older modelbuilder wrote: the hint packed into the text
        conn.execute(
            sa.text("UPDATE runs SET error = :e, error_type = NULL, error_hint = NULL WHERE id = :id"),
            {"e": "Bad data.\nHint: Fix it.", "id": run_id},
        )
    engine.dispose()
    assert store.get_run(run_id).error == RunError("TrainingError", "Bad data.", "Fix it.")


def test_mark_lost_ends_active_trials_and_says_how_to_resume(store: MetadataStore) -> None:
    run_id = run_in(store, S.RUNNING)
    parent = store.get_run(run_id)
    trial = store.create_run(parent.experiment_id, parent_run_id=run_id, status=S.RUNNING)
    done = store.create_run(parent.experiment_id, parent_run_id=run_id, status=S.RUNNING)
    lifecycle.complete(store, done.id)
    lost = lifecycle.mark_lost(store, run_id, "worker pid 42 on host-a is gone")
    assert lost.status is S.FAILED and lifecycle.is_lost(lost)
    assert lost.error is not None and lost.error.message == "process lost: worker pid 42 on host-a is gone"
    assert f"train --resume {run_id[:12]}" in (lost.error.hint or "")
    assert store.get_run(trial.id).status is S.FAILED and store.get_run(done.id).status is S.COMPLETED
    again = lifecycle.mark_lost(store, run_id, "a second reaper")
    assert again == store.get_run(run_id) and again.error == lost.error, "the first reaper's error stays"
    assert lifecycle.mark_lost_if_active(store, run_id, "a third reaper") is None


# --- races -------------------------------------------------------------------------------------------


def _reap(url: str, run_id: str, name: str, start: multiprocessing.synchronize.Event, out: object) -> None:
    store = SqlAlchemyStore(url, workspace="ws1")
    try:
        start.wait(10)
        ended = lifecycle.mark_lost_if_active(store, run_id, f"seen by {name}")
        out.put((name, None if ended is None else ended.status.value))  # type: ignore[attr-defined]
    except BaseException as exc:  # report it: the test fails on any error
        out.put((name, f"error: {type(exc).__name__}: {exc}"))  # type: ignore[attr-defined]
    finally:
        store.close()


def test_two_processes_reaping_one_lost_run_give_one_failed_run(store: MetadataStore, url: str) -> None:
    context = multiprocessing.get_context("spawn")
    for attempt in range(3):
        run_id = run_in(store, S.RUNNING)
        start, out = context.Event(), context.Queue()
        reapers = [
            context.Process(target=_reap, args=(url, run_id, f"reaper-{i}", start, out)) for i in range(2)
        ]
        for process in reapers:
            process.start()
        start.set()
        results = dict(out.get(timeout=60) for _ in reapers)
        for process in reapers:
            process.join(30)
        assert sorted(map(str, results.values())) == ["Failed", "None"], (attempt, results)
        winner = next(name for name, status in results.items() if status == "Failed")
        final = store.get_run(run_id)
        assert final.status is S.FAILED and final.error is not None
        assert final.error.message == f"process lost: seen by {winner}"


def _race(store: MetadataStore, run_id: str) -> list[str]:
    """complete, mark_lost, request_cancel and fail of one run at the same moment, from four threads."""
    barrier = threading.Barrier(4)
    outcomes: list[str] = []
    events: dict[str, Callable[[], Run]] = {
        "complete": lambda: lifecycle.complete(store, run_id),
        "lost": lambda: lifecycle.mark_lost(store, run_id, "x"),
        "cancel": lambda: lifecycle.request_cancel(store, run_id),
        "fail": lambda: lifecycle.fail(store, run_id, ERROR),
    }

    def attempt(name: str) -> None:
        barrier.wait()
        try:
            outcomes.append(f"{name}:{events[name]().status.value}")
        except InvalidStateError:
            outcomes.append(f"{name}:refused")

    threads = [threading.Thread(target=attempt, args=(name,)) for name in events]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return outcomes


def test_threads_racing_to_end_one_run_leave_exactly_one_end(store: MetadataStore) -> None:
    for _ in range(5):
        run_id = run_in(store, S.FINALIZING)
        outcomes = _race(store, run_id)
        final = store.get_run(run_id).status
        assert len(outcomes) == 4 and final in (S.COMPLETED, S.FAILED, S.CANCEL_REQUESTED), outcomes
        # Whoever reports a terminal status saw the one the run has now (mark_lost returns the run as is).
        ended = {outcome.split(":")[1] for outcome in outcomes} & {"Completed", "Failed", "Canceled"}
        assert ended <= {final.value}, outcomes


def test_cancel_during_finalizing_ends_canceled(store: MetadataStore) -> None:
    run_id = run_in(store, S.RUNNING)
    lifecycle.finalize(store, run_id, phase="recording outputs")
    assert lifecycle.request_cancel(store, run_id).status is S.CANCEL_REQUESTED
    with pytest.raises(InvalidStateError):
        lifecycle.complete(store, run_id)  # the worker's complete loses to the cancel...
    assert lifecycle.end_canceled(store, run_id).status is S.CANCELED  # ...and it ends the run Canceled


def test_cancel_of_a_run_whose_worker_just_died(store: MetadataStore) -> None:
    # The cancel comes first: the canceller, seeing no worker, ends it Canceled; a late reaper changes
    # nothing.
    first = run_in(store, S.RUNNING)
    assert lifecycle.request_cancel(store, first).status is S.CANCEL_REQUESTED
    assert lifecycle.end_canceled(store, first).status is S.CANCELED
    assert lifecycle.mark_lost(store, first, "late reaper").status is S.CANCELED
    # The reaper comes first: the run is lost, and the cancel is refused as "already ended".
    second = run_in(store, S.RUNNING)
    lifecycle.mark_lost(store, second, "worker pid 7 is gone")
    with pytest.raises(InvalidStateError, match="already ended"):
        lifecycle.request_cancel(store, second)
    # Between the two: cancel requested, then the reaper finds the dead worker: lost wins, and the end of
    # the cancel is refused.
    third = run_in(store, S.RUNNING)
    lifecycle.request_cancel(store, third)
    assert lifecycle.mark_lost(store, third, "worker pid 8 is gone").status is S.FAILED
    with pytest.raises(InvalidStateError):
        lifecycle.end_canceled(store, third)


def test_a_canceled_run_never_changes_but_says_how_to_resume(store: MetadataStore) -> None:
    run_id = run_in(store, S.CANCELED)
    before = store.get_run(run_id)
    for event in ("queue", "prepare", "start", "finalize", "complete", "fail"):
        with pytest.raises(InvalidStateError) as info:
            EVENTS[event](store, run_id)
        assert "--resume" in (info.value.hint or "")
    assert store.get_run(run_id) == before


# --- errors as data ----------------------------------------------------------------------------------


def test_run_error_keeps_the_type_of_our_errors() -> None:
    error = RunError.from_exception(DatasetError("No images.", hint="Add some."))
    assert error == RunError("DatasetError", "No images.", "Add some.") and error.is_expected
    raised = error.to_exception()
    assert type(raised) is DatasetError and raised.message == "No images." and raised.hint == "Add some."
    assert isinstance(raised, ValueError)
    assert type(RunError.from_exception(ImageError("x")).to_exception()) is ImageError
    assert error.lines() == ["Error: No images.", "Hint: Add some."]


def test_unexpected_and_unknown_errors_become_training_errors_with_their_text() -> None:
    error = RunError.from_exception(KeyError("x"))
    assert error.type == "KeyError" and error.message == "KeyError: 'x'" and not error.is_expected
    raised = error.to_exception()
    assert type(raised) is TrainingError and raised.message == "KeyError: 'x'"

    class PluginError(ModelBuilderError):
        pass

    foreign = RunError.from_exception(PluginError("from a plugin", hint="h"))
    assert foreign.type == "PluginError"
    assert type(foreign.to_exception()) is TrainingError and foreign.to_exception().hint == "h"
    assert type(RunError("NotAnError", "m").to_exception()) is TrainingError
    assert type(RunError("logger", "m").to_exception()) is TrainingError  # a module attribute, not a class
