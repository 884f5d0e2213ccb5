"""Ray jobs of runs: unknown jobs, the upload size limit, output digests."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelbuilder.compute.events import digest
from modelbuilder.compute.ray.cluster import RayCluster
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


def test_digest_covers_a_folder_tree(tmp_path: Path) -> None:
    folder = tmp_path / "pkg"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.txt").write_text("a")
    first = digest(folder)
    (folder / "sub" / "a.txt").write_text("b")
    assert digest(folder) != first and len(first) == 64
