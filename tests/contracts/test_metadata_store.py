"""The MetadataStore contract, part 1: experiments, runs, status transitions, child runs, pagination.

Every implementation in ``conftest.IMPLEMENTATIONS`` runs every test here (and in the other
``test_metadata_store_*.py`` files of this folder).
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from run_helpers import new_run

from modelbuilder.entities import RUN_TRANSITIONS, RunError, RunStatus
from modelbuilder.errors import (
    ExperimentNotFoundError,
    InvalidNameError,
    InvalidParameterError,
    InvalidStateError,
    RunNotFoundError,
)
from modelbuilder.store import MetadataStore

# --- experiments ----------------------------------------------------------------------------------


def test_first_run_registers_experiment_and_later_ones_reuse_it(store: MetadataStore) -> None:
    first = store.get_or_create_experiment("flowers")
    again = store.get_or_create_experiment("flowers")
    other = store.get_or_create_experiment("cats-and-dogs")
    assert first.id == again.id and first.name == "flowers" and first.workspace == store.workspace
    assert other.id != first.id
    assert [s.experiment.name for s in store.list_experiments()] == ["cats-and-dogs", "flowers"]


@pytest.mark.parametrize("bad", ["ab", "x" * 37, "-lead", "has space", "dot.name", ""])
def test_experiment_names_follow_the_rule(store: MetadataStore, bad: str) -> None:
    with pytest.raises(InvalidNameError):
        store.get_or_create_experiment(bad)
    assert store.list_experiments() == []


def test_missing_experiment(store: MetadataStore) -> None:
    assert store.find_experiment("nope") is None
    with pytest.raises(ExperimentNotFoundError) as info:
        store.get_experiment("nope")
    assert "nope" in str(info.value) and "modelbuilder experiment list" in (info.value.hint or "")
    with pytest.raises(ExperimentNotFoundError):
        store.get_experiment_by_id("0" * 32)
    created = store.get_or_create_experiment("found")
    assert store.get_experiment_by_id(created.id) == created == store.get_experiment("found")


def test_experiment_summaries_count_top_level_runs_and_show_the_latest(
    store: MetadataStore, clock: Any
) -> None:
    exp = store.get_or_create_experiment("counted")
    store.get_or_create_experiment("empty")
    first = store.create_run(exp.id)
    clock.advance(1)
    second = store.create_run(exp.id)
    clock.advance(1)
    store.create_run(exp.id, parent_run_id=first.id)  # a trial: not counted, not "latest"
    summaries = {s.experiment.name: s for s in store.list_experiments()}
    assert summaries["counted"].run_count == 2
    assert summaries["counted"].latest_run is not None and summaries["counted"].latest_run.id == second.id
    assert summaries["empty"].run_count == 0 and summaries["empty"].latest_run is None


# --- runs -----------------------------------------------------------------------------------------


def test_create_run_records_everything(store: MetadataStore, clock: Any) -> None:
    exp = store.get_or_create_experiment("flowers")
    params = {"time_budget": 60.0, "architecture": "resnet50", "nested": {"a": [1, 2]}, "data": Path("/d")}
    run = store.create_run(exp.id, compute="local", params=params, dataset_fingerprint="f" * 64, name="first")
    assert run.status is RunStatus.NOT_STARTED and run.experiment == "flowers" and run.experiment_id == exp.id
    assert run.params == {
        "time_budget": 60.0,
        "architecture": "resnet50",
        "nested": {"a": [1, 2]},
        "data": "/d",
    }
    assert (run.compute, run.dataset_fingerprint, run.name) == ("local", "f" * 64, "first")
    assert run.created_at is not None and run.created_at.timestamp() == pytest.approx(clock.now)
    assert run.started_at is None and run.ended_at is None and run.error is None and run.parent_run_id is None
    assert store.get_run(run.id) == run
    assert len(run.id) == 32


def test_create_run_refuses_bad_input(store: MetadataStore) -> None:
    exp = store.get_or_create_experiment("flowers")
    other = store.get_or_create_experiment("other-exp")
    with pytest.raises(ExperimentNotFoundError):
        store.create_run("0" * 32)
    with pytest.raises(InvalidParameterError):
        store.create_run(exp.id, status=RunStatus.COMPLETED)
    with pytest.raises(InvalidParameterError):
        store.create_run(exp.id, params={"x": object()})
    for too_long in ({"compute": "c" * 65}, {"name": "n" * 251}, {"dataset_fingerprint": "f" * 129}):
        with pytest.raises(InvalidParameterError):
            store.create_run(exp.id, **too_long)
    with pytest.raises(RunNotFoundError):
        store.create_run(exp.id, parent_run_id="f" * 32)
    parent = store.create_run(other.id)
    with pytest.raises(InvalidParameterError, match="parent's experiment"):
        store.create_run(exp.id, parent_run_id=parent.id)
    assert store.count_runs() == 1


def test_run_ids_and_unique_prefixes(store: MetadataStore, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = iter(
        [uuid.UUID("abcdef00" + "0" * 24), uuid.UUID("abcdef11" + "0" * 24), uuid.UUID("12345678" * 4)]
    )
    exp = store.get_or_create_experiment("prefixes")
    monkeypatch.setattr(uuid, "uuid4", lambda: next(ids))
    first, second, third = (store.create_run(exp.id).id for _ in range(3))
    assert store.get_run("abcdef00").id == first and store.get_run("ABCDEF11").id == second
    assert store.get_run(third[:6]).id == third and store.get_run(third).id == third
    with pytest.raises(InvalidParameterError, match="several runs"):
        store.get_run("abcdef")
    with pytest.raises(RunNotFoundError):
        store.get_run("12345")  # under 6 characters: no prefix lookup
    with pytest.raises(RunNotFoundError) as info:
        store.get_run("ffffffff")
    assert "modelbuilder run list" in (info.value.hint or "")
    assert store.find_run("ffffffff") is None and store.find_run("abcdef00") is not None
    assert store.set_run_status("abcdef00", RunStatus.QUEUED).id == first


def test_every_transition_follows_the_table(store: MetadataStore) -> None:
    checked = 0
    for current in RunStatus:
        for new in RunStatus:
            run_id = new_run(store, current)
            if new in RUN_TRANSITIONS[current]:
                assert store.set_run_status(run_id, new).status is new
            else:
                with pytest.raises(InvalidStateError):
                    store.set_run_status(run_id, new)
                assert store.get_run(run_id).status is current
            checked += 1
    assert checked == len(RunStatus) ** 2


@pytest.mark.parametrize("terminal", [RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED])
def test_terminal_runs_never_change(store: MetadataStore, terminal: RunStatus) -> None:
    run_id = new_run(store, terminal)
    before = store.get_run(run_id)
    for new in RunStatus:
        with pytest.raises(InvalidStateError) as info:
            store.set_run_status(run_id, new, error=RunError("TrainingError", "late"))
        assert "start a new run" in (info.value.hint or "")
    assert store.get_run(run_id) == before


def test_times_error_and_phase(store: MetadataStore, clock: Any) -> None:
    run_id = new_run(store, RunStatus.QUEUED)
    assert store.get_run(run_id).started_at is None
    clock.advance(5)
    preparing = store.set_run_status(run_id, RunStatus.PREPARING, phase="scanning")
    assert preparing.started_at is not None and preparing.started_at.timestamp() == clock.now
    assert preparing.phase == "scanning"
    clock.advance(5)
    running = store.set_run_status(run_id, RunStatus.RUNNING)
    assert running.started_at == preparing.started_at  # set once
    assert store.set_run_phase(run_id, "trial 2").phase == "trial 2"
    with pytest.raises(InvalidParameterError):
        store.set_run_phase(run_id, "p" * 251)
    clock.advance(5)
    lost = RunError("TrainingError", "process lost", "Resume it.")
    failed = store.set_run_status(run_id, RunStatus.FAILED, error=lost)
    assert failed.error == lost and failed.ended_at is not None
    assert failed.ended_at.timestamp() == clock.now


def test_cancel_path(store: MetadataStore) -> None:
    run_id = new_run(store, RunStatus.RUNNING)
    assert store.set_run_status(run_id, RunStatus.CANCEL_REQUESTED).status is RunStatus.CANCEL_REQUESTED
    assert store.heartbeat(run_id) is RunStatus.CANCEL_REQUESTED  # how a worker learns of the cancel
    canceled = store.set_run_status(run_id, RunStatus.CANCELED)
    assert canceled.status is RunStatus.CANCELED and canceled.ended_at is not None


def test_only_one_of_racing_status_changes_wins(store: MetadataStore) -> None:
    run_id = new_run(store, RunStatus.RUNNING)
    outcomes: list[str] = []
    targets = [RunStatus.FAILED, RunStatus.CANCEL_REQUESTED, RunStatus.FINALIZING] * 3

    def change(target: RunStatus) -> None:
        try:
            store.set_run_status(run_id, target, error=RunError("TrainingError", f"by {target.value}"))
            outcomes.append(target.value)
        except InvalidStateError:
            outcomes.append("refused")

    threads = [threading.Thread(target=change, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = store.get_run(run_id)
    assert len(outcomes) == len(targets) and final.status.value in outcomes
    # No status can be entered twice, so each target succeeded at most once; the rest were refused.
    assert all(outcomes.count(t.value) <= 1 for t in set(targets))
    assert outcomes.count("refused") >= len(targets) - 3


def test_heartbeats_and_stale_runs(store: MetadataStore, clock: Any) -> None:
    running = new_run(store, RunStatus.RUNNING)
    queued = new_run(store, RunStatus.QUEUED)
    finished = new_run(store, RunStatus.COMPLETED)
    canceling = new_run(store, RunStatus.CANCEL_REQUESTED)
    clock.advance(60)
    assert {r.id for r in store.find_stale_runs(30)} == {running, canceling}
    assert store.heartbeat(running) is RunStatus.RUNNING
    beat = store.get_run(running).heartbeat_at
    assert beat is not None and beat.timestamp() == clock.now
    assert {r.id for r in store.find_stale_runs(30)} == {canceling}
    assert store.find_stale_runs(120) == []
    before = store.get_run(finished).heartbeat_at
    assert store.heartbeat(finished) is RunStatus.COMPLETED
    assert store.get_run(finished).heartbeat_at == before  # terminal runs are not updated
    assert queued not in {r.id for r in store.find_stale_runs(0)}
    with pytest.raises(RunNotFoundError):
        store.heartbeat("f" * 32)


# --- child runs, listing, pagination --------------------------------------------------------------


def test_child_runs(store: MetadataStore, clock: Any) -> None:
    parent_id = new_run(store, RunStatus.RUNNING)
    parent = store.get_run(parent_id)
    children = []
    for index in range(4):
        clock.advance(1)
        children.append(
            store.create_run(
                parent.experiment_id,
                parent_run_id=parent_id,
                name=f"trial {index}",
                params={"lr": 10.0**-index},
                status=RunStatus.RUNNING,
            )
        )
    listed = store.list_child_runs(parent_id)
    assert [r.id for r in listed] == [c.id for c in children]
    assert all(r.parent_run_id == parent_id and r.started_at is not None for r in listed)
    assert store.count_runs(parent_run_id=parent_id) == 4
    assert store.count_runs(parent_run_id=None) == 1 and store.count_runs() == 5
    assert [r.id for r in store.list_runs(parent_run_id=None)] == [parent_id]
    assert store.list_child_runs(children[0].id) == []


def test_pagination_and_order(store: MetadataStore, clock: Any) -> None:
    exp = store.get_or_create_experiment("paged")
    ids = []
    for index in range(25):
        clock.advance(1)
        ids.append(store.create_run(exp.id, name=f"run-{index:02d}").id)
    pages = [store.list_runs(exp.id, offset=offset, limit=10) for offset in (0, 10, 20)]
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [r.id for page in pages for r in page] == ids[::-1]  # newest first by default
    oldest_first = store.list_runs(exp.id, limit=None, order_by=["created_at asc"])
    assert [r.id for r in oldest_first] == ids
    by_name = store.list_runs(exp.id, limit=3, order_by=["name desc"])
    assert [r.name for r in by_name] == ["run-24", "run-23", "run-22"]
    assert store.list_runs(exp.id, offset=25) == [] and store.list_runs(exp.id, limit=0) == []
    assert store.count_runs(exp.id) == 25 and store.count_runs("0" * 32) == 0


def test_filters_by_status_and_experiment(store: MetadataStore) -> None:
    a = new_run(store, RunStatus.RUNNING, experiment="exp-a")
    b = new_run(store, RunStatus.COMPLETED, experiment="exp-b")
    c = new_run(store, RunStatus.FAILED, experiment="exp-b")
    exp_b = store.get_experiment("exp-b")
    assert {r.id for r in store.list_runs(statuses=[RunStatus.RUNNING])} == {a}
    assert {r.id for r in store.list_runs(exp_b.id)} == {b, c}
    assert store.count_runs(exp_b.id, statuses=[RunStatus.FAILED, RunStatus.CANCELED]) == 1
    assert store.list_runs(statuses=[]) == []


def test_order_by_metric_puts_runs_without_it_last(store: MetadataStore) -> None:
    scored = {}
    for accuracy in (0.5, 0.9, 0.7):
        run_id = new_run(store, RunStatus.RUNNING)
        store.log_metric(run_id, "accuracy", accuracy)
        scored[accuracy] = run_id
    unscored = new_run(store, RunStatus.RUNNING)
    best_first = store.list_runs(limit=None, order_by=["metric.accuracy desc"])
    assert [r.id for r in best_first] == [scored[0.9], scored[0.7], scored[0.5], unscored]
    worst_first = store.list_runs(limit=None, order_by=["metric.accuracy asc"])
    assert [r.id for r in worst_first] == [scored[0.5], scored[0.7], scored[0.9], unscored]
    assert best_first[0].latest_metrics == {"accuracy": 0.9}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"order_by": ["color desc"]},
        {"order_by": ["created_at sideways"]},
        {"order_by": ["metric."]},
        {"order_by": ["created_at desc extra"]},
        {"offset": -1},
        {"limit": -5},
        {"limit": 2.5},
    ],
)
def test_bad_list_arguments(store: MetadataStore, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidParameterError):
        store.list_runs(**kwargs)
