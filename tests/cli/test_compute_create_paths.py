"""One way to create a compute: the CLI, the Python API and the service build the same ``ComputeSpec``
and store the same compute, address and nodes included."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import ClassVar

import pytest
from cli_runner import Cli

from modelbuilder import Workspace
from modelbuilder.compute import ComputeSpec, Fit, LocalBackend, register_backend
from modelbuilder.compute.backend import unregister_backend
from modelbuilder.entities import Compute
from modelbuilder.errors import InvalidParameterError
from modelbuilder.services import open_workspace
from modelbuilder.services.computes import create_compute, get_compute_spec

ADDRESS = "http://127.0.0.1:8265"


class ClusterBackend(LocalBackend):
    """A backend that reaches its computes at an address and scales (provisioning only, for these tests)."""

    name: ClassVar[str] = "cluster-test"
    max_nodes: ClassVar[int | None] = None
    accepts_local_size: ClassVar[bool] = False
    uses_address: ClassVar[bool] = True

    def check(self, spec: ComputeSpec) -> Fit:
        return Fit.ok()


@pytest.fixture(autouse=True)
def cluster_backend() -> Iterator[None]:
    register_backend(ClusterBackend.name, ClusterBackend)
    yield
    unregister_backend(ClusterBackend.name)


def _essentials(compute: Compute) -> tuple[object, ...]:
    return (
        compute.size,
        compute.backend,
        compute.address,
        compute.min_nodes,
        compute.max_nodes,
        compute.idle_seconds_before_scaledown,
        compute.state,
        compute.error,
    )


def test_cli_python_api_and_service_create_the_same_compute() -> None:
    options = {"backend": ClusterBackend.name, "address": ADDRESS, "min_nodes": 1, "max_nodes": 3}
    with Workspace.get_or_create("default") as ws:
        from_api = ws.create_compute(
            "via-api", size="Standard_NC12", idle_seconds_before_scaledown=60, **options
        )
    created = Cli()(
        "compute", "create", "via-cli", "--size", "standard_nc12", "--backend", ClusterBackend.name,
        "--address", ADDRESS, "--min-nodes", "1", "--max-nodes", "3", "--idle-seconds", "60", "--json",
    )  # fmt: skip
    assert created.exit_code == 0, created.stderr
    from_cli = json.loads(created.stdout)
    with open_workspace() as session:
        spec = ComputeSpec.create(
            "via-svc",
            "Standard_NC12",
            idle_seconds_before_scaledown=60,
            **options,  # type: ignore[arg-type]
        )
        from_service = create_compute(session, spec)
        stored_cli = session.store.get_compute("via-cli")
        assert get_compute_spec(session, "via-api") == ComputeSpec.create(
            "via-api",
            "Standard_NC12",
            idle_seconds_before_scaledown=60,
            **options,  # type: ignore[arg-type]
        )
    assert from_api.address == ADDRESS  # the Python API keeps the address
    assert _essentials(from_api) == _essentials(from_service) == _essentials(stored_cli)
    assert from_cli["name"] == "via-cli" and from_cli["state"] == "Succeeded"


def test_every_path_refuses_the_same_bad_address() -> None:
    bad = "http://user:secret@127.0.0.1:8265"
    with Workspace.get_or_create("default") as ws, pytest.raises(InvalidParameterError, match="credentials"):
        ws.create_compute("c1", size="Standard_NC12", backend=ClusterBackend.name, address=bad)
    refused = Cli()(
        "compute", "create", "c1", "--size", "Standard_NC12", "--backend", ClusterBackend.name,
        "--address", bad,
    )  # fmt: skip
    assert refused.exit_code == 1 and "credentials" in refused.stderr and "secret" not in refused.stderr
    missing = Cli()("compute", "create", "c1", "--size", "Standard_NC12", "--backend", ClusterBackend.name)
    assert missing.exit_code == 1 and "needs an address" in missing.stderr
    with open_workspace() as session:
        assert session.store.find_compute("c1") is None


def test_cli_and_python_api_store_the_token_variable_name_and_show_only_the_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "tok-5d1e-never-shown"
    monkeypatch.setenv("MB_TEST_CLUSTER_TOKEN", secret)
    with Workspace.get_or_create("default") as ws:
        from_api = ws.create_compute(
            "via-api", size="Standard_NC12", backend=ClusterBackend.name, address=ADDRESS,
            token_env="MB_TEST_CLUSTER_TOKEN",
        )  # fmt: skip
    cli = Cli()
    created = cli(
        "compute", "create", "via-cli", "--size", "Standard_NC12", "--backend", ClusterBackend.name,
        "--address", ADDRESS, "--token-env", "MB_TEST_CLUSTER_TOKEN", "--json",
    )  # fmt: skip
    assert created.exit_code == 0, created.stderr
    assert from_api.token_ref == "MB_TEST_CLUSTER_TOKEN"
    shown = cli("compute", "show", "via-cli", "--json")
    assert (
        json.loads(shown.stdout)["token_env"]
        == json.loads(created.stdout)["token_env"]
        == "MB_TEST_CLUSTER_TOKEN"
    )
    text = cli("compute", "show", "via-api")
    assert "MB_TEST_CLUSTER_TOKEN" in text.stdout
    listed = cli("compute", "list", "--json")
    for output in (created, shown, text, listed):
        assert secret not in output.stdout + output.stderr
    with open_workspace() as session:
        assert get_compute_spec(session, "via-cli").token_ref == "MB_TEST_CLUSTER_TOKEN"
        assert get_compute_spec(session, "via-api") == ComputeSpec.create(
            "via-api", "Standard_NC12", backend=ClusterBackend.name, address=ADDRESS,
            token_ref="MB_TEST_CLUSTER_TOKEN",
        )  # fmt: skip
    # The token itself where its variable's name belongs: refused, and not echoed.
    refused = cli(
        "compute", "create", "leaky", "--size", "Standard_NC12", "--backend", ClusterBackend.name,
        "--address", ADDRESS, "--token-env", secret,
    )  # fmt: skip
    assert refused.exit_code == 1 and "not the token itself" in refused.stderr
    assert secret not in refused.stderr and "--token-env RAY_AUTH_TOKEN" in refused.stderr
