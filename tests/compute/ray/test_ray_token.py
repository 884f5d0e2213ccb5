"""A ray compute on a token-mode cluster (``RAY_AUTH_MODE=token``): the compute stores the NAME of the
variable that holds the token (``--token-env``), every later command reads the token from that variable
on the submitting machine, and the token itself is in no store row, file, log or output."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner, Result

from factories import make_image_folder
from fake_trainer import fake_config, use_fake_trainer  # noqa: F401 - a fixture
from modelbuilder.cli import app
from modelbuilder.compute.ray.backend import cluster_of
from modelbuilder.compute.ray.follow import FOLLOW_FILE
from modelbuilder.compute.ray.jobs import job_logs
from modelbuilder.entities import RunStatus
from modelbuilder.errors import InvalidParameterError
from modelbuilder.services import open_workspace, runs, submit_training
from modelbuilder.services.computes import get_compute_spec
from modelbuilder.store.engine import create_store_engine
from ray_head import RayHead

TOKEN_ENV = "MB_TEST_RAY_TOKEN"


@pytest.fixture
def token_head(ray_token_head: tuple[RayHead, str]) -> tuple[RayHead, str]:
    return ray_token_head  # the session's token-mode head (tests/ray_head.py), shared with other tests


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def _store_text(url: str) -> str:
    engine = create_store_engine(url)
    try:
        with engine.connect() as conn:
            tables = sa.inspect(conn).get_table_names()
            return "\n".join(repr(r) for t in tables for r in conn.execute(sa.text(f"SELECT * FROM {t}")))
    finally:
        engine.dispose()


def _files_holding(root: Path, secret: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.mark.usefixtures("use_fake_trainer")
def test_a_token_mode_cluster_is_used_through_the_stored_variable_name_only(
    token_head: tuple[RayHead, str],
    ray_fake_trainer: str,
    isolated_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    head, token = token_head
    caplog.set_level(logging.DEBUG)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)  # only the compute's own variable may be used
    monkeypatch.setenv(TOKEN_ENV, token)
    created = cli(
        "compute", "create", "tok", "--size", "Standard_F2s_v2", "--backend", "ray",
        "--address", head.address, "--token-env", TOKEN_ENV, "--json",
    )  # fmt: skip
    assert created.exit_code == 0, created.stderr
    assert json.loads(created.stdout)["state"] == "Succeeded"  # the fit check got through with the token
    shown = cli("compute", "show", "tok", "--json")
    assert json.loads(shown.stdout)["token_env"] == TOKEN_ENV

    # A run rebuilds the compute's spec from the store: its token comes from the stored variable's name.
    data = make_image_folder(tmp_path / "flowers", classes=2, per_class=3, size=8)
    with open_workspace() as session:
        spec = get_compute_spec(session, "tok")
        assert spec.token_ref == TOKEN_ENV
        submission = submit_training(session, fake_config(data, trials=1, epochs=2), compute="tok")
        *_, last = runs.follow_run(session, submission.run.id, submission.worker, timeout=180)
        assert last.run.status is RunStatus.COMPLETED, last.run.error
        client = cluster_of(spec).job_client()
        logs = job_logs(client, submission.run.id)
        store_url = session.workspace.store_url
    assert logs  # the job ran and logged

    # The token is nowhere: store rows, files of the home (store file, run folders, follower's state and
    # output), the job's log, this process's log records, or any command's output.
    assert token not in _store_text(store_url)
    assert _files_holding(isolated_home, token) == []
    # ... while the scan does cover the run's files: the follower's spec keeps the variable's name.
    assert FOLLOW_FILE in {p.name for p in _files_holding(isolated_home, TOKEN_ENV)}
    assert token not in logs
    assert token not in caplog.text
    for output in (created, shown):
        assert token not in output.stdout + output.stderr

    # Without the variable on the submitting machine, reaching the cluster says which one to set.
    monkeypatch.delenv(TOKEN_ENV)
    with open_workspace() as session, pytest.raises(InvalidParameterError) as info:
        cluster_of(get_compute_spec(session, "tok")).job_client()
    assert f"{TOKEN_ENV}, which is not set" in str(info.value)
    assert f"export {TOKEN_ENV}=" in (info.value.hint or "")
