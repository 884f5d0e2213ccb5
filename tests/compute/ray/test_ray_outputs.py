"""A Ray run's outputs come back through the dashboard, never through a shared path, and are verified.

The follower tests serve the published files from a fake dashboard that holds them in memory only (the
folder the job published into is deleted first), so an output can only arrive over HTTP; bytes that
differ or a file the node no longer has fail the run before anything of it is recorded. The last test
runs a job on the loopback head: the job's own output folder is gone when the run completes.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import shutil
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from factories import make_image_folder
from fake_trainer import fake_config, use_fake_trainer  # noqa: F401 - a fixture
from modelbuilder.artifacts import LocalArtifactStore
from modelbuilder.compute import ComputeSpec
from modelbuilder.compute import events as ev
from modelbuilder.compute.job import RunFolders, TrainingJob
from modelbuilder.compute.outputs import materialize_outputs, result_to_dict
from modelbuilder.compute.ray import follow
from modelbuilder.compute.ray.cluster import RayCluster
from modelbuilder.compute.ray.follow import Follower, FollowSpec
from modelbuilder.compute.ray.jobs import JobInfo, JobState, job_logs
from modelbuilder.compute.ray.transfer import PUBLISH_DIR, publish_outputs
from modelbuilder.compute.worker import Worker
from modelbuilder.entities import ProvisioningState, RunStatus
from modelbuilder.services import open_workspace, runs, submit_training
from modelbuilder.services.computes import create_compute
from modelbuilder.services.workspaces import WorkspaceSession
from modelbuilder.store import SqlAlchemyStore, lifecycle, sqlite_file_url
from modelbuilder.training.config import TrainingResult
from ray_head import RayHead

NODE_ID = "a" * 56


class FakeDashboard(http.server.ThreadingHTTPServer):
    """Serves ``/api/v0/logs/file`` from ``files`` (log-folder path -> bytes), as Ray's log API does."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: FakeDashboard

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        self.server.requests.append(query.get("filename", ""))
        body = self.server.files.get(query.get("filename", ""))
        if url.path != "/api/v0/logs/file" or query.get("node_id") != NODE_ID or body is None:
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"A file is not found at: " + query.get("filename", "").encode())
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def dashboard() -> Iterator[FakeDashboard]:
    server = FakeDashboard()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlAlchemyStore]:
    opened = SqlAlchemyStore(sqlite_file_url(tmp_path / "ws" / "workspace.db"), workspace="ws1")
    yield opened
    opened.close()


class FakeJobClient:
    """Records the clean-up job the follower submits."""

    def __init__(self) -> None:
        self.submitted: list[dict[str, Any]] = []

    def submit_job(self, **kwargs: Any) -> str:
        self.submitted.append(kwargs)
        return str(kwargs["submission_id"])


def _job_outputs(tmp_path: Path) -> TrainingResult:
    """What a trainer leaves in its output folder: binary files and a folder output."""
    out = tmp_path / "job-scratch"
    (out / "Demo.Model" / "assets").mkdir(parents=True)
    (out / "bestModel.onnx").write_bytes(bytes(range(256)) * 300 + b"\r\n\x00\x1b[31m")  # not text
    (out / "bestModelMap.json").write_text('["a", "b"]')
    (out / "Demo.Model" / "model.py").write_text("def predict(): ...\n")
    (out / "Demo.Model" / "assets" / "weights.bin").write_bytes(b"\xff\xfe" * 5000)
    files = {p.name: p for p in (out / "bestModel.onnx", out / "bestModelMap.json", out / "Demo.Model")}
    return TrainingResult(0.75, 0.7, "test_tiny", "linear", ["a", "b"], 1.5, out, files, [], [], {})


def _published_log(tmp_path: Path, dashboard: FakeDashboard) -> str:
    """The job's log: it published its outputs (then they left the disk: only the dashboard has them)."""
    result = _job_outputs(tmp_path)
    logs_dir = tmp_path / "node-logs"
    transfer = publish_outputs("r1", result.files, node=(NODE_ID, "10.0.0.9", logs_dir))
    for path in sorted((logs_dir / PUBLISH_DIR).rglob("*")):
        if path.is_file():
            dashboard.files[path.relative_to(logs_dir).as_posix()] = path.read_bytes()
    sha256 = {name: ev.digest(path) for name, path in result.files.items()}
    shutil.rmtree(logs_dir)
    shutil.rmtree(result.output_dir)  # the job's scratch folder is gone too
    stream = io.StringIO()
    writer = ev.EventWriter(stream)
    writer.emit("started", pid=1, host="node")
    writer.emit(
        "result",
        result=result_to_dict(result),
        output_dir=str(result.output_dir),
        sha256=sha256,
        files={name: str(path) for name, path in result.files.items()},
        transfer=transfer.to_dict(),
    )
    return stream.getvalue()


def _follow(
    store: SqlAlchemyStore,
    tmp_path: Path,
    dashboard: FakeDashboard,
    log: str,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[str, FakeJobClient, LocalArtifactStore]:
    run = store.create_run(store.get_or_create_experiment("flowers").id, compute="ray")
    lifecycle.queue(store, run.id)
    root = tmp_path / "ws" / "artifacts"
    job = TrainingJob(run_id=run.id, workspace="ws1", store_url="", artifact_root=str(root), config={})
    RunFolders.of_job(job).state_dir.mkdir(parents=True, exist_ok=True)
    spec = FollowSpec(job=job.to_dict(), address=dashboard.address, size="Standard_F2s_v2")
    artifacts = LocalArtifactStore(root)
    follower = Follower(spec, store, Worker(job, store, artifacts))
    client = FakeJobClient()
    follower.client = client
    monkeypatch.setattr(follow, "get_job", lambda client, run_id: JobInfo(JobState.SUCCEEDED))
    monkeypatch.setattr(follow, "job_logs", lambda client, run_id: log)
    follower.follow()
    return run.id, client, artifacts


def test_outputs_arrive_through_the_dashboard_verified_and_are_removed_from_the_node(
    store: SqlAlchemyStore, tmp_path: Path, dashboard: FakeDashboard, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = _published_log(tmp_path, dashboard)
    run_id, client, artifacts = _follow(store, tmp_path, dashboard, log, monkeypatch)
    run = store.get_run(run_id)
    assert run.status is RunStatus.COMPLETED, run.error
    recorded = {a.path: a for a in store.list_artifacts(run_id)}
    served = dashboard.files[f"{PUBLISH_DIR}/r1/bestModel.onnx"]
    assert recorded["bestModel.onnx"].sha256 == hashlib.sha256(served).hexdigest()
    assert {"bestModelMap.json", "Demo.Model.zip", "outputs.json", "result.json"} <= set(recorded)
    # The folder output is rebuilt from its files as the job wrote it.
    out = materialize_outputs(artifacts, run_id, tmp_path / "download")
    weights = out["Demo.Model"] / "assets" / "weights.bin"
    assert weights.read_bytes() == dashboard.files[f"{PUBLISH_DIR}/r1/Demo.Model/assets/weights.bin"]
    assert len(dashboard.requests) == 4  # each published file once
    # The node's copy is removed by a tiny job pinned to that node.
    (cleanup,) = client.submitted
    assert cleanup["entrypoint_resources"] == {"node:10.0.0.9": 0.001}
    assert str(tmp_path / "node-logs" / PUBLISH_DIR / "r1") in cleanup["entrypoint"]


@pytest.mark.parametrize("damage", ["changed", "missing"])
def test_an_output_that_differs_or_is_missing_fails_the_run_and_records_nothing(
    store: SqlAlchemyStore,
    tmp_path: Path,
    dashboard: FakeDashboard,
    monkeypatch: pytest.MonkeyPatch,
    damage: str,
) -> None:
    log = _published_log(tmp_path, dashboard)
    name = f"{PUBLISH_DIR}/r1/Demo.Model/assets/weights.bin"
    if damage == "changed":
        dashboard.files[name] = dashboard.files[name][:-1] + b"\x00"  # same size, other bytes
    else:
        del dashboard.files[name]
    run_id, client, _ = _follow(store, tmp_path, dashboard, log, monkeypatch)
    run = store.get_run(run_id)
    assert run.status is RunStatus.FAILED and run.error is not None
    assert run.error.type == "OutputTransferError"
    assert "Demo.Model/assets/weights.bin" in run.error.message and run.error.hint
    expected = "sha256" if damage == "changed" else "could not be read"
    assert expected in run.error.message
    assert not {"bestModel.onnx", "bestModelMap.json", "Demo.Model.zip", "result.json"} & {
        a.path for a in store.list_artifacts(run_id)
    }
    assert len(client.submitted) == 1  # the node's copy is removed all the same


def test_publishing_sweeps_outputs_nobody_fetched_for_a_week(tmp_path: Path) -> None:
    logs_dir = tmp_path / "node-logs"
    old, recent = logs_dir / PUBLISH_DIR / "old-run", logs_dir / PUBLISH_DIR / "recent-run"
    for folder in (old, recent):
        folder.mkdir(parents=True)
        (folder / "bestModel.onnx").write_bytes(b"x")
    week_ago = time.time() - 8 * 24 * 3600
    os.utime(old, (week_ago, week_ago))
    result = _job_outputs(tmp_path)
    transfer = publish_outputs("r2", result.files, node=(NODE_ID, "10.0.0.9", logs_dir))
    assert not old.exists() and recent.exists()
    assert transfer.outputs == {"Demo.Model": "folder", "bestModel.onnx": "file", "bestModelMap.json": "file"}
    published = logs_dir / transfer.root / "Demo.Model" / "assets" / "weights.bin"
    assert published.read_bytes() == (result.files["Demo.Model"] / "assets" / "weights.bin").read_bytes()


@pytest.fixture
def session() -> Iterator[WorkspaceSession]:
    opened = open_workspace()
    yield opened
    opened.close()


@pytest.mark.usefixtures("use_fake_trainer")
def test_a_ray_run_completes_although_the_jobs_output_folder_is_gone(
    session: WorkspaceSession, ray_head: RayHead, ray_fake_trainer: str, tmp_path: Path
) -> None:
    data = make_image_folder(tmp_path / "flowers", classes=2, per_class=3, size=8)
    spec = ComputeSpec.create("cpu-out", "Standard_F2s_v2", backend="ray", address=ray_head.address)
    assert create_compute(session, spec).state is ProvisioningState.SUCCEEDED
    submission = submit_training(session, fake_config(data, trials=1, epochs=1), compute="cpu-out")
    *_, last = runs.follow_run(session, submission.run.id, submission.worker, timeout=120)
    run_id = submission.run.id
    assert last.run.status is RunStatus.COMPLETED, session.store.get_run(run_id).error
    log = job_logs(RayCluster(ray_head.address).job_client(), run_id)
    (result,) = [e for e in map(ev.decode, log.split("\n")) if isinstance(e, ev.Result)]
    # The job removed the folder it wrote to before the follower fetched: no file path could be read.
    assert result.output_dir and not Path(result.output_dir).exists()
    assert not str(result.output_dir).startswith(str(session.artifacts.root))
    recorded = {a.path: a.sha256 for a in session.store.list_artifacts(run_id)}
    for name, sha256 in result.sha256.items():
        if result.transfer["outputs"][name] == "file":
            assert recorded[name] == sha256
    # The published copy leaves the node once the run has its outputs.
    published = Path(result.transfer["logs_dir"]) / result.transfer["root"]
    deadline = time.monotonic() + 60
    while published.exists():
        assert time.monotonic() < deadline, f"{published} was not removed"
        time.sleep(0.5)
