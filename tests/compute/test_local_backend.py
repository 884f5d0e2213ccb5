"""The local backend: worker processes in their own session, their records, kill, and the job format."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import psutil
import pytest

from modelbuilder.compute import (
    ComputeSpec,
    LocalBackend,
    LocalWorkerHandle,
    TrainingJob,
    WorkerRecord,
    WorkerState,
    get_backend,
    register_backend,
)
from modelbuilder.compute.backend import unregister_backend
from modelbuilder.compute.job import JOB_FORMAT_VERSION, RunFolders
from modelbuilder.errors import InvalidParameterError, MissingDependencyError

LOCAL = ComputeSpec.create("local", "local")


def _job(tmp_path: Path, run_id: str = "run0001") -> TrainingJob:
    return TrainingJob(
        run_id=run_id,
        workspace="ws1",
        store_url=f"sqlite:///{tmp_path / 'ws.db'}",
        artifact_root=str(tmp_path / "artifacts"),
        config={"data": str(tmp_path / "data")},
    )


def _start_sleeper(job: TrainingJob, script: str) -> LocalWorkerHandle:
    """A worker-like process (own session, recorded like LocalBackend records it) that runs ``script``."""
    import subprocess

    state_dir = RunFolders.of_job(job).state_dir
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
    # The local backend places a job's files next to its workspace's artifact root.
    assert RunFolders.of_job(_job(tmp_path, "abc123")) == RunFolders(tmp_path, "abc123")


def test_the_job_carries_no_local_folders(tmp_path: Path) -> None:
    data = _job(tmp_path).to_dict()
    assert not {"state_dir", "checkpoint_dir", "work_dir", "log_path"} & set(data)
    resumed = TrainingJob(**{**data, "run_id": "run0002", "checkpoint_key": "run0001"})
    assert (_job(tmp_path).checkpoint_owner, resumed.checkpoint_owner) == ("run0001", "run0001")


def test_unknown_backend_names_the_known_ones() -> None:
    assert isinstance(get_backend("local"), LocalBackend)
    with pytest.raises(InvalidParameterError, match="must be one of .*local.*ray") as info:
        get_backend("quantum")
    assert "local" in (info.value.hint or "")


def test_ray_without_its_extra_gives_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # "import ray" raises ImportError, as without the extra
    with pytest.raises(MissingDependencyError) as info:
        get_backend("ray")
    assert 'pip install "modelbuilder[ray]"' in (info.value.hint or "")
    with pytest.raises(MissingDependencyError):
        ComputeSpec.create("gpu-a", "Standard_NC12", backend="ray", address="http://127.0.0.1:8265")


def test_register_backend_replaces_the_factory() -> None:
    custom = LocalBackend(python="/usr/bin/python3")
    register_backend("custom-test", lambda: custom)
    try:
        assert get_backend("custom-test") is custom
    finally:
        unregister_backend("custom-test")


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
    assert handle.status().state is WorkerState.RUNNING

    seen_elsewhere = LocalBackend().find(_job(tmp_path), LOCAL)
    assert seen_elsewhere is not None and seen_elsewhere.pid == handle.pid
    assert seen_elsewhere.status().state is WorkerState.RUNNING

    handle.kill()
    killed = handle.status()
    assert killed.state is WorkerState.STOPPED and "killed by SIGKILL" in killed.detail
    _wait_for(lambda: not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == "zombie")
    # Another process sees the worker gone (our un-reaped child would be a zombie: also gone).
    gone = seen_elsewhere.status()
    assert gone.state is WorkerState.LOST and "is gone" in gone.detail
    seen_elsewhere.kill()  # nothing left to kill: no error


def test_a_worker_whose_main_thread_ended_runs_until_its_last_thread_ends(tmp_path: Path) -> None:
    # After SIGKILL the main thread may end first: the process shows as a zombie while its other threads
    # still run, and its parent cannot reap it yet. kill() returning then left the worker RUNNING.
    script = (
        "import ctypes, threading, time\n"
        "threading.Thread(target=time.sleep, args=(60,)).start()\n"
        "ctypes.CDLL(None).pthread_exit(None)\n"
    )
    handle = _start_sleeper(_job(tmp_path), script)
    _wait_for(lambda: psutil.Process(handle.pid).status() == psutil.STATUS_ZOMBIE)
    assert psutil.Process(handle.pid).num_threads() == 2
    seen_elsewhere = LocalWorkerHandle(handle.record)
    assert seen_elsewhere.status().state is WorkerState.RUNNING
    seen_elsewhere.kill()  # waits until the last thread has ended
    assert handle.status().state is WorkerState.FAILED  # reaped by its parent (killed, not by this handle)
    assert seen_elsewhere.status().state is WorkerState.LOST


def test_recorded_worker_with_a_recycled_pid_counts_as_gone(tmp_path: Path) -> None:
    me = psutil.Process(os.getpid())
    recycled = WorkerRecord("r1", os.getpid(), create_time=me.create_time() - 3600)
    assert LocalWorkerHandle(recycled).status().state is WorkerState.LOST
    alive = WorkerRecord("r1", os.getpid(), create_time=me.create_time())
    assert LocalWorkerHandle(alive).status().state is WorkerState.RUNNING
    elsewhere = WorkerRecord("r1", 999_999, host="another-host")
    assert LocalWorkerHandle(elsewhere).status().state is WorkerState.RUNNING  # heartbeats decide


def test_worker_record_round_trip_and_missing(tmp_path: Path) -> None:
    record = WorkerRecord("r1", 42, create_time=1.5)
    record.save(tmp_path / "worker.json")
    assert WorkerRecord.find(tmp_path / "worker.json") == record
    assert WorkerRecord.find(tmp_path / "nothing.json") is None
    (tmp_path / "broken.json").write_text("{")
    assert WorkerRecord.find(tmp_path / "broken.json") is None


def test_local_backend_starts_the_worker_module_and_records_it(tmp_path: Path) -> None:
    job = _job(tmp_path)  # its store URL points at a file that is no workspace: the worker exits 1
    folders = RunFolders.of_job(job)
    assert not folders.state_dir.exists()  # nothing local is needed before the backend is asked
    assert LocalBackend().find(job, LOCAL) is None
    handle = LocalBackend().start(job, LOCAL)
    ended = handle.wait(60)
    assert ended.state is WorkerState.FAILED and "exited with code 1" in ended.detail
    assert TrainingJob.load(folders.job_path) == job  # the worker's own input
    assert WorkerRecord.find(folders.worker_path) == handle.record
    assert folders.output_path.read_text()  # the worker's output is kept for crash analysis
    found = LocalBackend().find(job, LOCAL)
    assert found is not None and found.record == handle.record


def test_starting_a_job_whose_worker_runs_returns_that_worker(tmp_path: Path) -> None:
    job = _job(tmp_path)
    running = _start_sleeper(job, "import time; time.sleep(60)")
    try:
        again = LocalBackend().start(job, LOCAL)
        assert again.pid == running.pid  # one worker per run, however often it is submitted
    finally:
        running.kill()
    assert running.status().state is WorkerState.STOPPED
