"""Run events: the line codec, the numbered writer, and applying a stream to the store exactly once."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelbuilder.artifacts import LocalArtifactStore
from modelbuilder.compute import events as ev
from modelbuilder.compute.ingest import HEARTBEAT_FRESH_S, EventIngester
from modelbuilder.entities import RunError, RunStatus
from modelbuilder.store import SqlAlchemyStore, lifecycle, sqlite_file_url

NOW = 1_800_000_000.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlAlchemyStore]:
    opened = SqlAlchemyStore(sqlite_file_url(tmp_path / "ws" / "workspace.db"), workspace="ws1")
    yield opened
    opened.close()


@pytest.fixture
def artifacts(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "ws" / "artifacts")


@pytest.fixture
def run_id(store: SqlAlchemyStore) -> str:
    run = store.create_run(store.get_or_create_experiment("flowers").id, compute="local")
    return lifecycle.queue(store, run.id).id


def _log(events: list[ev.RunEvent]) -> list[str]:
    """The lines a worker prints for ``events``, numbered 1.. and one second apart, with noise between."""
    stream = io.StringIO()
    clock = iter(NOW + i for i in range(1000))
    writer = ev.EventWriter(stream, clock=lambda: next(clock))
    for event in events:
        writer.send(event)
    lines = stream.getvalue().splitlines()
    return [lines[0], "a line the trainer printed itself", *lines[1:]]


def _training_stream(artifact: tuple[str, int, str]) -> list[ev.RunEvent]:
    name, size, sha = artifact
    return [
        ev.Started(pid=42, host="node-1"),
        ev.Phase(name="features", message="extracting"),
        ev.Progress(task="batches", completed=3, total=10),
        ev.TrialStarted(trial="trial-0", params={"lr": 0.01}),
        ev.Metric(key="val_accuracy", value=0.5, step=0, trial="trial-0"),
        ev.Metric(key="val_accuracy", value=0.75, step=1, trial="trial-0"),
        ev.Log(line="epoch 1 done"),
        ev.TrialEnded(trial="trial-0", status="Completed", metrics={"val_accuracy": 0.75}),
        ev.Metric(key="best_val_accuracy", value=0.75, step=0),
        ev.Status(status="Finalizing", phase="recording outputs"),
        ev.ArtifactWritten(name=name, size=size, sha256=sha),
        ev.Result(result={"accuracy": 0.75, "macro_accuracy": 0.7, "seconds": 3.5, "skipped_images": []}),
        ev.Ended(status="Completed"),
    ]


# --- codec ----------------------------------------------------------------------------------------


def test_every_kind_round_trips_through_one_line() -> None:
    samples: list[ev.RunEvent] = [
        ev.Started(pid=1, host="h", cwd="/w"),
        ev.Status(status="Running", phase="training"),
        ev.Phase(name="trial", message="trial-0"),
        ev.Progress(task="epochs", completed=1, total=None),
        ev.Metric(key="loss", value=0.25, step=3, trial="trial-1"),
        ev.Log(line="two\nlines"),
        ev.TrialStarted(trial="t", params={"lr": 0.1, "layers": [1, 2]}),
        ev.TrialEnded(trial="t", status="Failed", metrics={"loss": 1.0}),
        ev.Heartbeat(),
        ev.ArtifactWritten(name="bestModel.onnx", size=3, sha256="ab" * 32),
        ev.Result(result={"accuracy": 1.0}, sha256={"bestModel.onnx": "cd" * 32}),
        ev.Error(type="DatasetError", message="bad", hint="fix it"),
        ev.Ended(status="Canceled"),
    ]
    assert {type(e) for e in samples} == set(ev.EVENT_TYPES.values())
    for seq, event in enumerate(samples, start=1):
        sent = type(event)(**{**event.fields(), "seq": seq, "time": NOW + seq})
        line = ev.encode(sent)
        assert "\n" not in line and line.startswith(ev.EVENT_PREFIX)
        assert ev.decode(f"(raylet, ip=127.0.0.1) {line}") == sent  # found anywhere in a log line


def test_lines_of_the_ray_job_format_decode() -> None:
    # What compute/ray's entrypoint prints: the same wire format.
    line = (
        '@mb-event {"v": 1, "seq": 5, "t": 12.5, "kind": "metric", "key": "k", "value": 1.0, "step": 2, '
        '"trial": null}'
    )
    assert ev.decode(line) == ev.Metric(seq=5, time=12.5, key="k", value=1.0, step=2, trial=None)


@pytest.mark.parametrize(
    "line",
    [
        "no event here",
        ev.EVENT_PREFIX + "{not json",
        ev.EVENT_PREFIX + '{"v": 2, "seq": 1, "t": 1, "kind": "log", "line": "x"}',
        ev.EVENT_PREFIX + '{"v": 1, "t": 1, "kind": "log", "line": "x"}',
        ev.EVENT_PREFIX + '{"v": 1, "seq": 1, "t": 1, "kind": "metric", "key": "k"}',
        ev.EVENT_PREFIX + "[1, 2]",
    ],
)
def test_garbled_lines_and_other_versions_are_not_events(line: str) -> None:
    assert ev.decode(line) is None


def test_unknown_kinds_are_kept_and_not_applied(store: SqlAlchemyStore, run_id: str) -> None:
    event = ev.decode(ev.EVENT_PREFIX + '{"v": 1, "seq": 3, "t": 1, "kind": "gpu_temp", "celsius": 71}')
    assert event == ev.Unknown(seq=3, time=1.0, name="gpu_temp", data={"celsius": 71})
    assert ev.decode(ev.encode(event)) == event
    ingester = EventIngester(store, run_id)
    assert ingester.apply([event]) == 0 and ingester.applied_seq == 3


def test_non_finite_values_travel_as_text() -> None:
    line = ev.encode(ev.Metric(seq=1, time=1.0, key="loss", value=float("nan")))
    assert '"value":"nan"' in line


def test_the_writer_numbers_events_once_each_across_threads() -> None:
    stream = io.StringIO()
    writer = ev.EventWriter(stream, start_seq=10)

    def emit() -> None:
        for i in range(200):
            writer.emit("log", line=f"line {i}")

    threads = [threading.Thread(target=emit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    decoded = [ev.decode(line) for line in stream.getvalue().splitlines()]
    assert sorted(e.seq for e in decoded if e is not None) == list(range(11, 411))


def test_split_lines_keeps_the_partial_last_line() -> None:
    assert ev.split_lines("a\nb\npart") == (["a", "b"], "part")
    assert ev.split_lines("a\n") == (["a"], "")


# --- applying to the store ------------------------------------------------------------------------


def _artifact(artifacts: LocalArtifactStore, run_id: str, data: bytes = b"onnx!") -> tuple[str, int, str]:
    record = artifacts.put_bytes(run_id, data, "bestModel.onnx")
    return record.path, record.size, record.sha256


def _snapshot(store: SqlAlchemyStore, run_id: str) -> tuple[object, ...]:
    children = store.list_child_runs(run_id)
    histories = [store.get_metric_histories(r) for r in (run_id, *(c.id for c in children))]
    return (
        store.get_run(run_id).status,
        [(c.name, c.status) for c in children],
        [(line.timestamp, line.text) for line in store.get_log_lines(run_id, limit=None)],
        [{k: [(m.value, m.step, m.timestamp) for m in v] for k, v in h.items()} for h in histories],
        store.list_artifacts(run_id),
    )


def test_a_whole_run_reaches_the_store(
    store: SqlAlchemyStore, artifacts: LocalArtifactStore, run_id: str
) -> None:
    lines = _log(_training_stream(_artifact(artifacts, run_id)))
    ingester = EventIngester(store, run_id, artifacts=artifacts, clock=lambda: NOW + 20)
    assert ingester.feed(lines) > 0 and ingester.applied_seq == 13
    run = store.get_run(run_id)
    assert run.status is RunStatus.COMPLETED and run.started_at is not None
    (child,) = store.list_child_runs(run_id)
    assert (child.name, child.status, child.params) == ("trial-0", RunStatus.COMPLETED, {"lr": 0.01})
    history = store.get_metric_history(child.id, "val_accuracy")
    assert [(m.value, m.step) for m in history] == [(0.5, 0), (0.75, 1), (0.75, 1)]
    assert history[0].timestamp == NOW + 4  # the event's own time
    assert {"best_val_accuracy", "accuracy", "macro_accuracy", "seconds", "skipped_images"} <= set(
        run.latest_metrics
    )
    texts = [line.text for line in store.get_log_lines(run_id, limit=None)]
    assert texts == [
        "Worker started on node-1 (pid 42).",
        "a line the trainer printed itself",
        "[features] extracting",
        "epoch 1 done",
    ]
    assert [a.path for a in store.list_artifacts(run_id)] == ["bestModel.onnx"]
    assert ingester.result is not None and ingester.result.result["accuracy"] == 0.75


def test_reading_the_log_again_writes_nothing_twice(
    store: SqlAlchemyStore, artifacts: LocalArtifactStore, run_id: str
) -> None:
    lines = _log(_training_stream(_artifact(artifacts, run_id)))
    cut = 8  # a submitter that died in the middle of a trial
    first = EventIngester(store, run_id, artifacts=artifacts)
    first.feed(lines[:cut])
    middle = _snapshot(store, run_id)
    first.feed(lines[:cut])  # the same lines again: skipped by sequence number
    assert _snapshot(store, run_id) == middle

    # A new process that lost the offset reads the whole log from the start.
    EventIngester(store, run_id, artifacts=artifacts).feed(lines)
    once = _snapshot(store, run_id)
    assert once[0] is RunStatus.COMPLETED
    EventIngester(store, run_id, artifacts=artifacts).feed(lines)
    assert _snapshot(store, run_id) == once

    # The same result as one ingester reading everything once, on a fresh run.
    fresh = lifecycle.queue(store, store.create_run(store.get_or_create_experiment("other").id).id).id
    _artifact(artifacts, fresh)
    EventIngester(store, fresh, artifacts=artifacts).feed(lines)
    assert _snapshot(store, fresh)[1:4] == once[1:4]


def test_resuming_from_a_kept_offset(
    store: SqlAlchemyStore, artifacts: LocalArtifactStore, run_id: str
) -> None:
    lines = _log(_training_stream(_artifact(artifacts, run_id)))
    first = EventIngester(store, run_id, artifacts=artifacts)
    first.feed(lines[:6])
    resumed = EventIngester(store, run_id, artifacts=artifacts, applied_seq=first.applied_seq)
    resumed.feed(lines)
    assert resumed.applied_seq == 13
    reference = lifecycle.queue(store, store.create_run(store.get_or_create_experiment("ref").id).id).id
    _artifact(artifacts, reference)
    EventIngester(store, reference, artifacts=artifacts).feed(lines)
    assert _snapshot(store, run_id)[:4] == _snapshot(store, reference)[:4]


def test_an_error_event_fails_the_run_with_type_message_and_hint(store: SqlAlchemyStore, run_id: str) -> None:
    lines = _log(
        [
            ev.Started(),
            ev.TrialStarted(trial="trial-0"),
            ev.Error(type="DatasetError", message="Label 'a' has 1 image.", hint="Add images."),
        ]
    )
    EventIngester(store, run_id).feed(lines)
    run = store.get_run(run_id)
    assert (run.status, run.error) == (
        RunStatus.FAILED,
        RunError("DatasetError", "Label 'a' has 1 image.", "Add images."),
    )
    assert [c.status for c in store.list_child_runs(run_id)] == [RunStatus.FAILED]
    EventIngester(store, run_id).feed(lines)  # replayed after the end: nothing changes, nothing raises
    assert store.get_run(run_id) == run


def test_without_end_run_the_end_events_are_kept_for_the_caller(store: SqlAlchemyStore, run_id: str) -> None:
    lines = _log(
        [
            ev.Started(),
            ev.Result(result={"accuracy": 0.5}, sha256={"bestModel.onnx": "ab" * 32}),
            ev.Error(type="DatasetError", message="broken", hint="fix it"),
            ev.Ended(status="Completed"),
        ]
    )
    ingester = EventIngester(store, run_id, end_run=False)
    ingester.feed(lines)
    assert store.get_run(run_id).status is RunStatus.RUNNING  # the caller ends the run (Ray: the follower)
    assert "accuracy" not in store.get_latest_metrics(run_id)
    # A resumed ingester skips them by seq but still knows them: the caller needs them after a restart.
    again = EventIngester(store, run_id, applied_seq=ingester.applied_seq, end_run=False)
    again.feed(lines)
    assert again.result is not None and again.result.sha256 == {"bestModel.onnx": "ab" * 32}
    assert again.error is not None and (again.error.message, again.error.hint) == ("broken", "fix it")
    assert again.ended is not None and again.ended.status == "Completed"


def test_completed_needs_artifacts_that_match_their_records(
    store: SqlAlchemyStore, artifacts: LocalArtifactStore, run_id: str
) -> None:
    name, size, sha = _artifact(artifacts, run_id)
    artifacts.put_bytes(run_id, b"tampered", name)  # the file changed after its event was written
    EventIngester(store, run_id, artifacts=artifacts).apply([ev.Started(seq=1, time=NOW)])
    store.log_artifact(run_id, name, size, sha)
    EventIngester(store, run_id, artifacts=artifacts).apply([ev.Ended(seq=4, time=NOW, status="Completed")])
    run = store.get_run(run_id)
    assert run.status is RunStatus.FAILED and run.error is not None
    assert "failed verification" in run.error.message and name in run.error.message


def test_an_artifact_event_that_does_not_match_the_file_is_not_recorded(
    store: SqlAlchemyStore, artifacts: LocalArtifactStore, run_id: str
) -> None:
    name, size, _ = _artifact(artifacts, run_id)
    applied = EventIngester(store, run_id, artifacts=artifacts).apply(
        [ev.ArtifactWritten(seq=1, time=NOW, name=name, size=size, sha256="0" * 64)]
    )
    assert applied == 0 and store.list_artifacts(run_id) == []


def test_fresh_heartbeats_keep_the_run_alive_and_bring_back_a_cancel(
    store: SqlAlchemyStore, run_id: str
) -> None:
    ingester = EventIngester(store, run_id, clock=lambda: NOW)
    ingester.apply([ev.Started(seq=1, time=NOW - 100), ev.TrialStarted(seq=2, time=NOW - 99, trial="t")])
    before = store.get_run(run_id).heartbeat_at
    assert ingester.apply([ev.Heartbeat(seq=3, time=NOW - HEARTBEAT_FRESH_S - 1)]) == 0  # a replay
    assert store.get_run(run_id).heartbeat_at == before
    lifecycle.request_cancel(store, run_id)
    assert ingester.apply([ev.Heartbeat(seq=4, time=NOW - 1)]) == 1
    assert ingester.last_status is RunStatus.CANCEL_REQUESTED
    assert store.get_run(run_id).heartbeat_at != before
    assert all(c.heartbeat_at is not None for c in store.list_child_runs(run_id))
    # The worker stops, keeps its best model and says so: the run ends Canceled, not Completed.
    ingester.apply([ev.Ended(seq=5, time=NOW, status="Completed")])
    assert store.get_run(run_id).status is RunStatus.CANCELED


def test_apply_event_is_idempotent_for_one_event(store: SqlAlchemyStore, run_id: str) -> None:
    metric = ev.Metric(seq=7, time=NOW, key="loss", value=0.5)
    assert ev.apply_event(store, metric, run_id=run_id)
    assert not ev.apply_event(store, metric, run_id=run_id)
    assert len(store.get_metric_history(run_id, "loss")) == 1


# A job's log read in chunks (the follower reads only what is new): a line cut by a read is applied once,
# whole, when the next chunk completes it.

def _run(store: SqlAlchemyStore, name: str = "flowers") -> str:
    run = store.create_run(store.get_or_create_experiment(name).id, compute="ray")
    return lifecycle.queue(store, run.id).id


def _text() -> str:
    """A job's log: events with the trainer's own prints between them, the last line unterminated."""
    stream = io.StringIO()
    clock = iter(NOW + i for i in range(100))
    writer = ev.EventWriter(stream, clock=lambda: next(clock))
    writer.emit("started", pid=1, host="node")
    stream.write("epoch 1 of 3 done\n")
    for step in range(3):
        writer.emit("metric", key="loss", value=1.0 / (step + 1), step=step)
        stream.write(f"printed after step {step}\n")
    writer.emit("log", line="finishing")
    stream.write("the very last line")
    return stream.getvalue()


def _state(store: SqlAlchemyStore, run_id: str) -> tuple[dict[str, list[tuple[int, float]]], list[str]]:
    metrics = {
        key: [(m.step, m.value) for m in rows] for key, rows in store.get_metric_histories(run_id).items()
    }
    return metrics, [line.text for line in store.get_log_lines(run_id, limit=None)]


def _reference(store: SqlAlchemyStore) -> tuple[dict[str, list[tuple[int, float]]], list[str]]:
    run_id = _run(store, "reference")
    ingester = EventIngester(store, run_id, end_run=False)
    ingester.feed(_text().split("\n"))  # every line whole, at once
    return _state(store, run_id)


@pytest.mark.parametrize("size", [1, 7, 50])
def test_chunks_cut_mid_line_apply_each_line_once_and_whole(store: SqlAlchemyStore, size: int) -> None:
    text = _text()
    run_id = _run(store)
    ingester = EventIngester(store, run_id, end_run=False)
    for start in range(0, len(text), size):
        ingester.feed(text[start : start + size])
    assert "the very last line" not in _state(store, run_id)[1]  # unterminated: kept, not applied
    assert ingester.offset == text.rindex("\n") + 1
    ingester.finish()
    assert _state(store, run_id) == _reference(store)
    assert ingester.applied_seq == 5 and ingester.offset == len(text)


def test_a_new_ingester_resumes_at_the_kept_offset_exactly_once(store: SqlAlchemyStore) -> None:
    text = _text()
    run_id = _run(store)
    first = EventIngester(store, run_id, end_run=False)
    cut = text.index("printed after step 1") + 5  # mid-line
    first.feed(text[:cut])
    kept = (first.applied_seq, first.plain_mark, first.offset, first.position)
    assert kept[2] == text.rindex("\n", 0, cut) + 1  # the partial line is not part of the offset

    seq, plain, offset, position = kept
    resumed = EventIngester(
        store, run_id, applied_seq=seq, plain_mark=plain, offset=offset, position=position, end_run=False
    )
    resumed.feed(text, offset=0)  # the whole log again, as Ray serves it: only the rest is applied
    resumed.feed(text, offset=0)  # and again: nothing new
    resumed.finish()
    assert _state(store, run_id) == _reference(store)


def test_a_chunk_that_leaves_a_gap_is_refused(store: SqlAlchemyStore) -> None:
    ingester = EventIngester(store, _run(store), end_run=False)
    ingester.feed("abc\n")
    with pytest.raises(ValueError, match="missing"):
        ingester.feed("xyz\n", offset=10)
