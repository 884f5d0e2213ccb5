"""Browser steps on the portal, reusable by other tests (e.g. an end-to-end test with a real training run).

Headless Debian Chromium (``/usr/bin/chromium``) driven by Playwright for Python; ``playwright install``
is never needed. Typical use::

    with serve_in_background(create_app(ws, port=port), port) as base_url, chromium_page() as page:
        check_run_page(page, base_url, ws, run_id, image=..., labels=..., artifact_sha256=..., ...)

Load this module by path from another test folder (the test folders are not packages), as
``tests/portal/portal_fixtures.py`` loads ``onnx_factory``.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "portal"


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is not installed"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright; never 'playwright install')"
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        return "uvicorn is not installed"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def serve_in_background(app: Any, port: int, timeout_s: float = 15.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1:``port`` in a thread; stop it when the block ends."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name=f"portal-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"The portal did not start on 127.0.0.1:{port}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@contextlib.contextmanager
def chromium_page(width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A Playwright page in headless Chromium that accepts downloads."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(accept_downloads=True, viewport={"width": width, "height": height})
            page = context.new_page()
            page.set_default_timeout(20_000)
            yield page
            context.close()
        finally:
            browser.close()


def wait_for(page: Any, expression: str, timeout_s: float = 20.0, what: str = "") -> None:
    """Poll ``expression`` (JavaScript) until it is truthy. (``page.wait_for_function`` evaluates strings
    inside the page, which the portal's Content-Security-Policy rightly forbids.)"""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out after {timeout_s:g} s waiting for {what or expression}")
        page.wait_for_timeout(100)


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
