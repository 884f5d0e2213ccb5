"""A run's files through ``services.artifacts``, as the CLI, the Python API and the portal list them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelbuilder.errors import ArtifactNotFoundError, InvalidParameterError
from modelbuilder.services import artifacts as service
from modelbuilder.services import workspaces
from modelbuilder.services.workspaces import WorkspaceSession


@pytest.fixture
def session() -> Iterator[WorkspaceSession]:
    with workspaces.open_workspace() as opened:
        yield opened


@pytest.fixture
def run_id(session: WorkspaceSession) -> str:
    experiment = session.store.get_or_create_experiment("flowers")
    return session.store.create_run(experiment.id).id


def test_recorded_files_carry_their_record_and_others_their_size(
    session: WorkspaceSession, run_id: str
) -> None:
    model = session.artifacts.put_bytes(run_id, b"model bytes", "bestModel.onnx")
    session.store.log_artifact(run_id, model.path, model.size, model.sha256)
    log = session.artifacts.put_bytes(run_id, b"line 1\nline 2\n", "logs/run.log")  # written as the run goes
    assert service.list_artifacts(session, run_id) == [model]
    assert service.list_run_files(session, run_id) == [
        service.RunFile("bestModel.onnx", model.size, model.sha256),
        service.RunFile("logs/run.log", log.size, None),
    ]


def test_a_link_out_of_the_run_folder_is_neither_listed_nor_served(
    session: WorkspaceSession, run_id: str, tmp_path: Path
) -> None:
    session.artifacts.put_bytes(run_id, b"{}", "evaluation.json")
    secret = tmp_path / "secret.txt"
    secret.write_text("not a run's file", encoding="utf-8")
    os.symlink(secret, service.artifact_path(session, run_id, "evaluation.json").parent / "leak.txt")
    assert [f.path for f in service.list_run_files(session, run_id)] == ["evaluation.json"]
    with pytest.raises(ArtifactNotFoundError, match="outside the run's folder"):
        service.artifact_path(session, run_id, "leak.txt")
    assert service.find_artifact_path(session, run_id, "leak.txt") is None


def test_unsafe_or_missing_names_are_refused(session: WorkspaceSession, run_id: str) -> None:
    with pytest.raises(InvalidParameterError):
        service.artifact_path(session, run_id, "../other/evaluation.json")
    with pytest.raises(ArtifactNotFoundError, match="has no artifact 'MLModel.zip'"):
        service.artifact_path(session, run_id, "MLModel.zip")
    assert service.find_artifact_path(session, run_id, "../x") is None
    assert service.find_artifact_path(session, run_id, "MLModel.zip") is None
    assert service.list_run_files(session, run_id) == []  # a run without files yet
