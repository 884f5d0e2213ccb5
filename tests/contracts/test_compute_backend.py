"""The compute backend contract: every registered backend runs a training job the same way.

Each test submits runs of the fake trainer (``tests/fake_trainer.py``) through the services, as the CLI
and the Python API do, on a compute of the backend under test, and checks what a user sees: the run moves
on and reports progress, completes with verified outputs, fails with the trainer's error, cancels keeping
the best model so far, and ends ``Failed`` when its worker dies without a word.

Backends plug in through a fixture named ``<backend>_contract_compute`` that returns a function which
creates a compute of that backend in a given workspace and returns its name. ``local`` is defined here;
the ray tests define ``ray_contract_compute`` (for a local Ray head); a backend without its fixture is
skipped with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from factories import make_image_folder
from fake_trainer import fake_config, use_fake_trainer  # noqa: F401 - a fixture
from modelbuilder.compute import ComputeSpec, WorkerHandle, WorkerState, get_backend
from modelbuilder.entities import RunStatus
from modelbuilder.services import open_workspace, runs, submit_training
from modelbuilder.services.computes import get_compute
from modelbuilder.services.training_run import Submission, job_for_run
from modelbuilder.services.workspaces import WorkspaceSession

#: The backends the contract runs on; each needs a ``<name>_contract_compute`` fixture.
BACKENDS = ("local", "ray")
#: Seconds a short fake run may take end to end (a remote backend adds job start-up).
RUN_TIMEOUT_S = 120.0

MakeCompute = Callable[[WorkspaceSession], str]

pytestmark = pytest.mark.usefixtures("use_fake_trainer")


@pytest.fixture
def local_contract_compute() -> MakeCompute:
    return lambda session: "local"  # always exists: this machine


@pytest.fixture
def session() -> Iterator[WorkspaceSession]:
    opened = open_workspace()
    yield opened
    opened.close()


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "flowers", classes=2, per_class=3, size=8)


@pytest.fixture(params=BACKENDS)
def compute(request: pytest.FixtureRequest, session: WorkspaceSession) -> str:
    """The name of a compute of the backend under test, in ``session``'s workspace."""
    try:
        make: MakeCompute = request.getfixturevalue(f"{request.param}_contract_compute")
    except pytest.FixtureLookupError:
        pytest.skip(f"no fixture '{request.param}_contract_compute' provides a {request.param} compute here")
    name = make(session)
    assert get_compute(session, name).backend == request.param
    return name


def _spec(session: WorkspaceSession, compute: str) -> ComputeSpec:
    return ComputeSpec.from_compute(get_compute(session, compute))


def _follow(session: WorkspaceSession, submission: Submission) -> list[runs.RunUpdate]:
    updates = list(runs.follow_run(session, submission.run.id, submission.worker, timeout=RUN_TIMEOUT_S))
    assert updates[-1].run.status.is_terminal, f"run still {updates[-1].run.status.value}"
    return updates


def _found(session: WorkspaceSession, compute: str, run_id: str) -> WorkerHandle | None:
    """The worker as another process finds it: a new plugin object, a job built from the run."""
    return get_backend(_spec(session, compute).backend).find(
        job_for_run(session, session.store.get_run(run_id)), _spec(session, compute)
    )


def _wait_final(handle: WorkerHandle) -> WorkerState:
    status = handle.wait(RUN_TIMEOUT_S)
    assert status.is_final, f"{handle.describe()} still {status}"
    return status.state


def test_a_run_starts_reports_progress_and_completes_with_verified_outputs(
    session: WorkspaceSession, compute: str, data: Path
) -> None:
    assert _found(session, compute, _never_started(session, compute)) is None  # nothing local needed first
    submission = submit_training(
        session, fake_config(data, trials=2, epochs=10, epoch_seconds=0.1), compute=compute
    )
    assert submission.run.status is RunStatus.QUEUED and submission.run.compute == compute
    updates = _follow(session, submission)

    live = [u for u in updates if not u.run.status.is_terminal]
    assert any(u.run.status is RunStatus.RUNNING for u in live)
    assert any(u.children for u in live), "no trial was seen while the run was running"
    assert any(line.text for u in updates for line in u.new_lines)
    run = session.store.get_run(submission.run.id)
    assert run.status is RunStatus.COMPLETED and run.error is None
    assert run.latest_metrics["accuracy"] == pytest.approx(0.9)
    children = session.store.list_child_runs(run.id)
    assert [(c.name, c.status) for c in children] == [
        ("trial-0", RunStatus.COMPLETED),
        ("trial-1", RunStatus.COMPLETED),
    ]
    assert [m.step for m in session.store.get_metric_history(children[1].id, "val_accuracy")][:10] == list(
        range(10)
    )
    recorded = session.store.list_artifacts(run.id)
    assert {"bestModel.onnx", "bestModelMap.json", "MLModel.zip"} <= {a.path for a in recorded}
    assert session.artifacts.verify(run.id, recorded)

    assert _wait_final(submission.worker) is WorkerState.SUCCEEDED
    found = _found(session, compute, run.id)
    assert found is not None and found.run_id == run.id and found.status().is_final


def test_a_failing_trainer_fails_the_run_with_its_error(
    session: WorkspaceSession, compute: str, data: Path
) -> None:
    submission = submit_training(session, fake_config(data, trials=2, fail="dataset"), compute=compute)
    assert _follow(session, submission)[-1].run.status is RunStatus.FAILED
    run = session.store.get_run(submission.run.id)
    assert run.error is not None
    assert (run.error.type, run.error.message, run.error.hint) == (
        "DatasetError",
        "Label 'label0' has only 1 image; at least 2 are needed.",
        "Add images.",
    )
    assert all(c.status.is_terminal for c in session.store.list_child_runs(run.id))
    _wait_final(submission.worker)


def test_cancel_keeps_the_best_model_so_far(session: WorkspaceSession, compute: str, data: Path) -> None:
    submission = submit_training(
        session, fake_config(data, trials=3, epochs=2000, epoch_seconds=0.01), compute=compute
    )
    run_id = submission.run.id
    deadline = time.monotonic() + RUN_TIMEOUT_S
    # Wait for a finished trial (its model is the best so far), then cancel the second one.
    while not any(c.status is RunStatus.COMPLETED for c in session.store.list_child_runs(run_id)):
        assert time.monotonic() < deadline and not session.store.get_run(run_id).status.is_terminal
        time.sleep(0.2)
    assert runs.cancel_run(session, run_id).status is RunStatus.CANCEL_REQUESTED
    requested = time.monotonic()
    assert _follow(session, submission)[-1].run.status is RunStatus.CANCELED
    assert time.monotonic() - requested < 30
    recorded = session.store.list_artifacts(run_id)
    assert "bestModel.onnx" in {a.path for a in recorded} and session.artifacts.verify(run_id, recorded)
    assert all(c.status.is_terminal for c in session.store.list_child_runs(run_id))
    assert _wait_final(submission.worker) in (WorkerState.SUCCEEDED, WorkerState.STOPPED)


def test_a_worker_that_dies_without_a_word_fails_the_run(
    session: WorkspaceSession, compute: str, data: Path
) -> None:
    submission = submit_training(session, fake_config(data, trials=2, fail="exit"), compute=compute)
    assert _follow(session, submission)[-1].run.status is RunStatus.FAILED
    run = session.store.get_run(submission.run.id)
    assert run.error is not None and run.error.message and run.error.hint
    assert f"--resume {run.id[:12]}" in run.error.hint  # its checkpoints are kept: it can go on
    assert all(c.status.is_terminal for c in session.store.list_child_runs(run.id))
    assert _wait_final(submission.worker) in (WorkerState.FAILED, WorkerState.LOST)


def test_kill_stops_the_worker_at_once_and_ends_the_run_canceled(
    session: WorkspaceSession, compute: str, data: Path
) -> None:
    submission = submit_training(
        session, fake_config(data, trials=3, epochs=2000, epoch_seconds=0.01), compute=compute
    )
    for update in runs.follow_run(session, submission.run.id, submission.worker, timeout=RUN_TIMEOUT_S):
        if update.children:
            break
    assert runs.kill_run(session, submission.run.id).status is RunStatus.CANCELED  # finds the worker itself
    assert _wait_final(submission.worker) in (WorkerState.STOPPED, WorkerState.FAILED, WorkerState.LOST)
    assert all(c.status.is_terminal for c in session.store.list_child_runs(submission.run.id))


def _never_started(session: WorkspaceSession, compute: str) -> str:
    experiment = session.store.get_or_create_experiment("contract")
    return session.store.create_run(experiment.id, compute=compute, params={"data": "/nowhere"}).id
