"""StoreReporter keeps a batch the store failed to write and writes it again; it never drops one silently."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from modelbuilder.artifacts import LocalArtifactStore
from modelbuilder.compute.job import TrainingJob
from modelbuilder.compute.store_reporter import StoreReporter
from modelbuilder.compute.worker import Worker
from modelbuilder.entities import Run, RunStatus
from modelbuilder.errors import WorkspaceBusyError
from modelbuilder.store import SqlAlchemyStore, sqlite_file_url
from modelbuilder.training.config import TrainingResult


class LockedStore:
    """A store whose first ``failures`` metric and log writes fail as a locked SQLite database does."""

    def __init__(self, store: SqlAlchemyStore, failures: int) -> None:
        self.store = store
        self.failures = failures
        self.calls = 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise OperationalError("INSERT ...", {}, Exception("database is locked"))

    def log_metrics(self, *args: Any, **kwargs: Any) -> None:
        self._maybe_fail()
        self.store.log_metrics(*args, **kwargs)

    def log_lines(self, *args: Any, **kwargs: Any) -> None:
        self._maybe_fail()
        self.store.log_lines(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlAlchemyStore]:
    opened = SqlAlchemyStore(sqlite_file_url(tmp_path / "ws.db"), workspace="ws1")
    yield opened
    opened.close()


def _running_run(store: SqlAlchemyStore) -> Run:
    run = store.create_run(store.get_or_create_experiment("exp").id, compute="local")
    for status in (RunStatus.QUEUED, RunStatus.PREPARING, RunStatus.RUNNING):
        run = store.set_run_status(run.id, status)
    return run


def _report(reporter: StoreReporter, count: int) -> None:
    for step in range(count):
        reporter.metric("loss", 1.0 / (step + 1), step)
        reporter.log(f"step {step}")


def test_a_batch_that_failed_to_write_is_written_later_once(store: SqlAlchemyStore, tmp_path: Path) -> None:
    run = _running_run(store)
    locked = LockedStore(store, failures=5)
    reporter = StoreReporter(locked, run, log_path=tmp_path / "run.log", flush_interval=60)  # type: ignore[arg-type]
    _report(reporter, 3)
    assert reporter.flush() is False  # both writes failed: kept
    _report(reporter, 0)
    reporter.metric("loss", 0.1, 3)
    reporter.log("step 3")
    reporter.drain()  # retries with backoff until written
    reporter.close()
    assert [m.step for m in store.get_metric_histories(run.id)["loss"]] == [0, 1, 2, 3]
    texts = [line.text for line in store.get_log_lines(run.id, limit=None)]
    assert texts == ["step 0", "step 1", "step 2", "step 3"]
    assert reporter.write_error is None and locked.calls > 5


def test_writes_that_keep_failing_fail_the_run_with_a_clear_error(
    store: SqlAlchemyStore, tmp_path: Path
) -> None:
    run = _running_run(store)
    locked = LockedStore(store, failures=10**9)
    reporter = StoreReporter(locked, run, log_path=tmp_path / "run.log", flush_interval=60, give_up_s=0.5)  # type: ignore[arg-type]
    _report(reporter, 4)
    with pytest.raises(WorkspaceBusyError, match=r"could not write to the workspace store") as caught:
        reporter.drain()
    assert (
        "database is locked" in caught.value.message
        and "8 metric values and log lines" in caught.value.message
    )
    assert caught.value.hint and "start the run again" in caught.value.hint
    assert reporter.should_stop()  # the trainer is asked to stop
    with pytest.raises(WorkspaceBusyError):
        reporter.drain()


def test_memory_stays_bounded_while_the_store_fails(store: SqlAlchemyStore, tmp_path: Path) -> None:
    run = _running_run(store)
    locked = LockedStore(store, failures=10**9)
    reporter = StoreReporter(locked, run, log_path=tmp_path / "run.log", flush_interval=60, max_pending=50)  # type: ignore[arg-type]
    _report(reporter, 40)
    reporter.flush()
    assert reporter.write_error is not None and reporter._pending() <= 1  # the stop request's line


def test_the_worker_fails_the_run_instead_of_completing_it_with_holes(
    store: SqlAlchemyStore, tmp_path: Path
) -> None:
    run = _running_run(store)
    root = tmp_path / "ws" / "artifacts"
    job = TrainingJob(run_id=run.id, workspace="ws1", store_url="", artifact_root=str(root), config={})
    worker = Worker(job, store, LocalArtifactStore(root))
    locked = LockedStore(store, failures=10**9)
    worker.reporter = StoreReporter(locked, run, log_path=tmp_path / "run.log", give_up_s=0.3)  # type: ignore[arg-type]
    worker.reporter.metric("loss", 0.5, 0)
    result = TrainingResult(
        accuracy=0.9,
        macro_accuracy=0.85,
        backbone="test_tiny",
        strategy="linear",
        labels=["a", "b"],
        seconds=3.5,
        output_dir=tmp_path,
        files={},
        trials=[],
        skipped_images=[],
        evaluation={},
    )
    assert worker.finish(result, 1.0) == 1
    failed = store.get_run(run.id)
    assert failed.status is RunStatus.FAILED and failed.error is not None
    assert failed.error.type == "WorkspaceBusyError" and "could not write" in failed.error.message
