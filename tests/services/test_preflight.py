"""Bad input is refused before a run exists, with the message and hint the run itself would report.

Each case goes through ``submit_training`` (and the Python API's ``Experiment.submit``): the typed error is
raised, and no run row (nor experiment) is created. The data cases compare the message with what the run's
own scan (``scan_dataset``) reports for the same input.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from factories import make_image_folder
from fake_trainer import fake_config
from modelbuilder import Workspace
from modelbuilder.data import scan_dataset
from modelbuilder.entities import RunStatus
from modelbuilder.errors import BackboneNotFoundError, DatasetError, InvalidParameterError, ModelBuilderError
from modelbuilder.services import runs, submit_training
from modelbuilder.services.preflight import check_submission
from modelbuilder.services.training_run import resume_training
from modelbuilder.services.workspaces import WorkspaceSession
from modelbuilder.training.config import TrainingConfig

pytestmark = pytest.mark.usefixtures("use_fake_trainer")


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "no-such-folder"


def _empty(tmp_path: Path) -> Path:
    (tmp_path / "empty" / ".hidden").mkdir(parents=True)
    return tmp_path / "empty"


def _one_label(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "cats-only", classes=1, per_class=3, size=8)


def _unreadable_csv(tmp_path: Path) -> Path:
    table = tmp_path / "labels.csv"
    table.write_bytes(b"ImagePath,Label\n\xff\xfe broken,cat\n")
    return table


def _csv_without_label_column(tmp_path: Path) -> Path:
    table = tmp_path / "paths.csv"
    table.write_text("ImagePath,Class\na.png,cat\n", encoding="utf-8")
    return table


DATA_CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing folder": (_missing, "does not exist"),
    "empty folder": (_empty, "is empty"),
    "one label": (_one_label, "has only one label, 'label0'"),
    "unreadable CSV": (_unreadable_csv, "cannot be read as UTF-8 text"),
    "CSV without a Label column": (_csv_without_label_column, "has no Label column"),
}


def _assert_nothing_created(session: WorkspaceSession) -> None:
    assert session.store.count_runs() == 0
    assert session.store.list_experiments() == []


@pytest.mark.parametrize("case", DATA_CASES)
def test_bad_data_is_refused_before_a_run_with_the_runs_own_message(
    case: str, session: WorkspaceSession, tmp_path: Path
) -> None:
    build, expected = DATA_CASES[case]
    source = build(tmp_path)
    with pytest.raises(DatasetError, match=expected) as refused:
        submit_training(session, fake_config(source))
    _assert_nothing_created(session)
    assert refused.value.hint
    with pytest.raises(DatasetError) as in_run:
        scan_dataset(str(source.resolve()))
    if case == "one label":  # the run counts usable images; before the run no image is opened
        assert in_run.value.message.startswith(refused.value.message.split(";")[0])
    else:
        assert in_run.value.message == refused.value.message
    assert in_run.value.hint == refused.value.hint


def test_validation_labels_that_differ_are_refused_before_a_run(
    session: WorkspaceSession, data: Path, tmp_path: Path
) -> None:
    validation = make_image_folder(tmp_path / "validation", classes=3, per_class=2, size=8)
    (validation / "label1").rename(validation / "dogs")
    config = TrainingConfig(data=str(data), time_budget=10, validation_data=str(validation))
    with pytest.raises(DatasetError, match="does not match the training labels") as refused:
        submit_training(session, config)
    _assert_nothing_created(session)
    with pytest.raises(DatasetError) as in_run:
        scan_dataset(validation, require_labels=["label0", "label1"])
    assert (refused.value.message, refused.value.hint) == (in_run.value.message, in_run.value.hint)
    missing = TrainingConfig(data=str(data), time_budget=10, validation_data=str(tmp_path / "nope"))
    with pytest.raises(DatasetError, match="The validation data .* does not exist"):
        submit_training(session, missing)
    _assert_nothing_created(session)


def test_an_unknown_architecture_is_refused_before_a_run(session: WorkspaceSession, data: Path) -> None:
    config = TrainingConfig(data=str(data), time_budget=10, architecture="resnet5")
    with pytest.raises(BackboneNotFoundError, match="Backbone 'resnet5' is not registered") as refused:
        submit_training(session, config)
    assert "--architecture auto" in (refused.value.hint or "")
    _assert_nothing_created(session)


def test_an_unknown_strategy_is_refused_before_a_run(session: WorkspaceSession, data: Path) -> None:
    with pytest.raises(InvalidParameterError, match="'strategies'") as refused:
        TrainingConfig(data=str(data), time_budget=10, strategies=("linear", "bagging"))
    assert "'bagging'" in refused.value.message and refused.value.hint
    # A stored config (a resume) is checked again before its run is created.
    from modelbuilder.training import registry

    config = TrainingConfig(data=str(data), time_budget=10, strategies=("linear", "scratch_cnn"))
    registry.unregister_trial("scratch_cnn")
    try:
        with pytest.raises(InvalidParameterError, match="'scratch_cnn'"):
            submit_training(session, config)
    finally:
        registry.register_trial("modelbuilder.training.trials.scratch:ScratchCNNTrial", name="scratch_cnn",
                                before="ensemble")
    _assert_nothing_created(session)


def test_the_python_api_raises_the_typed_error_and_creates_no_run(tmp_path: Path) -> None:
    with Workspace.create("check-ws") as ws:
        experiment = ws.experiment("checks")
        with pytest.raises(DatasetError, match="has only one label"):
            experiment.submit(fake_config(_one_label(tmp_path)))
        with pytest.raises(BackboneNotFoundError):
            experiment.submit(TrainingConfig(data=str(_one_label(tmp_path)), architecture="vgg99"))
        assert ws.list_runs() == []


def test_a_resume_on_data_that_is_gone_is_refused_before_a_new_run(
    session: WorkspaceSession, tmp_path: Path
) -> None:
    data = make_image_folder(tmp_path / "flowers", classes=2, per_class=3, size=8)
    first = submit_training(session, fake_config(data, trials=2, fail="crash"))
    *_, last = runs.follow_run(session, first.run.id, first.worker, timeout=60)
    assert last.run.status is RunStatus.FAILED
    shutil.rmtree(data)
    before = session.store.count_runs()  # the run and its trials
    with pytest.raises(DatasetError, match="does not exist"):
        resume_training(session, first.run.id)
    assert session.store.count_runs() == before


def test_data_a_remote_compute_reads_is_checked_there(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cluster_path = "/mnt/cluster-only/images"
    config = TrainingConfig(data=cluster_path, time_budget=10, validation_data="/mnt/cluster-only/val")
    with caplog.at_level(logging.WARNING, logger="modelbuilder.services.preflight"):
        checked = check_submission(config, experiment="remote", compute="gpu-ray", backend="ray")
    assert not checked.data_visible
    assert checked.deferred is not None and "deferred to the run on compute 'gpu-ray'" in checked.deferred
    assert [record.getMessage() for record in caplog.records] == [checked.deferred]
    # What this machine does see is still checked, and a local compute never defers.
    one_label = _one_label(tmp_path)
    with pytest.raises(DatasetError, match="only one label"):
        check_submission(TrainingConfig(data=str(one_label)), experiment="remote", backend="ray")
    with pytest.raises(DatasetError, match="does not exist"):
        check_submission(TrainingConfig(data=cluster_path), experiment="remote", backend="local")
    # The names and the architecture need no data, so they are checked even when the data is deferred.
    with pytest.raises(ModelBuilderError, match="not registered"):
        check_submission(
            TrainingConfig(data=cluster_path, architecture="nope"), experiment="remote", backend="ray"
        )


def test_the_checks_import_no_torch(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from modelbuilder.services.preflight import check_submission\n"
        "from modelbuilder.training.config import TrainingConfig\n"
        "from modelbuilder.errors import DatasetError\n"
        f"try:\n    check_submission(TrainingConfig(data={str(tmp_path / 'x')!r}), experiment='abc')\n"
        "except DatasetError:\n    pass\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
