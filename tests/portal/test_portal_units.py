"""The portal's pure helpers: SVG charts, run timings, best trial, caches, file kinds, error statuses."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from modelbuilder.entities import Metric, Run, RunStatus
from modelbuilder.errors import ErrorCode, ImageError, NotFoundError
from modelbuilder.portal.charts import ChartSeries, line_chart, trial_charts
from modelbuilder.portal.context import LruCache
from modelbuilder.portal.errors import ERROR_CODE_TO_HTTP_STATUS, PortalHTTPError, status_for
from modelbuilder.portal.results import _classify, check_upload, listed_paths, matching_items
from modelbuilder.portal.views import (
    choose_best_child,
    elapsed_seconds,
    progress_of,
    remaining_seconds,
    time_budget_seconds,
)

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc)


def _run(status: RunStatus = RunStatus.RUNNING, **kwargs: object) -> Run:
    base: dict[str, object] = {"id": "r" * 32, "experiment_id": "e", "experiment": "exp", "status": status}
    base.update(kwargs)
    return Run(**base)  # type: ignore[arg-type]


def _history(values: list[float]) -> list[Metric]:
    return [Metric("val_accuracy", v, step, 0.0) for step, v in enumerate(values, start=1)]


def test_line_chart_draws_series_with_escaped_labels() -> None:
    svg = line_chart(
        [
            ChartSeries("<b>trial</b> (validation)", [(1, 0.5), (2, 0.75), (3, 0.9)], "#123456"),
            ChartSeries("t (training)", [(1, 0.6), (2, float("nan")), (3, 0.95)], "#654321", dashed=True),
        ],
        title="Accuracy & more",
        y_range=(0.0, 1.0),
    )
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "<b>" not in svg and "&lt;b&gt;trial&lt;/b&gt;" in svg and "Accuracy &amp; more" in svg
    assert svg.count("<polyline") == 2 and svg.count("<circle") == 5  # the NaN point is skipped
    assert 'stroke-dasharray="5 4"' in svg
    ys = [float(y) for y in re.findall(r'cy="([\d.]+)"', svg)]
    assert max(ys) <= 250 and min(ys) >= 0


def test_empty_chart_says_so() -> None:
    assert "No epochs reported yet" in line_chart([], title="Loss")
    charts = trial_charts([("trial-1", {})])
    assert set(charts) == {"accuracy", "loss"} and "No epochs reported yet" in charts["loss"]


def test_trial_charts_use_one_colour_per_trial() -> None:
    histories = {
        key: [Metric(key, 0.5 + 0.1 * s, s, 0.0) for s in (1, 2)]
        for key in ("train_accuracy", "val_accuracy", "train_loss", "val_loss")
    }
    charts = trial_charts([("a", histories), ("b", histories)])
    colours = re.findall(r'<polyline[^>]*stroke="(#[0-9a-f]+)"', charts["accuracy"])
    assert len(colours) == 4 and len(set(colours)) == 2


def test_time_budget_from_params() -> None:
    assert time_budget_seconds({"time_budget": 300}) == 300
    assert time_budget_seconds({"time_budget": "5m"}) == 300
    assert time_budget_seconds({"time": "1h"}) == 3600
    assert time_budget_seconds({"time_budget": "soon"}) is None
    assert time_budget_seconds({"time_budget": True}) is None and time_budget_seconds({}) is None


def test_elapsed_and_remaining() -> None:
    now = (T0 + timedelta(seconds=100)).timestamp()
    running = _run(started_at=T0, params={"time_budget": 300})
    assert elapsed_seconds(running, now) == 100 and remaining_seconds(running, now) == 200
    over = _run(started_at=T0, params={"time_budget": 60})
    assert remaining_seconds(over, now) == 0
    by_progress = _run(started_at=T0, latest_metrics={"progress": 0.25})
    assert remaining_seconds(by_progress, now) == pytest.approx(300)
    assert remaining_seconds(_run(started_at=T0), now) is None
    assert remaining_seconds(_run(), now) is None  # not started yet
    done = _run(RunStatus.COMPLETED, started_at=T0, ended_at=T0 + timedelta(seconds=42))
    assert elapsed_seconds(done, now) == 42 and remaining_seconds(done, now) == 0
    assert remaining_seconds(_run(RunStatus.FAILED, started_at=T0), now) is None
    stopping = _run(RunStatus.CANCEL_REQUESTED, started_at=T0, params={"time_budget": 300})
    assert remaining_seconds(stopping, now) is None


def test_progress_of_the_current_phase() -> None:
    assert progress_of(_run(phase="features: images 120/480")) == 0.25
    assert progress_of(_run(phase="features: images 0/0", latest_metrics={"progress": 0.5})) == 0.5
    assert progress_of(_run(phase="trial 2", latest_metrics={"progress": 1.7})) == 1.0
    assert progress_of(_run(phase="trial 2")) is None
    assert progress_of(_run(RunStatus.COMPLETED, phase="export 3/4")) is None  # a finished phase


def test_best_child_choice() -> None:
    parent = _run()
    a = _run(RunStatus.COMPLETED, id="a" * 32, name="trial-1")
    b = _run(RunStatus.COMPLETED, id="b" * 32, name="trial-2")
    c = _run(RunStatus.FAILED, id="c" * 32, name="trial-3")
    histories = {
        a.id: {"val_accuracy": _history([0.5, 0.9, 0.7])},  # best epoch counts, not the last
        b.id: {"val_accuracy": _history([0.8, 0.85])},
        c.id: {"val_accuracy": _history([0.99])},  # failed trials are not kept
    }
    assert choose_best_child(parent, [a, b, c], histories) == a.id
    named = _run(params={"best_trial": "trial-2"})
    assert choose_best_child(named, [a, b, c], histories) == b.id
    latest_only = _run(RunStatus.COMPLETED, id="d" * 32, latest_metrics={"val_accuracy": 0.95})
    assert choose_best_child(parent, [a, latest_only], histories) == latest_only.id
    assert choose_best_child(parent, [], {}) is None


def test_lru_cache_bounds() -> None:
    cache: LruCache[str, bytes] = LruCache(3, max_weight=10, weigh=len)
    for key in "abc":
        cache.put(key, b"xx")
    assert cache.get("a") == b"xx"  # a is now the most recent
    cache.put("d", b"xx")
    assert cache.get("b") is None and len(cache) == 3
    cache.put("big", b"x" * 9)
    assert cache.get("big") is not None and len(cache) == 1
    counted: LruCache[int, str] = LruCache(2)
    for i in range(5):
        counted.put(i, str(i))
    assert [counted.get(i) for i in range(5)] == [None, None, None, "3", "4"]


def test_file_kinds() -> None:
    assert _classify("MLModel.zip")[1:] == ("bundle", "Prediction pipeline (MLModel.zip)")
    assert _classify("Flowers.ConsoleApp.zip")[1] == "code"
    assert _classify("Flowers.Model.zip")[1] == "code"
    assert _classify("sub/Flowers.Model.zip")[1] == "file"
    assert _classify("Flowers.WebApi.zip")[1] == "code"
    assert _classify("logs/run.log")[1] == "log" and _classify("notes.txt") == (8, "file", "notes.txt")


def test_evaluation_lookups_ignore_malformed_entries() -> None:
    evaluation = {
        "validation_items": [
            {"path": "a.png", "true_label": "x", "predicted_label": "y", "score": 0.4},
            {"path": "b.png", "true_label": "x", "predicted_label": "y", "score": 0.9},
            "not a dict",
            {"path": None, "true_label": "x", "predicted_label": "x"},
        ],
        "most_confidently_wrong": [{"path": "c.png"}],
    }
    assert listed_paths(evaluation) == {"a.png", "b.png", "c.png"}
    assert [i["path"] for i in matching_items(evaluation, "x", "y")] == ["b.png", "a.png"]
    assert len(matching_items(evaluation, "x", None)) == 3
    assert listed_paths({"validation_items": "oops"}) == set()


def test_check_upload() -> None:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGBA", (5, 7), (1, 2, 3, 4)).save(buffer, "PNG")
    image, fmt = check_upload(buffer.getvalue())
    assert fmt == "PNG" and image.mode == "RGB" and image.size == (5, 7)
    with pytest.raises(PortalHTTPError) as too_big:
        check_upload(buffer.getvalue(), limit=10)
    assert too_big.value.status_code == 413
    with pytest.raises(PortalHTTPError) as not_image:
        check_upload(b"GIF88a-not-quite")
    assert not_image.value.status_code == 415
    with pytest.raises(ImageError):
        check_upload(buffer.getvalue()[:40])


def test_every_error_code_has_an_http_status() -> None:
    assert set(ERROR_CODE_TO_HTTP_STATUS) == set(ErrorCode)
    assert status_for(NotFoundError("x")) == 404 and status_for(PortalHTTPError(415, "x")) == 415
