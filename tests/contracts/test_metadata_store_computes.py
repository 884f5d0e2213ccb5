"""The MetadataStore contract, part 3: computes (the errored-compute rule) and the schema version."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from modelbuilder.entities import ProvisioningState
from modelbuilder.errors import (
    ComputeExistsError,
    ComputeNotFoundError,
    InvalidNameError,
    InvalidParameterError,
    InvalidStateError,
    SchemaVersionError,
)
from modelbuilder.store import (
    COMPUTE_TRANSITIONS,
    STORE_SCHEMA,
    MetadataStore,
    SqlAlchemyStore,
    sqlite_file_url,
)

P = ProvisioningState


def test_compute_lifecycle(store: MetadataStore) -> None:
    created = store.create_compute(
        "gpu-1",
        size="Standard_NC12",
        backend="local",
        min_nodes=0,
        max_nodes=1,
        idle_seconds_before_scaledown=600,
    )
    assert (created.state, created.size, created.backend, created.workspace) == (
        P.CREATING,
        "Standard_NC12",
        "local",
        store.workspace,
    )
    assert created.idle_seconds_before_scaledown == 600 and created.error is None and created.created_at
    assert store.get_compute("gpu-1") == created == store.find_compute("gpu-1")
    failed = store.set_compute_state("gpu-1", P.FAILED, error="needs 2 GPUs, this machine has 0")
    assert failed.state is P.FAILED and failed.error == "needs 2 GPUs, this machine has 0"
    store.create_compute("cpu", size="Standard_D2s_v3", backend="local", state=P.SUCCEEDED)
    assert [c.name for c in store.list_computes()] == ["cpu", "gpu-1"]
    assert store.delete_compute("gpu-1") == failed
    assert store.find_compute("gpu-1") is None
    with pytest.raises(ComputeNotFoundError) as info:
        store.get_compute("gpu-1")
    assert "modelbuilder compute create gpu-1" in (info.value.hint or "")
    with pytest.raises(ComputeNotFoundError):
        store.delete_compute("gpu-1")
    with pytest.raises(ComputeNotFoundError):
        store.set_compute_state("gpu-1", P.DELETING)


@pytest.mark.parametrize("state", list(ProvisioningState))
def test_a_name_is_taken_in_every_state(store: MetadataStore, state: ProvisioningState) -> None:
    error = "needs 2 GPUs, this machine has 0" if state is P.FAILED else None
    store.create_compute("gpu-1", size="Standard_NC12", backend="local", state=state, error=error)
    with pytest.raises(ComputeExistsError) as info:
        store.create_compute("gpu-1", size="Standard_D2s_v3", backend="local")
    message, hint = str(info.value), info.value.hint or ""
    assert f"state {state.value}" in message and "gpu-1" in message
    if error:
        assert error in message
    assert "another name" in hint and "modelbuilder compute delete gpu-1" in hint
    assert store.get_compute("gpu-1").size == "Standard_NC12"


def test_compute_transitions_follow_the_table(store: MetadataStore) -> None:
    for index, (current, new) in enumerate((c, n) for c in P for n in P):
        name = f"c{index}"
        store.create_compute(name, size="local", backend="local", state=current, error="old")
        if new in COMPUTE_TRANSITIONS[current]:
            changed = store.set_compute_state(name, new, error="why" if new is P.FAILED else None)
            assert changed.state is new and changed.error == ("why" if new is P.FAILED else None)
        else:
            with pytest.raises(InvalidStateError):
                store.set_compute_state(name, new)
            assert store.get_compute(name).state is current


def test_a_compute_keeps_the_name_of_its_token_variable(store: MetadataStore) -> None:
    created = store.create_compute(
        "ray-t", size="Standard_F2s_v2", backend="ray", address="http://10.0.0.5:8265", token_ref="MB_TOKEN_1"
    )
    assert created.token_ref == "MB_TOKEN_1"
    assert store.get_compute("ray-t").token_ref == "MB_TOKEN_1"
    failed = store.set_compute_state("ray-t", P.FAILED, error="not reachable")
    assert failed.token_ref == "MB_TOKEN_1"  # a state change keeps it
    assert [c.token_ref for c in store.list_computes()] == ["MB_TOKEN_1"]
    assert store.create_compute("plain", size="local", backend="local").token_ref is None
    longest = "T" * 64  # the column's size
    assert store.create_compute("long", size="local", backend="local", token_ref=longest).token_ref == longest


@pytest.mark.parametrize(
    "token_ref",
    ["s3cr3t-t0ken-value", "eyJhbGciOi.J9.x", "1STARTS_WITH_DIGIT", "T" * 65, "", "A B"],
)
def test_a_token_reference_must_be_a_variable_name_and_is_never_echoed(
    store: MetadataStore, token_ref: str
) -> None:
    """Whatever is refused may be the token itself: the error names the rule, never the value."""
    with pytest.raises(InvalidParameterError, match="environment variable") as info:
        store.create_compute("ray-t", size="local", backend="ray", token_ref=token_ref)
    if token_ref:
        assert token_ref not in str(info.value) and token_ref not in (info.value.hint or "")
    assert store.list_computes() == []


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"name": "x"}, InvalidNameError),
        ({"name": "a" * 17}, InvalidNameError),
        ({"name": "gpu_1"}, InvalidNameError),
        ({"min_nodes": -1}, InvalidParameterError),
        ({"max_nodes": 0}, InvalidParameterError),
        ({"min_nodes": 3, "max_nodes": 2}, InvalidParameterError),
        ({"idle_seconds_before_scaledown": -5}, InvalidParameterError),
        ({"size": ""}, InvalidParameterError),
        ({"backend": ""}, InvalidParameterError),
        ({"backend": "b" * 33}, InvalidParameterError),
        ({"address": "ray://" + "a" * 500}, InvalidParameterError),
    ],
)
def test_compute_input_is_checked(
    store: MetadataStore, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    arguments: dict[str, Any] = {"name": "ok", "size": "local", "backend": "local", **kwargs}
    with pytest.raises(error):
        store.create_compute(arguments.pop("name"), **arguments)
    assert store.list_computes() == []


# --- schema version (file stores: the only ones that can be reopened) ------------------------------


def _db(tmp_path: Path) -> Path:
    return tmp_path / "versioned" / "workspace.db"


def test_reopening_keeps_data_and_version(tmp_path: Path) -> None:
    url = sqlite_file_url(_db(tmp_path))
    with SqlAlchemyStore(url) as first:
        run = first.create_run(first.get_or_create_experiment("kept").id, params={"a": 1})
        assert first.schema_version == STORE_SCHEMA.head
    with SqlAlchemyStore(url) as again:
        assert again.get_run(run.id).params == {"a": 1}
        assert again.schema_version == STORE_SCHEMA.head


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    url = sqlite_file_url(_db(tmp_path))
    SqlAlchemyStore(url).close()
    with sqlite3.connect(_db(tmp_path)) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099'")
    conn.close()
    with pytest.raises(SchemaVersionError) as info:
        SqlAlchemyStore(url, workspace="ws9")
    assert "0099" in str(info.value) and "ws9" in str(info.value)
    assert "Upgrade modelbuilder" in (info.value.hint or "")


def test_a_foreign_database_is_refused(tmp_path: Path) -> None:
    path = _db(tmp_path)
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    conn.close()
    with pytest.raises(SchemaVersionError, match="customers"):
        SqlAlchemyStore(sqlite_file_url(path))
