"""``modelbuilder compute``: the errored-compute scenario end to end, sizes, show/list/delete, --json."""

from __future__ import annotations

import json
import sys

import pytest
from cli_runner import Cli

from modelbuilder.compute import ComputeSpec, provisioning
from modelbuilder.compute.provisioning import MachineCapacity

LAPTOP = MachineCapacity(cores=2, memory_gib=7.6, gpus=0)


@pytest.fixture(autouse=True)
def laptop(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine, as the local backend's fit check sees it: 2 cores, 7.6 GiB, no GPU."""
    monkeypatch.setattr(provisioning.MachineCapacity, "detect", classmethod(lambda cls: LAPTOP))


def test_errored_compute_scenario_end_to_end(cli: Cli) -> None:
    created = cli("compute", "create", "gpu-1", "--size", "Standard_NC12")
    assert created.exit_code == 1
    reason = "needs 2 GPUs, this machine has 0; needs 12 vCPUs, this machine has 2; needs 112 GiB of memory"
    lines = created.stderr.strip().splitlines()
    assert lines[0].startswith("Error: Compute 'gpu-1' (Standard_NC12) failed to provision: " + reason)
    assert lines[1].startswith("Hint: It is kept in state Failed.") and len(lines) == 2

    shown = json.loads(cli("compute", "show", "gpu-1", "--json").stdout)
    assert (shown["name"], shown["state"], shown["size"]) == ("gpu-1", "Failed", "Standard_NC12")
    assert shown["error"].startswith(reason)
    listed = {c["name"]: c["state"] for c in json.loads(cli("compute", "list", "--json").stdout)}
    assert listed == {"gpu-1": "Failed", "local": "Succeeded"}

    again = cli("compute", "create", "gpu-1", "--size", "Standard_NC12")
    assert again.exit_code == 1
    error, hint = again.stderr.strip().splitlines()
    assert (
        error.startswith("Error: Compute 'gpu-1' already exists") and "in state Failed (needs 2 GPUs" in error
    )
    assert hint.startswith(
        "Hint: Create it with another name, or delete it first: modelbuilder compute delete gpu-1"
    )

    also_taken = cli("compute", "create", "gpu-1", "--size", "Standard_F2s_v2")  # any size: the name is taken
    assert also_taken.exit_code == 1 and "already exists" in also_taken.stderr

    deleted = cli("compute", "delete", "gpu-1")
    assert deleted.exit_code == 0 and "Deleted compute 'gpu-1' (was Failed)" in deleted.stderr
    fitting = cli("compute", "create", "gpu-1", "--size", "Standard_F2s_v2", "--json")
    assert fitting.exit_code == 0
    assert json.loads(fitting.stdout)["state"] == "Succeeded"


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        pytest.param("a", False, id="1-char"),
        pytest.param("ab", True, id="2-chars"),
        pytest.param("c" * 16, True, id="16-chars"),
        pytest.param("c" * 17, False, id="17-chars"),
        pytest.param("cpu_1", False, id="underscore"),
    ],
)
def test_compute_name_rule_at_the_boundaries(cli: Cli, name: str, ok: bool) -> None:
    result = cli("compute", "create", name, "--size", "local")
    assert result.exit_code == (0 if ok else 1)
    if not ok:
        assert result.stderr.startswith(f"Error: The compute name '{name}'")
        assert "Hint: Choose a compute name of 2-16 characters" in result.stderr


def test_sizes_include_the_source_sizes_exactly(cli: Cli) -> None:
    sizes = {s["name"]: s for s in json.loads(cli("compute", "sizes", "--json").stdout)}
    nc12, nc24 = sizes["Standard_NC12"], sizes["Standard_NC24"]
    fields = (
        "vcpus",
        "memory_gib",
        "temp_storage_gib",
        "gpus",
        "gpu_memory_gib",
        "max_data_disks",
        "max_nics",
    )
    assert tuple(nc12[f] for f in fields) == (12, 112, 680, 2, 24, 48, 2)
    assert tuple(nc24[f] for f in fields) == (24, 224, 1440, 4, 48, 64, 4)
    table = cli("compute", "sizes").stdout
    assert "Standard_NC12" in table and "Standard_D2s_v3" in table


def test_compute_errors_have_hints(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    unknown = cli("compute", "create", "cpu-1", "--size", "Standard_NC13")
    assert unknown.exit_code == 1 and "Did you mean 'Standard_NC12'?" in unknown.stderr
    local = cli("compute", "delete", "local")
    assert local.exit_code == 1 and "always exists" in local.stderr
    missing = cli("compute", "show", "nowhere")
    assert (
        missing.exit_code == 1
        and "Hint: Create it with: modelbuilder compute create nowhere" in missing.stderr
    )
    nodes = cli("compute", "create", "cpu-2", "--size", "local", "--max-nodes", "3")
    assert nodes.exit_code == 1 and "at most 1" in nodes.stderr
    monkeypatch.setitem(sys.modules, "ray", None)  # as without the [ray] extra: "import ray" fails
    ray = cli("compute", "create", "ray-1", "--size", "Standard_D2s_v3", "--backend", "ray")
    assert ray.exit_code == 1 and 'pip install "modelbuilder[ray]"' in ray.stderr


def test_a_ray_compute_off_this_machine_over_http_needs_its_own_token_variable(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A RAY_AUTH_TOKEN that merely happens to be set is not the compute's: only --token-env is stored,
    so only it lets a plain http:// address off this machine through."""
    pytest.importorskip("ray")
    secret = "tok-77aa-never-shown"
    monkeypatch.setenv("RAY_AUTH_TOKEN", secret)
    far = ("--size", "Standard_F2s_v2", "--backend", "ray", "--address", "http://10.1.2.3:8265")
    refused = cli("compute", "create", "far", *far)
    assert refused.exit_code == 1
    error, hint = refused.stderr.strip().splitlines()
    assert error.startswith("Error: Compute 'far' would send training code to http://10.1.2.3:8265")
    assert "without a token" in error and "--token-env RAY_AUTH_TOKEN" in hint
    assert secret not in refused.stderr
    assert "far" not in [c["name"] for c in json.loads(cli("compute", "list", "--json").stdout)]
    spec = ComputeSpec.create(
        "far", "Standard_F2s_v2", backend="ray", address="http://10.1.2.3:8265", token_ref="RAY_AUTH_TOKEN"
    )  # with the variable named, the rule lets it through (provisioning would then connect)
    assert spec.token_ref == "RAY_AUTH_TOKEN"
