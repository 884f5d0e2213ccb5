"""The Ray head of the test session: one local head (2 CPUs, 0 GPUs, loopback only), started on first use.

Without the ``[ray]`` extra, or when the head cannot start, the Ray tests are skipped with the reason
shown (``-ra``); in CI (``CI=true``) that is a failure, never a silent skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from ray_head import RayHead, RayHeadError, start_ray_head


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
    try:
        head = start_ray_head(num_cpus=2, num_gpus=0)
    except RayHeadError as exc:
        _unavailable(f"The local Ray head could not start, so the Ray backend tests cannot run: {exc}")
        raise  # not reached: _unavailable always raises
    try:
        yield head
    finally:
        head.stop()
