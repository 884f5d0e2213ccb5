"""The local backend: worker processes in their own session, their records, kill, and the job format."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from modelbuilder.compute import (
    LOST_EXIT_CODE,
    LocalBackend,
    LocalWorkerHandle,
    TrainingJob,
    WorkerRecord,
    get_compute_backend,
    register_compute_backend,
)
from modelbuilder.compute.job import JOB_FORMAT_VERSION, RunFolders
from modelbuilder.errors import InvalidParameterError


def _job(tmp_path: Path, run_id: str = "run0001") -> TrainingJob:
    return TrainingJob(
        run_id=run_id,
        workspace="ws1",
        store_url=f"sqlite:///{tmp_path / 'ws.db'}",
        artifact_root=str(tmp_path / "artifacts"),
        config={"data": str(tmp_path / "data")},
        state_dir=str(tmp_path / "workers" / run_id),
    )


def _start_sleeper(job: TrainingJob, script: str) -> LocalWorkerHandle:
    """A worker-like process (own session, recorded like LocalBackend records it) that runs ``script``."""
    import subprocess

    state_dir = Path(job.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    popen = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    record = WorkerRecord(job.run_id, popen.pid, create_time=psutil.Process(popen.pid).create_time())
    record.save(state_dir / "worker.json")
    return LocalWorkerHandle(record, popen)


def test_job_round_trips_through_json_and_refuses_other_versions(tmp_path: Path) -> None:
    job = _job(tmp_path)
    path = job.save(tmp_path / "job.json")
    assert TrainingJob.load(path) == job
    data = json.loads(path.read_text())
    data["format_version"] = JOB_FORMAT_VERSION + 1
    path.write_text(json.dumps(data))
    with pytest.raises(InvalidParameterError, match="format version") as info:
        TrainingJob.load(path)
    assert info.value.hint


def test_job_load_reports_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match="cannot be read"):
        TrainingJob.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(InvalidParameterError, match="JSON object"):
        TrainingJob.load(tmp_path / "bad.json")


def test_run_folders_layout(tmp_path: Path) -> None:
    folders = RunFolders(tmp_path, "abc123")
    assert folders.state_dir == tmp_path / "workers" / "abc123"
    assert folders.job_path.parent == folders.worker_path.parent == folders.state_dir
    assert folders.checkpoint_dir() == tmp_path / "checkpoints" / "abc123"
    assert folders.checkpoint_dir("origin") == tmp_path / "checkpoints" / "origin"


def test_unknown_backend_names_the_known_ones_and_the_ray_extra() -> None:
    assert isinstance(get_compute_backend("local"), LocalBackend)
    with pytest.raises(InvalidParameterError, match="known: .*local") as info:
        get_compute_backend("ray")
    assert 'pip install "modelbuilder[ray]"' in (info.value.hint or "")


def test_register_compute_backend_replaces_the_factory() -> None:
    custom = LocalBackend(python="/usr/bin/python3")
    register_compute_backend("custom-test", lambda: custom)
    assert get_compute_backend("custom-test") is custom


def _wait_for(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_worker_runs_in_its_own_session_and_kill_takes_its_children(tmp_path: Path) -> None:
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(tmp_path / 'child.pid')!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    handle = _start_sleeper(_job(tmp_path), script)
    _wait_for(lambda: (tmp_path / "child.pid").exists() and (tmp_path / "child.pid").read_text() != "")
    grandchild = int((tmp_path / "child.pid").read_text())
    assert os.getsid(handle.pid) == handle.pid != os.getsid(0)  # Ctrl-C in our terminal does not reach it
    assert handle.poll() is None

    seen_elsewhere = LocalBackend.find_worker_in(Path(_job(tmp_path).state_dir))
    assert seen_elsewhere is not None and seen_elsewhere.pid == handle.pid
    assert seen_elsewhere.poll() is None

    handle.kill()
    assert handle.poll() == -signal.SIGKILL
    assert "killed by SIGKILL" in handle.describe_exit()
    _wait_for(lambda: not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == "zombie")
    # Another process sees the worker gone (our un-reaped child would be a zombie: also gone).
    assert seen_elsewhere.poll() == LOST_EXIT_CODE
    assert "is gone" in seen_elsewhere.describe_exit()
    seen_elsewhere.kill()  # nothing left to kill: no error


def test_recorded_worker_with_a_recycled_pid_counts_as_gone(tmp_path: Path) -> None:
    me = psutil.Process(os.getpid())
    recycled = WorkerRecord("r1", os.getpid(), create_time=me.create_time() - 3600)
    assert LocalWorkerHandle(recycled).poll() == LOST_EXIT_CODE
    alive = WorkerRecord("r1", os.getpid(), create_time=me.create_time())
    assert LocalWorkerHandle(alive).poll() is None
    elsewhere = WorkerRecord("r1", 999_999, host="another-host")
    assert LocalWorkerHandle(elsewhere).poll() is None  # cannot see it: heartbeats decide


def test_worker_record_round_trip_and_missing(tmp_path: Path) -> None:
    record = WorkerRecord("r1", 42, create_time=1.5)
    record.save(tmp_path / "worker.json")
    assert WorkerRecord.find(tmp_path / "worker.json") == record
    assert WorkerRecord.find(tmp_path / "nothing.json") is None
    (tmp_path / "broken.json").write_text("{")
    assert WorkerRecord.find(tmp_path / "broken.json") is None


def test_local_backend_starts_the_worker_module_and_records_it(tmp_path: Path) -> None:
    job = _job(tmp_path)  # its store URL points at a file that is no workspace: the worker exits 1
    handle = LocalBackend().start(job)
    assert handle.wait(60) == 1
    folders = Path(job.state_dir)
    assert (folders / "job.json").is_file()
    assert WorkerRecord.find(folders / "worker.json") == handle.record
    assert (folders / "worker.out").read_text()  # the worker's output is kept for crash analysis
