"""The terminal view of a run: rich progress bars (forced on) and plain lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from fake_trainer import fake_config
from modelbuilder.cli import monitor
from modelbuilder.entities import RunStatus
from modelbuilder.services import open_workspace, submit_training

pytestmark = pytest.mark.usefixtures("use_fake_trainer")


@pytest.mark.parametrize("live", [True, False], ids=["rich", "plain"])
def test_watch_run_shows_phases_trials_and_the_end(
    data: Path, live: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_workspace() as session:
        submission = submit_training(session, fake_config(data, trials=2, epochs=3))
        run, presses = monitor.watch_run(session, submission.run.id, submission.worker, live=live)
    assert run.status is RunStatus.COMPLETED and presses == 0
    err = capsys.readouterr().err
    assert "trial-0" in err and "trial-1" in err and "val_accuracy 0.9000" in err
    assert "[export] writing outputs" in err


def test_progress_bars_follow_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    assert monitor.use_live_progress() is False  # MODELBUILDER_NO_PROGRESS=1 in tests
    monkeypatch.delenv("MODELBUILDER_NO_PROGRESS")
    assert monitor.use_live_progress() is True
