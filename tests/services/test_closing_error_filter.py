"""ClosingErrorFilter: a live view of a failed run's log leaves its closing Error/Hint block to the caller."""

from __future__ import annotations

from modelbuilder.entities import LogLine, Run, RunStatus
from modelbuilder.services.runs import ClosingErrorFilter, RunUpdate


def _update(status: RunStatus, *texts: str) -> RunUpdate:
    run = Run(id="r1", experiment_id="e1", experiment="exp", status=status)
    return RunUpdate(run, [LogLine(i, 0.0, text) for i, text in enumerate(texts)])


def _texts(update: RunUpdate) -> list[str]:
    return [line.text for line in update.new_lines]


def test_the_closing_block_of_a_failed_run_is_left_to_the_caller() -> None:
    closing = ClosingErrorFilter()
    assert _texts(closing.apply(_update(RunStatus.RUNNING, "[scanning]", "Error: bad data", "  a.png"))) == [
        "[scanning]"
    ]
    assert _texts(closing.apply(_update(RunStatus.RUNNING, "Hint: fix it"))) == []
    assert _texts(closing.apply(_update(RunStatus.FAILED))) == []  # the caller raises the error once


def test_held_lines_come_back_when_the_run_did_not_fail() -> None:
    closing = ClosingErrorFilter()
    assert _texts(closing.apply(_update(RunStatus.RUNNING, "Error: a line that was not the end"))) == []
    assert _texts(closing.apply(_update(RunStatus.COMPLETED, "Run Completed"))) == [
        "Error: a line that was not the end",
        "Run Completed",
    ]


def test_a_long_tail_after_an_error_line_is_released() -> None:
    closing = ClosingErrorFilter()
    lines = ["Error: early"] + [f"line {i}" for i in range(ClosingErrorFilter.MAX_HELD)]
    assert len(_texts(closing.apply(_update(RunStatus.RUNNING, *lines)))) == len(lines)
    assert _texts(closing.apply(_update(RunStatus.RUNNING, "next"))) == ["next"]
