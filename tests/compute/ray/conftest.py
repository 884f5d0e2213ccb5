"""The Ray head of the test session: one local head (2 CPUs, 0 GPUs, loopback only), started on first use.

Without the ``[ray]`` extra, or when the head cannot start, the Ray tests are skipped with the reason
shown (``-ra``); in CI (``CI=true``) that is a failure, never a silent skip.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from fake_trainer import TARGET, TESTS_DIR
from modelbuilder.compute.ray.jobs import EXTRA_MODULES_ENV
from ray_head import RayHead, RayHeadError, start_ray_head

#: A JSON file describing a running head to reuse instead of starting one (local development only).
REUSE_ENV = "MB_TEST_RAY_HEAD"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(message: str) -> None:
    if _in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(f"*** {message} ***")


@pytest.fixture(scope="session")
def ray_head() -> Iterator[RayHead]:
    try:
        import ray  # noqa: F401
    except ImportError:
        _unavailable('Ray is not installed, so the Ray backend tests cannot run: pip install -e ".[ray]"')
    reuse = os.environ.get(REUSE_ENV)
    if reuse:  # a developer's head, kept between test sessions: {"address", "gcs", "pid", "temp_dir", "log"}
        info = json.loads(Path(reuse).read_text())
        yield RayHead(info["address"], info["gcs"], info["pid"], Path(info["temp_dir"]), Path(info["log"]))
        return
    try:
        head = start_ray_head(num_cpus=2, num_gpus=0)
    except RayHeadError as exc:
        _unavailable(f"The local Ray head could not start, so the Ray backend tests cannot run: {exc}")
        raise  # not reached: _unavailable always raises
    try:
        yield head
    finally:
        head.stop()


@pytest.fixture
def ray_fake_trainer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Ray jobs can import the fake trainer: shipped as a package folder with every job (py_modules)."""
    package = tmp_path / "shipped" / "fake_trainer"
    package.mkdir(parents=True)
    shutil.copy(TESTS_DIR / "fake_trainer.py", package / "__init__.py")
    monkeypatch.setenv(EXTRA_MODULES_ENV, str(package))
    return TARGET
