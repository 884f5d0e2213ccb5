"""The Ray follower's event application, without a cluster: one shared ingester, exactly once."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelbuilder.artifacts import LocalArtifactStore
from modelbuilder.compute import events as ev
from modelbuilder.compute.job import RunFolders, TrainingJob
from modelbuilder.compute.ray import follow
from modelbuilder.compute.ray.follow import Follower, FollowSpec
from modelbuilder.compute.worker import Worker
from modelbuilder.store import SqlAlchemyStore, lifecycle, sqlite_file_url

NOW = 1_800_000_000.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlAlchemyStore]:
    opened = SqlAlchemyStore(sqlite_file_url(tmp_path / "ws" / "workspace.db"), workspace="ws1")
    yield opened
    opened.close()


def _follower(store: SqlAlchemyStore, tmp_path: Path) -> Follower:
    run = store.create_run(store.get_or_create_experiment("flowers").id, compute="ray")
    lifecycle.queue(store, run.id)
    root = tmp_path / "ws" / "artifacts"
    job = TrainingJob(run_id=run.id, workspace="ws1", store_url="", artifact_root=str(root), config={})
    RunFolders.of_job(job).state_dir.mkdir(parents=True, exist_ok=True)
    spec = FollowSpec(job=job.to_dict(), address="127.0.0.1:1", size="Standard_F2s_v2")
    return Follower(spec, store, Worker(job, store, LocalArtifactStore(root)))


def _log() -> str:
    stream = io.StringIO()
    clock = iter(NOW + i for i in range(100))
    writer = ev.EventWriter(stream, clock=lambda: next(clock))
    writer.emit("started", pid=1, host="node")
    stream.write("a line the trainer printed itself\n")
    for step in range(3):
        writer.emit("metric", key="loss", value=1.0 / (step + 1), step=step)
    writer.emit("log", line="epoch done")
    writer.emit("error", type="TrainingError", message="boom", hint="look")
    return stream.getvalue()


def _rows(store: SqlAlchemyStore, run_id: str) -> tuple[int, list[str]]:
    metrics = sum(len(rows) for rows in store.get_metric_histories(run_id).values())
    return metrics, [line.text for line in store.get_log_lines(run_id, limit=None)]


def test_a_follower_killed_before_saving_its_cursor_does_not_write_a_batch_twice(
    store: SqlAlchemyStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _follower(store, tmp_path)
    run_id = first.run_id

    def killed() -> None:  # the process dies right after the store write, before the cursor write
        raise SystemExit(137)

    monkeypatch.setattr(first, "_save_cursor", killed)
    with pytest.raises(SystemExit):
        first.apply(_log())
    once = _rows(store, run_id)
    assert once[0] == 3 and once[1].count("epoch done") == 1
    assert once[1].count("a line the trainer printed itself") == 1
    assert not (first.folders.state_dir / follow.CURSOR_FILE).exists()

    # A new follower (run attach, or the reaper's restart) reads the whole log again from its old cursor.
    again = Follower(first.spec, store, first.worker)
    assert again.ingester.applied_seq == 0
    again.apply(_log())
    assert _rows(store, run_id) == once
    # The error is kept for the follower to end the run with (as a local worker would), not applied.
    assert again.ingester.error is not None and again.ingester.error.message == "boom"
    assert not store.get_run(run_id).status.is_terminal
    # Its position is saved now: a third follower skips everything by seq.
    third = Follower(first.spec, store, first.worker)
    assert third.ingester.applied_seq == 6 and third.ingester.plain_mark == (1, 1)
    third.apply(_log() + "\n")
    assert _rows(store, run_id) == once


def test_the_follower_applies_events_through_the_shared_ingester(
    store: SqlAlchemyStore, tmp_path: Path
) -> None:
    follower = _follower(store, tmp_path)
    follower.apply(_log())
    run = store.get_run(follower.run_id)
    assert run.status.value == "Running"  # the started event, through store.lifecycle
    assert follower.ingester.applied_seq == 6
