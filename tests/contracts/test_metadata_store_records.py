"""The MetadataStore contract, part 2: params, metrics, log lines and artifact records of runs."""

from __future__ import annotations

import math
from typing import Any

import pytest
from run_helpers import new_run

from modelbuilder.entities import Artifact, Metric, RunStatus
from modelbuilder.errors import InvalidParameterError, InvalidStateError, RunNotFoundError
from modelbuilder.store import MetadataStore

SHA = "a" * 64

# --- params ---------------------------------------------------------------------------------------


def test_params_merge_and_are_immutable_unless_overwritten(store: MetadataStore) -> None:
    run_id = new_run(store, RunStatus.RUNNING, params={"epochs": 3})
    store.log_params(run_id, {"lr": 0.01, "backbone": "resnet50"})
    store.log_params(run_id, {"lr": 0.01})  # same value again: fine
    assert store.get_run(run_id).params == {"epochs": 3, "lr": 0.01, "backbone": "resnet50"}
    with pytest.raises(InvalidStateError) as info:
        store.log_params(run_id, {"lr": 0.1, "new": 1})
    assert "overwrite=True" in (info.value.hint or "")
    assert store.get_run(run_id).params == {"epochs": 3, "lr": 0.01, "backbone": "resnet50"}  # all or nothing
    store.log_params(run_id, {"lr": 0.1}, overwrite=True)
    assert store.get_run(run_id).params["lr"] == 0.1
    with pytest.raises(InvalidParameterError):
        store.log_params(run_id, {"bad": {1, 2j}})
    with pytest.raises(InvalidParameterError):
        store.log_params(run_id, {"": 1})


def test_terminal_runs_accept_no_params_metrics_or_artifacts(store: MetadataStore) -> None:
    run_id = new_run(store, RunStatus.COMPLETED)
    with pytest.raises(InvalidStateError):
        store.log_params(run_id, {"late": 1})
    with pytest.raises(InvalidStateError):
        store.log_metric(run_id, "late", 1.0)
    with pytest.raises(InvalidStateError):
        store.log_artifact(run_id, "late.txt", 1, SHA)
    assert store.log_lines(run_id, ["still explained in the log"]) == 1
    run = store.get_run(run_id)
    assert run.params == {} and run.latest_metrics == {} and store.list_artifacts(run_id) == []


def test_unknown_run_everywhere(store: MetadataStore) -> None:
    missing = "f" * 32
    calls = [
        lambda: store.log_params(missing, {"a": 1}),
        lambda: store.log_metric(missing, "a", 1.0),
        lambda: store.get_metric_history(missing, "a"),
        lambda: store.get_metric_histories(missing),
        lambda: store.get_latest_metrics(missing),
        lambda: store.log_lines(missing, ["x"]),
        lambda: store.get_log_lines(missing),
        lambda: store.count_log_lines(missing),
        lambda: store.log_artifact(missing, "a.txt", 1, SHA),
        lambda: store.list_artifacts(missing),
        lambda: store.set_run_status(missing, RunStatus.QUEUED),
        lambda: store.set_run_phase(missing, "x"),
        lambda: store.get_run(missing),
    ]
    for call in calls:
        with pytest.raises(RunNotFoundError):
            call()


# --- metrics --------------------------------------------------------------------------------------


def test_metric_history_and_latest(store: MetadataStore, clock: Any) -> None:
    run_id = new_run(store, RunStatus.RUNNING)
    assert (
        store.log_metrics(run_id, [("loss", 1.0, 1, None), ("loss", 0.5, 2, None), ("acc", 0.6, 1, None)])
        == 3
    )
    clock.advance(1)
    store.log_metrics(
        run_id, [Metric("acc", 0.8, 2, clock.now), ("loss", 0.9, 0, None)]
    )  # step 0 arrives late
    history = store.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 0.9), (1, 1.0), (2, 0.5)]
    latest = store.get_latest_metrics(run_id)
    assert {k: (m.value, m.step) for k, m in latest.items()} == {"loss": (0.5, 2), "acc": (0.8, 2)}
    assert store.get_run(run_id).latest_metrics == {"acc": 0.8, "loss": 0.5}
    histories = store.get_metric_histories(run_id)
    assert sorted(histories) == ["acc", "loss"] and len(histories["loss"]) == 3
    assert store.get_metric_history(run_id, "missing") == []
    assert store.log_metrics(run_id, []) == 0


def test_latest_metric_on_the_same_step_is_the_newest(store: MetadataStore, clock: Any) -> None:
    run_id = new_run(store, RunStatus.RUNNING)
    store.log_metrics(run_id, [("acc", 0.1, 5, clock.now)])
    store.log_metrics(run_id, [("acc", 0.2, 5, clock.now + 1)])
    store.log_metrics(run_id, [("acc", 0.3, 5, clock.now - 1)])  # older timestamp: not the latest
    assert store.get_latest_metrics(run_id)["acc"].value == 0.2
    assert [m.value for m in store.get_metric_history(run_id, "acc")] == [0.3, 0.1, 0.2]


def test_metric_values_keep_nan_and_infinity(store: MetadataStore) -> None:
    run_id = new_run(store, RunStatus.RUNNING)
    store.log_metrics(
        run_id, [("loss", math.nan, 0, None), ("ratio", math.inf, 0, None), ("neg", -math.inf, 0, None)]
    )
    latest = store.get_latest_metrics(run_id)
    assert (
        math.isnan(latest["loss"].value)
        and latest["ratio"].value == math.inf
        and latest["neg"].value == -math.inf
    )
    assert math.isnan(store.get_metric_history(run_id, "loss")[0].value)


@pytest.mark.parametrize(
    "metric",
    [
        ("", 1.0, 0, None),
        ("k" * 251, 1.0, 0, None),
        ("acc", "high", 0, None),
        ("acc", True, 0, None),
        ("acc", 1.0, 1.5, None),
        ("acc", 1.0, 0, "now"),
        ("acc", 1.0, 0, math.nan),
        ("acc", 1.0),
    ],
)
def test_bad_metrics_are_refused_and_nothing_is_logged(store: MetadataStore, metric: Any) -> None:
    run_id = new_run(store, RunStatus.RUNNING)
    with pytest.raises(InvalidParameterError):
        store.log_metrics(run_id, [("good", 1.0, 0, None), metric])
    assert store.get_metric_histories(run_id) == {}


def test_numpy_numbers_are_accepted(store: MetadataStore) -> None:
    np = pytest.importorskip("numpy")
    run_id = new_run(store, RunStatus.RUNNING)
    store.log_metrics(run_id, [("acc", np.float32(0.5), np.int64(3), None)])
    assert store.get_latest_metrics(run_id)["acc"] == Metric(
        "acc", 0.5, 3, store.get_latest_metrics(run_id)["acc"].timestamp
    )


# --- log lines ------------------------------------------------------------------------------------


def test_log_lines_are_numbered_and_tailable(store: MetadataStore, clock: Any) -> None:
    run_id = new_run(store, RunStatus.RUNNING)
    assert store.log_lines(run_id, ["first", "second\nthird"]) == 3
    assert store.log_lines(run_id, [f"line {i}" for i in range(10)], timestamp=clock.now + 5) == 13
    assert store.log_lines(run_id, []) == 13
    assert store.count_log_lines(run_id) == 13
    everything = store.get_log_lines(run_id)
    assert [line.number for line in everything] == list(range(13))
    assert [line.text for line in everything[:3]] == ["first", "second", "third"]
    assert everything[5].timestamp == clock.now + 5
    assert [line.text for line in store.get_log_lines(run_id, offset=3, limit=2)] == ["line 0", "line 1"]
    assert [line.text for line in store.get_log_lines(run_id, offset=-2)] == ["line 8", "line 9"]
    assert [line.number for line in store.get_log_lines(run_id, offset=-100)] == list(range(13))
    assert store.get_log_lines(run_id, offset=13) == []
    with pytest.raises(InvalidParameterError):
        store.get_log_lines(run_id, limit=-1)


# --- artifact records -----------------------------------------------------------------------------


def test_artifact_records(store: MetadataStore) -> None:
    run_id = new_run(store, RunStatus.FINALIZING)
    assert store.log_artifact(run_id, "outputs/bestModel.onnx", 1234, SHA) == Artifact(
        "outputs/bestModel.onnx", 1234, SHA
    )
    store.log_artifact(run_id, "evaluation.json", 10, "b" * 64)
    store.log_artifact(run_id, "outputs/bestModel.onnx", 99, "c" * 64)  # replaced, not duplicated
    assert store.list_artifacts(run_id) == [
        Artifact("evaluation.json", 10, "b" * 64),
        Artifact("outputs/bestModel.onnx", 99, "c" * 64),
    ]
    bad_records = [
        ("", 1, SHA),
        ("../escape.txt", 1, SHA),
        ("/abs.txt", 1, SHA),
        ("a.txt", -1, SHA),
        ("a.txt", 1, "XYZ"),
        ("a.txt", 1, SHA.upper()),
    ]
    for path, size, sha in bad_records:
        with pytest.raises(InvalidParameterError):
            store.log_artifact(run_id, path, size, sha)
    store.set_run_status(run_id, RunStatus.COMPLETED)
    assert len(store.list_artifacts(run_id)) == 2
