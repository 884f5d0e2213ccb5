"""Headless Chromium for the browser tests: one place that knows how to start it, serve a portal for it and
where its screenshots go, used by every browser test (``tests/portal/test_portal_browser.py``,
``tests/portal/test_wizard_browser.py``, ``tests/e2e/test_portal_real_run.py``; the portal's own page
steps are in ``tests/portal/browser_steps.py``).

Debian's Chromium (``/usr/bin/chromium``) driven by Playwright for Python; ``playwright install`` is never
needed. Typical use::

    pytestmark = [*real_run_marks(timeout_s=600)]

    with serve_in_background(create_app(ws, port=port), port) as base_url, chromium_page() as page:
        page.goto(base_url)
        page.screenshot(path=str(screenshot_folder("wizard") / "1.png"))

Import it as ``import browser`` / ``from browser import ...``: ``tests/`` is on ``sys.path`` (pytest puts the
folder of the root ``conftest.py`` there), as for ``factories``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ROOT = Path(__file__).resolve().parents[1]
#: What a test with a real training run needs besides the browser.
REAL_RUN_MODULES = ("torch", "fastapi", "onnxruntime")


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


def real_run_missing() -> str | None:
    """Why a browser test over a real training run cannot run here (no browser, or no training or portal
    extra), or None when it can."""
    reason = browser_missing()
    if reason is not None:
        return reason
    for name in REAL_RUN_MODULES:
        if importlib.util.find_spec(name) is None:
            return f"{name} is not installed (pip install 'modelbuilder[train,portal]')"
    return None


def real_run_marks(timeout_s: float) -> list[pytest.MarkDecorator]:
    """The marks of a browser test over a real training run: ``portal``, ``slow``, skipped with the reason
    when something is missing, and a timeout."""
    reason = real_run_missing()
    return [pytest.mark.portal, pytest.mark.slow, pytest.mark.skipif(reason is not None, reason=str(reason)),
            pytest.mark.timeout(timeout_s)]


def screenshot_folder(name: str) -> Path:
    """``$MODELBUILDER_TEST_ARTIFACTS/<name>`` (default ``test-artifacts/<name>``, gitignored), created."""
    base = Path(os.environ.get("MODELBUILDER_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    folder = base / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


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
