"""The portal's own page steps (a run page checked, a run canceled from its page), reusable by other tests
(e.g. an end-to-end test with a real training run). Starting Chromium and serving the portal for it is
``tests/browser.py``'s (re-exported here for the tests that import it from this module). Typical use::

    with serve_in_background(create_app(ws, port=port), port) as base_url, chromium_page() as page:
        check_run_page(page, base_url, ws, run_id, image=..., labels=..., artifact_sha256=..., ...)

Load this module by path from another test folder (the test folders are not packages), as
``tests/portal/portal_fixtures.py`` loads ``onnx_factory``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    browser_missing,
    chromium_page,
    free_port,
    serve_in_background,
    wait_for,
)

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "portal"
__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "SCREENSHOTS", "browser_missing", "cancel_in_page", "check_run_page",
           "chromium_page", "free_port", "serve_in_background", "status_text", "wait_for"]


def status_text(page: Any) -> str:
    return str(page.inner_text("#run-status")).strip()


def cancel_in_page(
    page: Any, base_url: str, workspace: str, run_id: str, screenshots: Path = SCREENSHOTS
) -> str:
    """Press the Cancel button of an active run (accepting the confirmation) and return the message shown.

    This is the real same-origin request with the page's token: it must be accepted.
    """
    page.goto(f"{base_url}/workspaces/{workspace}/runs/{run_id}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#cancel-button")
    page.wait_for_selector("#action-message.ok")
    wait_for(
        page,
        "document.getElementById('run-status').textContent.trim() === 'CancelRequested'",
        what="the status to become CancelRequested",
    )
    assert page.locator("#cancel-button").is_hidden()
    screenshots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshots / "cancel.png"))
    return str(page.inner_text("#action-message"))


def check_run_page(
    page: Any,
    base_url: str,
    workspace: str,
    run_id: str,
    *,
    image: Path,
    labels: list[str],
    artifact_sha256: str,
    expected_label: str | None = None,
    finish_run: Callable[[], None] | None = None,
    completion_timeout_s: float = 30.0,
    screenshots: Path = SCREENSHOTS,
    prefix: str = "run",
) -> dict[str, Any]:
    """Walk through the run page as a user would, asserting what must be there.

    1. Open the page while the run is active; (``finish_run()`` then completes it, if given).
    2. See the status become Completed without a reload (a marker set on the page survives).
    3. Click a confusion-matrix cell and see thumbnails of its validation images.
    4. Upload ``image`` in "Try the model" and see a label from ``labels`` (``expected_label`` if given).
    5. Download MLModel.zip and compare its sha256 with ``artifact_sha256``.

    Screenshots go to ``screenshots/<prefix>-*.png``. Returns what was seen.
    """
    screenshots.mkdir(parents=True, exist_ok=True)
    page.goto(f"{base_url}/workspaces/{workspace}/runs/{run_id}")
    first_status = status_text(page)
    assert first_status not in ("Completed", "Failed", "Canceled"), f"the run is already {first_status}"
    page.evaluate("window.__portalTestMarker = 'not reloaded'")
    page.screenshot(path=str(screenshots / f"{prefix}-1-active.png"), full_page=True)

    if finish_run is not None:
        finish_run()
    wait_for(
        page,
        "document.getElementById('run-status').textContent.trim() === 'Completed'",
        completion_timeout_s,
        "the status to become Completed",
    )
    assert page.evaluate("window.__portalTestMarker") == "not reloaded", "the page was reloaded"
    page.wait_for_selector("#confusion-matrix", state="visible")
    page.wait_for_selector("#try-zone", state="visible")
    page.screenshot(path=str(screenshots / f"{prefix}-2-completed.png"), full_page=True)

    cell = page.locator(".cm-cell:not([disabled])").first
    cell_true, cell_predicted = cell.get_attribute("data-true"), cell.get_attribute("data-predicted")
    cell_count = int(cell.get_attribute("data-count") or 0)
    cell.click()
    page.wait_for_selector("#cell-thumbs figure img")
    wait_for(
        page,
        "Array.from(document.querySelectorAll('#cell-thumbs img'))"
        ".every(img => img.complete && img.naturalWidth > 0)",
        what="the thumbnails to load",
    )
    thumbnails = page.locator("#cell-thumbs figure").count()
    assert thumbnails == min(cell_count, 60), (thumbnails, cell_count)
    page.locator("#cell-images").scroll_into_view_if_needed()
    page.screenshot(path=str(screenshots / f"{prefix}-3-cell.png"), full_page=True)

    page.set_input_files("#try-file", str(image))
    page.wait_for_selector("#try-label")
    predicted = page.inner_text("#try-label").strip()
    assert predicted in labels, (predicted, labels)
    if expected_label is not None:
        assert predicted == expected_label, (predicted, expected_label)
    page.locator("#try-output").scroll_into_view_if_needed()
    page.screenshot(path=str(screenshots / f"{prefix}-4-try.png"), full_page=True)

    with page.expect_download() as download_info:
        page.click("#downloads a[data-path='MLModel.zip']")
    download = download_info.value
    downloaded = Path(download.path()).read_bytes()
    digest = hashlib.sha256(downloaded).hexdigest()
    assert digest == artifact_sha256, (digest, artifact_sha256)
    return {
        "first_status": first_status,
        "cell": (cell_true, cell_predicted, cell_count),
        "thumbnails": thumbnails,
        "prediction": predicted,
        "download_name": download.suggested_filename,
        "sha256": digest,
    }
