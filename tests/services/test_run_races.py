"""Races around real worker processes, through the services the CLI, the Python API and the portal share:
a cancel of a run whose worker just died, two processes reaping one lost run, resume of a Canceled run."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

import pytest

from fake_trainer import fake_config
from modelbuilder.entities import RunStatus
from modelbuilder.errors import InvalidStateError
from modelbuilder.services import open_workspace, runs, submit_training
from modelbuilder.services.training_run import RESUMED_FROM, Submission, resume_training
from modelbuilder.services.workspaces import WorkspaceSession
from modelbuilder.store import lifecycle

pytestmark = pytest.mark.usefixtures("use_fake_trainer")


def _training(session: WorkspaceSession, data: Path, trials: int = 3, epochs: int = 2000) -> Submission:
    """A submitted run whose worker is training its first trial (a long one)."""
    config = fake_config(data, trials=trials, epochs=epochs, epoch_seconds=0.02)
    submission = submit_training(session, config)
    for update in runs.follow_run(session, submission.run.id, submission.worker, timeout=60):
        if update.children:
            return submission
    raise AssertionError("the worker never started a trial")


def _sigkill(submission: Submission) -> None:
    os.kill(submission.worker.pid, signal.SIGKILL)  # type: ignore[attr-defined]
    submission.worker.wait(10)


def test_cancel_of_a_run_whose_worker_just_died_ends_it_canceled(
    session: WorkspaceSession, data: Path
) -> None:
    submission = _training(session, data)
    _sigkill(submission)  # no reaper has run yet: the run still says Running
    assert session.store.get_run(submission.run.id).status is RunStatus.RUNNING
    run = runs.cancel_run(session, submission.run.id)
    assert run.status is RunStatus.CANCELED, "nobody would act on a CancelRequested run"
    assert all(child.status.is_terminal for child in session.store.list_child_runs(run.id))
    assert any("no longer running" in line.text for line in session.store.get_log_lines(run.id))
    assert runs.reap_lost_runs(session) == [] and session.store.get_run(run.id).status is RunStatus.CANCELED


def _reap(home: str, workspace: str, start: multiprocessing.synchronize.Event, out: object) -> None:
    os.environ["MODELBUILDER_HOME"] = home
    try:
        with open_workspace(workspace) as session:
            start.wait(10)
            reaped = runs.reap_lost_runs(session)
        out.put([run.id for run in reaped])  # type: ignore[attr-defined]
    except BaseException as exc:
        out.put(f"error: {type(exc).__name__}: {exc}")  # type: ignore[attr-defined]


def test_two_processes_reaping_one_lost_run(session: WorkspaceSession, data: Path) -> None:
    submission = _training(session, data)
    _sigkill(submission)
    context = multiprocessing.get_context("spawn")
    start, out = context.Event(), context.Queue()
    home = os.environ["MODELBUILDER_HOME"]
    reapers = [context.Process(target=_reap, args=(home, session.name, start, out)) for _ in range(2)]
    for process in reapers:
        process.start()
    start.set()
    results = [out.get(timeout=120) for _ in reapers]
    for process in reapers:
        process.join(30)
    assert sorted(results, key=len) == [[], [submission.run.id]], results  # one reaped it, no error
    run = session.store.get_run(submission.run.id)
    assert run.status is RunStatus.FAILED and lifecycle.is_lost(run)
    lines = [line.text for line in session.store.get_log_lines(run.id)]
    assert sum(text.startswith("Error: process lost") for text in lines) == 1, lines


def test_a_canceled_run_resumes_as_a_new_run_and_stays_canceled(
    session: WorkspaceSession, data: Path
) -> None:
    submission = _training(session, data, trials=2, epochs=100)  # 2 s a trial
    runs.cancel_run(session, submission.run.id)
    *_, last = runs.follow_run(session, submission.run.id, submission.worker, timeout=60)
    canceled = last.run
    assert canceled.status is RunStatus.CANCELED
    resumed = resume_training(session, canceled.id, time_budget=10)
    *_, final = runs.follow_run(session, resumed.run.id, resumed.worker, timeout=90)
    assert final.run.status is RunStatus.COMPLETED
    assert final.run.params[RESUMED_FROM] == canceled.id
    assert session.store.get_run(canceled.id) == canceled  # the old run never changes
    with pytest.raises(InvalidStateError, match="is Canceled; it cannot be started") as info:
        lifecycle.start(session.store, canceled.id)  # ... and cannot be restarted in place
    assert f"train --resume {canceled.id[:12]}" in (info.value.hint or "")


def test_a_lost_run_keeps_its_recorded_artifacts_and_loses_its_temp_files(session: WorkspaceSession) -> None:
    experiment = session.store.get_or_create_experiment("exp-1")
    run = session.store.create_run(experiment.id, compute="local")
    lifecycle.queue(session.store, run.id)
    lifecycle.start(session.store, run.id)
    kept = session.artifacts.put_bytes(run.id, b"model", "bestModel.onnx")
    session.store.log_artifact(run.id, kept.path, kept.size, kept.sha256)
    half = session.artifacts.run_dir(run.id) / ".MLModel.zip.abc123.tmp"  # a write the kill cut short
    half.write_bytes(b"partial")
    assert runs.mark_lost(session.store, run.id, "worker pid 1 is gone", session.artifacts) is not None
    assert not half.exists()
    assert session.artifacts.find_mismatches(run.id, session.store.list_artifacts(run.id)) == []
    assert [a.path for a in session.store.list_artifacts(run.id)] == ["bestModel.onnx"]
