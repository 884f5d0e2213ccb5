"""The portal over a REAL training run, in headless Chromium (issue 4's end-to-end "Done when").

A ``test_tiny`` run trains for real in a local worker process while its run page is open: the page sees
the status go from Running to Completed without a reload, a confusion-matrix cell shows its validation
thumbnails, "Try the model" predicts an uploaded image with a label of the label map (the label the
shipped MLModel.zip predicts), and the downloaded MLModel.zip has the sha256 recorded for the artifact.

Marked ``portal`` and ``slow``; skipped when /usr/bin/chromium, Playwright, uvicorn or torch is missing.
Screenshots are saved under ``test-artifacts/e2e/`` (gitignored).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import browser
from factories import load_test_module, make_image_folder

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = browser.screenshot_folder("e2e")
WORKSPACE = "e2e-portal-ws"
LABELS = ["label0", "label1", "label2"]
#: Long enough that the page is open while the worker trains, even on a slow shared machine.
TIME_BUDGET_S = 20.0
STARTING = ("NotStarted", "Queued", "Preparing")


steps: ModuleType = load_test_module("portal/browser_steps.py", "e2e_browser_steps")  # check_run_page

pytestmark = browser.real_run_marks(timeout_s=180)


class RecordedDigest:
    """The sha256 the store records for one artifact of a run, read when compared (after completion:
    ``check_run_page`` takes the digest up front, but a real run records it only at its end)."""

    def __init__(self, run: Any, path: str) -> None:
        self.run = run
        self.path = path

    def value(self) -> str:
        recorded = {a["path"]: a["sha256"] for a in self.run.get_details()["artifacts"]}
        assert self.path in recorded, f"{self.path} is not among the run's artifacts: {sorted(recorded)}"
        return str(recorded[self.path])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other == self.value()

    def __hash__(self) -> int:
        return hash(self.path)

    def __repr__(self) -> str:
        return f"RecordedDigest({self.path!r})"


def _wait_while_starting(run: Any, timeout_s: float) -> str:
    """Poll the run until it leaves its starting states (or ``timeout_s`` passes); return its status."""
    deadline = time.monotonic() + timeout_s
    status = str(run.get_status())
    while status in STARTING and time.monotonic() < deadline:
        time.sleep(0.2)
        status = str(run.get_status())
    return status


def test_real_run_live_in_the_portal(tmp_path: Path) -> None:
    from modelbuilder.pipeline import load_model
    from modelbuilder.portal import create_app
    from modelbuilder.training.config import TrainingConfig
    from modelbuilder.workspace import Workspace

    started = time.monotonic()
    data = make_image_folder(tmp_path / "shapes", classes=3, per_class=12, size=32)
    image = data / "label1" / "label1_5.png"
    config = TrainingConfig(
        data=str(data), architecture="test_tiny", time_budget=TIME_BUDGET_S, name="Shapes"
    )
    with Workspace.get_or_create(WORKSPACE) as ws:
        run = ws.experiment("shapes").submit(config, compute="local")
        try:
            # Open the page only once training runs: the browser itself must see Running become Completed.
            reached = _wait_while_starting(run, timeout_s=60)
            assert reached == "Running", f"the run was {reached} before the page was opened"
            port = browser.free_port()
            app = create_app(WORKSPACE, host="127.0.0.1", port=port)
            with browser.serve_in_background(app, port) as base_url, browser.chromium_page() as page:
                seen = steps.check_run_page(
                    page,
                    base_url,
                    WORKSPACE,
                    run.id,
                    image=image,
                    labels=LABELS,
                    artifact_sha256=RecordedDigest(run, "MLModel.zip"),
                    # Supervise the real worker meanwhile (a failed run raises its error at once);
                    # the open page must then show Completed by itself.
                    finish_run=lambda: run.wait_for_completion(timeout=TIME_BUDGET_S + 60),
                    completion_timeout_s=20,
                    screenshots=SCREENSHOTS,
                    prefix="real-run",
                )
        finally:
            if run.get_status() not in ("Completed", "Failed", "Canceled"):
                run.kill()
        assert run.get_status() == "Completed"
        folder = ws.artifact_root / run.id
        recorded = RecordedDigest(run, "MLModel.zip").value()

    assert seen["first_status"] == "Running"
    assert seen["download_name"] == "MLModel.zip"
    assert seen["cell"][2] >= 1 and seen["thumbnails"] >= 1
    assert sorted(json.loads((folder / "bestModelMap.json").read_text())) == LABELS
    assert seen["sha256"] == recorded == hashlib.sha256((folder / "MLModel.zip").read_bytes()).hexdigest()
    # The page predicts what the shipped pipeline predicts for the uploaded image.
    assert seen["prediction"] == load_model(folder / "MLModel.zip").predict(image).prediction
    for name in ("real-run-1-active", "real-run-2-completed", "real-run-3-cell", "real-run-4-try"):
        assert (SCREENSHOTS / f"{name}.png").stat().st_size > 10_000, name
    assert time.monotonic() - started < 150
