"""The portal reaps lost runs itself: a SIGKILLed worker's run shows Failed (process lost) in its JSON API
within 30 s, with no CLI command run; a run whose worker lives is never declared lost."""

from __future__ import annotations

import os
import signal
import time

import sqlalchemy as sa
from fastapi.testclient import TestClient
from portal_fixtures import WORKSPACE, PortalWorld

from fake_trainer import fake_config, use_fake_trainer  # noqa: F401 - a fixture
from modelbuilder.compute.job import RunFolders, WorkerRecord
from modelbuilder.portal.context import REAP_INTERVAL_S
from modelbuilder.services import open_workspace, submit_training
from modelbuilder.services.training_run import Submission
from modelbuilder.store import workspace_folder

API = f"/api/workspaces/{WORKSPACE}"


def _wait_for_children(submission: Submission, client: TestClient, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not client.get(f"{API}/runs/{submission.run.id}/children").json():
        assert time.monotonic() < deadline, "the worker never started a trial"
        time.sleep(0.1)


def test_a_sigkilled_worker_shows_failed_process_lost_in_the_portal(
    client: TestClient,
    world: PortalWorld,
    use_fake_trainer: str,  # noqa: F811 - the fixture
) -> None:
    with open_workspace(WORKSPACE) as session:
        config = fake_config(world.data_dir, trials=3, epochs=2000, epoch_seconds=0.02)
        submission = submit_training(session, config)
    run_id = submission.run.id
    _wait_for_children(submission, client)

    # A live worker is left alone, however often the portal is read (it reaps on reads).
    for _ in range(3):
        assert client.get(f"{API}/runs/{run_id}").json()["status"] == "Running"
        time.sleep(REAP_INTERVAL_S / 2)

    os.kill(submission.worker.pid, signal.SIGKILL)  # type: ignore[attr-defined]
    killed = time.monotonic()
    while True:
        shown = client.get(f"{API}/runs/{run_id}").json()
        if shown["status"] != "Running":
            break
        assert time.monotonic() - killed < 30, shown
        time.sleep(0.5)
    seconds = time.monotonic() - killed
    assert shown["status"] == "Failed" and shown["status_label"] == "Failed (process lost)", shown
    assert shown["error"].startswith("process lost: ") and shown["error_type"] == "TrainingError"
    assert f"train --resume {run_id[:12]}" in shown["error_hint"]
    assert seconds < 30
    children = client.get(f"{API}/runs/{run_id}/children").json()
    assert children and all(not child["is_active"] for child in children)
    page = client.get(f"/workspaces/{WORKSPACE}/runs/{run_id}").text
    assert "Failed (process lost)" in page


def test_a_worker_on_another_host_is_judged_by_its_heartbeat_only(
    client: TestClient, world: PortalWorld
) -> None:
    run_id = world.start_run()
    # A worker recorded on another host (a shared PostgreSQL workspace): its pid means nothing here.
    folders = RunFolders(workspace_folder(world.workspace), run_id)
    folders.state_dir.mkdir(parents=True, exist_ok=True)
    WorkerRecord(run_id, 2**22 + 12345, host="another-host").save(folders.worker_path)
    state = client.app.state.portal  # type: ignore[attr-defined]
    later = time.monotonic() + 3600
    state.reap(state.session(WORKSPACE), now=later)  # past the throttle: a real reap
    assert client.get(f"{API}/runs/{run_id}").json()["status"] == "Running", "no false 'process lost'"

    engine = sa.create_engine(world.workspace.store_url)
    with engine.begin() as conn:  # its heartbeats stopped a minute ago
        conn.execute(
            sa.text("UPDATE runs SET heartbeat_at = :t WHERE id = :id"), {"t": time.time() - 60, "id": run_id}
        )
    engine.dispose()
    state.reap(state.session(WORKSPACE), now=later + 3600)
    shown = client.get(f"{API}/runs/{run_id}").json()
    assert shown["status_label"] == "Failed (process lost)" and "no heartbeat for 6" in shown["error"], shown
