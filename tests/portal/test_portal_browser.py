"""The portal in headless Chromium: a run goes live from Running to Completed, its results work end to end.

Marked ``portal``; skipped when /usr/bin/chromium or Playwright is missing. Screenshots are saved under
``test-artifacts/portal/``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_steps import (
    SCREENSHOTS,
    browser_missing,
    cancel_in_page,
    check_run_page,
    chromium_page,
    free_port,
    serve_in_background,
)
from portal_fixtures import LABELS, WORKSPACE, PortalWorld, colour_image

from modelbuilder.entities import ProvisioningState, RunStatus
from modelbuilder.portal import create_app

pytestmark = [
    pytest.mark.portal,
    pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing())),
    pytest.mark.timeout(120),
]


def test_run_page_live_results_try_and_download(world: PortalWorld, tmp_path: Path) -> None:
    run_id = world.start_run(trials=3, epochs=4)
    digests = world.write_results(run_id)  # the worker writes outputs before the run is Completed
    to_cancel = world.start_run("other-experiment", trials=1)
    world.record_live_worker(to_cancel)  # a worker that will act on the cancel: it stays CancelRequested
    world.store.create_compute(
        "gpu-1",
        size="Standard_NC12",
        backend="local",
        state=ProvisioningState.FAILED,
        error="needs 2 GPUs, this machine has 0",
    )
    world.store.create_compute(
        "cpu-1", size="Standard_DS3_v2", backend="local", state=ProvisioningState.SUCCEEDED
    )
    image = tmp_path / "upload.png"
    colour_image("blue", 7, size=64).save(image)
    port = free_port()
    app = create_app(WORKSPACE, host="127.0.0.1", port=port)
    with serve_in_background(app, port) as base_url, chromium_page() as page:
        seen = check_run_page(
            page,
            base_url,
            WORKSPACE,
            run_id,
            image=image,
            labels=LABELS,
            expected_label="blue",
            artifact_sha256=digests["MLModel.zip"],
            finish_run=lambda: world.complete_run(run_id),
        )
        assert seen["first_status"] == "Running"
        assert seen["download_name"] == "MLModel.zip"
        message = cancel_in_page(page, base_url, WORKSPACE, to_cancel)
        assert "Cancellation requested" in message
        assert world.store.get_run(to_cancel).status is RunStatus.CANCEL_REQUESTED
        # The other pages render too (screenshots for a human look).
        for name, path in (
            ("home", "/"),
            ("experiment", "/workspaces/portal-ws/experiments/flowers"),
            ("computes", "/workspaces/portal-ws/computes"),
        ):
            page.goto(base_url + path)
            page.screenshot(path=str(SCREENSHOTS / f"page-{name}.png"), full_page=True)
        assert "modelbuilder compute delete gpu-1" in page.inner_text("#computes-table")
    for name in ("run-1-active", "run-2-completed", "run-3-cell", "run-4-try"):
        assert (SCREENSHOTS / f"{name}.png").stat().st_size > 10_000
