"""``modelbuilder train --replay``'s service: a new run with the old config and its recorded plan."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from factories import make_image_folder
from fake_trainer import fake_config, use_fake_trainer  # noqa: F401 - a fixture
from modelbuilder.entities import RunStatus
from modelbuilder.errors import InvalidStateError
from modelbuilder.services import open_workspace, runs, submit_training
from modelbuilder.services.replay import REPLAY_OF, find_recorded_plan, replay_training
from modelbuilder.services.training_run import Submission, config_of_run
from modelbuilder.services.workspaces import WorkspaceSession
from modelbuilder.training.plan import DataFacts, PlannedTrial, make_plan, plan_table


@pytest.fixture
def session() -> Iterator[WorkspaceSession]:
    opened = open_workspace()
    yield opened
    opened.close()


def finished(session: WorkspaceSession, submission: Submission) -> RunStatus:
    *_, last = runs.follow_run(session, submission.run.id, submission.worker, timeout=60)
    return last.run.status


@pytest.mark.usefixtures("use_fake_trainer")
def test_a_replay_run_carries_the_recorded_plan(session: WorkspaceSession, tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "flowers", classes=2, per_class=3, size=8)
    first = submit_training(session, fake_config(data, trials=1))
    assert finished(session, first) is RunStatus.COMPLETED
    with pytest.raises(InvalidStateError, match="no readable recorded plan") as info:
        replay_training(session, first.run.id)
    assert "modelbuilder run show" in (info.value.hint or "")
    assert find_recorded_plan(session, first.run.id) is None

    plan = make_plan("test_tiny", DataFacts(5, 1, 8, 3, 2), 6, 10.0)
    plan.trials = [PlannedTrial("linear", status="completed", val_accuracy=1.0, record={"decays_tried": 1})]
    recorded = json.loads(json.dumps(plan.to_dict()))
    session.artifacts.put_bytes(first.run.id, json.dumps(recorded).encode(), "plan.json")
    assert find_recorded_plan(session, first.run.id) == recorded
    assert plan_table(recorded)[1][0][:2] == ["linear", "completed"]

    again = replay_training(session, first.run.id)
    assert again.run.params[REPLAY_OF] == first.run.id
    assert again.run.experiment == first.run.experiment
    assert config_of_run(again.run).replay_plan == recorded
    assert finished(session, again) is RunStatus.COMPLETED
