"""Ray jobs of runs: unknown jobs, the upload size limit, the event line format."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from modelbuilder.compute.ray.cluster import RayCluster
from modelbuilder.compute.ray.events import EventWriter, digest, split_log
from modelbuilder.compute.ray.jobs import (
    UPLOAD_LIMIT_BYTES,
    JobState,
    check_upload_size,
    get_job,
)
from modelbuilder.errors import ComputeError
from ray_head import RayHead


def test_job_of_unknown_run_is_unknown(ray_head: RayHead) -> None:
    client = RayCluster(ray_head.address).job_client()
    info = get_job(client, "never-submitted")
    assert info.state is JobState.UNKNOWN


def test_upload_over_the_limit_is_refused_before_uploading(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.mkdir()
    with open(big / "blob.bin", "wb") as handle:
        handle.truncate(UPLOAD_LIMIT_BYTES + 1)  # sparse: no disk used
    with pytest.raises(ComputeError, match=r"Ray uploads at most 100 MiB") as caught:
        check_upload_size(big, "The training data folder")
    assert "filesystem the cluster nodes can read" in (caught.value.hint or "")


def test_event_lines_round_trip_and_other_lines_are_not_events(tmp_path: Path) -> None:
    stream = io.StringIO()
    writer = EventWriter(stream)
    writer.emit("metric", key="loss", value=float("nan"), step=3, trial="t1")
    writer.emit("log", line="hello")
    text = "Ray's own line\n" + stream.getvalue() + '@mb-event {"v": 1, "seq": 3, "t": 1'  # a partial line
    parsed = list(split_log(text))
    assert [event.kind if event else None for event, _ in parsed] == [None, "metric", "log"]
    metric = parsed[1][0]
    assert (
        metric is not None
        and metric.seq == 1
        and metric.data == {"key": "loss", "value": "nan", "step": 3, "trial": "t1"}
    )
    folder = tmp_path / "pkg"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.txt").write_text("a")
    first = digest(folder)
    (folder / "sub" / "a.txt").write_text("b")
    assert digest(folder) != first and len(first) == 64
