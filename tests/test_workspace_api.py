"""The Python API (Workspace, Experiment, Run, train) over the whole flow, with the fake trainer."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from factories import make_image_folder
from fake_trainer import OPTIONS_ENV, fake_config, use_fake_trainer  # noqa: F401 - a fixture
from modelbuilder.compute import provisioning
from modelbuilder.compute.provisioning import MachineCapacity
from modelbuilder.entities import ProvisioningState
from modelbuilder.errors import (
    AlreadyExistsError,
    ComputeError,
    DatasetError,
    InvalidStateError,
    WorkspaceNotFoundError,
)
from modelbuilder.workspace import Run, TrainingRunResult, Workspace, train

pytestmark = pytest.mark.usefixtures("use_fake_trainer")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "flowers", classes=2, per_class=3, size=8)


@pytest.fixture
def ws() -> Iterator[Workspace]:
    with Workspace.create("api-ws", resource_group="rg-api", region="local") as created:
        yield created


def test_workspaces_are_created_found_and_listed() -> None:
    created = Workspace.create("api-one", resource_group="rg-a")
    assert (created.name, created.resource_group, created.region) == ("api-one", "rg-a", "local")
    assert Workspace.get("api-one").store_url == created.store_url
    assert Workspace.get_or_create("api-one").artifact_root == created.artifact_root
    with pytest.raises(AlreadyExistsError):
        Workspace.create("api-one")
    with pytest.raises(WorkspaceNotFoundError):
        Workspace.get("api-two")
    assert Workspace.get().name == "default"  # created on first use
    assert [w.name for w in Workspace.list_all()] == ["api-one", "default"]
    assert repr(created) == "Workspace(name='api-one', resource_group='rg-a', region='local')"
    created.delete()
    assert [w.name for w in Workspace.list_all()] == ["default"]


def test_computes_through_the_api(ws: Workspace, monkeypatch: pytest.MonkeyPatch, data: Path) -> None:
    laptop = MachineCapacity(cores=2, memory_gib=7.6, gpus=0)
    monkeypatch.setattr(provisioning.MachineCapacity, "detect", classmethod(lambda cls: laptop))
    failed = ws.create_compute("gpu-1", size="Standard_NC12")
    assert failed.state is ProvisioningState.FAILED and "needs 2 GPUs" in (failed.error or "")
    assert set(ws.computes) == {"gpu-1", "local"}
    with pytest.raises(ComputeError, match="state Failed"):
        ws.experiment("flowers").submit(fake_config(data), compute="gpu-1")
    ws.delete_compute("gpu-1")
    assert ws.create_compute("gpu-1", size="Standard_F2s_v2").state is ProvisioningState.SUCCEEDED
    assert ws.get_compute("local").size == "local"


def test_submit_wait_inspect_and_download(
    ws: Workspace, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    experiment = ws.experiment("flowers-api")
    run = experiment.submit(fake_config(data, trials=2), compute="local")
    assert run.get_status() in ("Queued", "Preparing", "Running")
    details = run.wait_for_completion(show_output=True)
    printed = capsys.readouterr().out
    assert f"Run {run.id[:12]}: Completed" in printed and "[scanning]" in printed
    assert run.get_status() == "Completed" and details["status"] == "Completed"
    # No portal runs for this home, and the link is never a guess (tests/portal/test_portal_identity.py
    # follows real links): without starting one, get_portal_url says how to start one.
    with pytest.raises(InvalidStateError, match="No portal is running") as no_portal:
        run.get_portal_url(start=False)
    assert "modelbuilder portal --workspace api-ws" in (no_portal.value.hint or "")
    assert run.get_metrics()["accuracy"] == pytest.approx(0.9)
    assert [c.entity.name for c in run.get_children()] == ["trial-0", "trial-1"]
    assert [m.step for m in run.get_children()[0].get_metric_history("val_accuracy")] == [0, 1, 2, 2]
    assert {"bestModel.onnx", "MLModel.zip", "logs/run.log"} <= {a["path"] for a in details["artifacts"]}
    assert run.get_logs(tail=1)[0].startswith("Run Completed")
    outputs = run.download_outputs(tmp_path / "out")
    assert (outputs["flowers.Model"] / "pyproject.toml").is_file()
    result = run.get_result(tmp_path / "out")
    assert result is not None and result.files["MLModel.zip"] == tmp_path / "out" / "MLModel.zip"
    assert [r.id for r in experiment.get_runs()] == [run.id]
    assert ws.get_run(run.id[:8]).id == run.id
    assert set(ws.experiments) == {"flowers-api"}
    with pytest.raises(InvalidStateError):
        run.cancel()


def test_a_failed_run_raises_the_error_of_its_worker(ws: Workspace, data: Path) -> None:
    run = ws.experiment("broken").submit(fake_config(data, trials=2, fail="dataset"))
    with pytest.raises(DatasetError, match="has only 1 image") as info:
        run.wait_for_completion()  # a DatasetError in the worker process is a DatasetError here
    assert type(info.value) is DatasetError and info.value.hint == "Add images."
    assert run.wait_for_completion(raise_on_error=False)["status"] == "Failed"


def test_cancel_ends_the_run_canceled_within_seconds(ws: Workspace, data: Path) -> None:
    run = ws.experiment("long").submit(fake_config(data, trials=3, epochs=2000, epoch_seconds=0.02))
    deadline = time.monotonic() + 60
    while not run.get_children():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert run.cancel() == "CancelRequested"
    requested = time.monotonic()
    assert run.wait_for_completion()["status"] == "Canceled"
    assert time.monotonic() - requested < 10
    result = run.get_result()
    assert result is not None and result.canceled


def test_wait_with_a_timeout_returns_while_the_run_goes_on(ws: Workspace, data: Path) -> None:
    run = ws.experiment("long").submit(fake_config(data, trials=3, epochs=2000, epoch_seconds=0.02))
    assert run.wait_for_completion(timeout=0.5)["status"] in ("Queued", "Preparing", "Running")
    assert run.kill() == "Canceled"
    assert Run(ws, run.id).get_status() == "Canceled"


def test_train_returns_the_result_with_output_paths(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OPTIONS_ENV, json.dumps({"trials": 2}))
    result = train(data, output=tmp_path / "out", time="30s", experiment="quick")
    assert isinstance(result, TrainingRunResult)
    assert result.accuracy == pytest.approx(0.9)
    assert result.algorithm == "fake_net + fake" and not result.canceled
    assert result.model_path == tmp_path / "out" / "MLModel.zip" and result.model_path.is_file()
    assert (result.files["flowers.ConsoleApp"] / "main.py").is_file()
    assert (result.workspace, result.experiment) == ("default", "quick")
    assert result.portal_url == ""  # train() starts no portal, and none runs for this home
    default_place = train(data, time="30s")
    assert (
        default_place.output_dir
        == Path(Workspace.get().artifact_root).parent / "outputs" / default_place.run_id
    )
    assert default_place.model_path.is_file()
