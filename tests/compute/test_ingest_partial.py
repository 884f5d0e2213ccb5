"""Feeding a run's log to the ingester in chunks that end mid-line (as a reader of a growing log gets it):
each line is applied once and whole, and a kept offset resumes exactly where the applied text ended."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelbuilder.compute import events as ev
from modelbuilder.compute.ingest import EventIngester
from modelbuilder.store import SqlAlchemyStore, lifecycle, sqlite_file_url

NOW = 1_800_000_000.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlAlchemyStore]:
    opened = SqlAlchemyStore(sqlite_file_url(tmp_path / "ws" / "workspace.db"), workspace="ws1")
    yield opened
    opened.close()


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
