"""Workers killed with SIGKILL: runs end Failed (process lost), nothing half-written is on record, the
database stays intact, and --resume completes the training from the last checkpoint."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from factories import make_image_folder
from fake_trainer import fake_config, use_fake_trainer  # noqa: F401 - a fixture
from modelbuilder.compute import WorkerState
from modelbuilder.entities import RunStatus
from modelbuilder.services import open_workspace, resume_training, runs, submit_training
from modelbuilder.services.training_run import CHECKPOINT_OF, RESUMED_FROM
from modelbuilder.services.workspaces import WorkspaceSession
from modelbuilder.store import SqlAlchemyStore

pytestmark = pytest.mark.usefixtures("use_fake_trainer")


@pytest.fixture
def session() -> Iterator[WorkspaceSession]:
    opened = open_workspace()
    yield opened
    opened.close()


def _wait_for_trials(session: WorkspaceSession, run_id: str, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(session.store.list_child_runs(run_id)) < count:
        assert time.monotonic() < deadline, "the worker made no progress"
        assert not session.store.get_run(run_id).status.is_terminal
        time.sleep(0.02)


def test_sigkill_five_times_then_resume(session: WorkspaceSession, tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "flowers", classes=2, per_class=3, size=8)
    config = fake_config(data, trials=4, epochs=10, epoch_seconds=0.03, model_bytes=4_000_000)
    killed = []
    for attempt in range(5):
        submission = submit_training(session, config, experiment="crashy")
        run_id = submission.run.id
        _wait_for_trials(session, run_id, 1 + attempt % 3)
        time.sleep(0.07 * attempt)  # land at different points: mid-epoch, mid-copy of an artifact...
        os.kill(submission.worker.pid, signal.SIGKILL)  # type: ignore[attr-defined]
        started = time.monotonic()
        if attempt % 2 == 0:  # the supervisor of the process that waits on the run
            *_, last = runs.follow_run(session, run_id, submission.worker, timeout=30)
            run = last.run
        else:  # any other command: the reaper sees the recorded pid is gone
            submission.worker.wait(10)
            reaped = runs.reap_stale_runs(session.store, session=session)
            assert [r.id for r in reaped] == [run_id]
            run = session.store.get_run(run_id)
        assert time.monotonic() - started < 10  # well within the 30 s heartbeat limit
        assert run.status is RunStatus.FAILED
        assert run.error is not None and run.error.message.startswith("process lost: ")
        assert "SIGKILL" in run.error.message or "is gone" in run.error.message
        children = session.store.list_child_runs(run_id)
        assert all(c.status in (RunStatus.COMPLETED, RunStatus.FAILED) for c in children)
        recorded = session.store.list_artifacts(run_id)
        assert session.artifacts.verify(run_id, recorded), "a recorded artifact is half-written"
        killed.append(run_id)

    store = session.store
    assert isinstance(store, SqlAlchemyStore)
    assert store.check_integrity() == "ok"
    active = store.list_runs(statuses=[s for s in RunStatus if not s.is_terminal], limit=None)
    assert active == []

    origin = killed[-1]
    done_before = len(store.list_child_runs(origin))
    resumed = resume_training(session, origin)
    assert resumed.run.params[RESUMED_FROM] == origin and resumed.run.params[CHECKPOINT_OF] == origin
    assert resumed.run.experiment == "crashy"
    *_, last = runs.follow_run(session, resumed.run.id, resumed.worker, timeout=60)
    assert last.run.status is RunStatus.COMPLETED
    lines = [line.text for line in store.get_log_lines(resumed.run.id, limit=None)]
    skipped = [text for text in lines if "finished before the resume" in text]
    assert len(skipped) >= done_before - 1 >= 1  # the last child may have been killed mid-trial
    assert len(store.list_child_runs(resumed.run.id)) == 4 - len(skipped)
    assert resumed.worker.wait(30).state is WorkerState.SUCCEEDED  # it cleans up after Completed
    assert not session.run_folders(origin).checkpoint_dir().exists()  # completed: checkpoint released
    assert store.check_integrity() == "ok"


def test_a_silent_worker_is_reaped_after_the_heartbeat_limit(session: WorkspaceSession) -> None:
    url = session.workspace.store_url
    past = SqlAlchemyStore(url, workspace=session.name, clock=lambda: time.time() - 120)
    try:
        experiment = past.get_or_create_experiment("quiet")
        run = past.create_run(experiment.id, compute="local")
        for status in (RunStatus.QUEUED, RunStatus.PREPARING, RunStatus.RUNNING):
            past.set_run_status(run.id, status)
        child = past.create_run(experiment.id, parent_run_id=run.id, name="t0", status=RunStatus.RUNNING)
    finally:
        past.close()
    fresh = session.store.create_run(experiment.id, compute="local")
    session.store.set_run_status(fresh.id, RunStatus.QUEUED)
    session.store.set_run_status(fresh.id, RunStatus.PREPARING)

    assert runs.reap_stale_runs(session.store, max_age=200) == []
    reaped = {r.id: r for r in runs.reap_stale_runs(session.store, max_age=30)}
    assert set(reaped) == {run.id}
    assert str(reaped[run.id].error).startswith("process lost: no heartbeat for 1")
    lost_child = session.store.get_run(child.id)
    assert lost_child.status is RunStatus.FAILED and str(lost_child.error).startswith("process lost")
    assert session.store.get_run(fresh.id).status is RunStatus.PREPARING


def test_a_queued_run_whose_worker_never_started_is_reaped(session: WorkspaceSession) -> None:
    past = SqlAlchemyStore(
        session.workspace.store_url, workspace=session.name, clock=lambda: time.time() - 60
    )
    try:
        experiment = past.get_or_create_experiment("stuck")
        run = past.create_run(experiment.id, compute="local")
        past.set_run_status(run.id, RunStatus.QUEUED)
    finally:
        past.close()
    assert runs.reap_stale_runs(session.store, max_age=30) == []  # without the folder: heartbeats only
    reaped = runs.reap_stale_runs(session.store, max_age=30, session=session)
    assert [str(r.error) for r in reaped] == ["process lost: no worker started within 30 s"]


def test_marking_a_run_lost_reconciles_a_record_the_worker_could_not_update(
    session: WorkspaceSession, tmp_path: Path
) -> None:
    experiment = session.store.get_or_create_experiment("torn")
    run = session.store.create_run(experiment.id, compute="local")
    for status in (RunStatus.QUEUED, RunStatus.PREPARING, RunStatus.RUNNING):
        session.store.set_run_status(run.id, status)
    old = session.artifacts.put_bytes(run.id, b"model of trial 1", "bestModel.onnx")
    session.store.log_artifact(run.id, old.path, old.size, old.sha256)
    # Killed between the atomic replace of the file and the record of its new sha256:
    new = session.artifacts.put_bytes(run.id, b"model of trial 2!", "bestModel.onnx")
    assert not session.artifacts.verify(run.id, session.store.list_artifacts(run.id))
    lost = runs.mark_lost(session.store, run.id, "test", session.artifacts)
    assert lost is not None and lost.status is RunStatus.FAILED
    (record,) = session.store.list_artifacts(run.id)
    assert (record.size, record.sha256) == (new.size, new.sha256)
    assert session.artifacts.verify(run.id, [record])
