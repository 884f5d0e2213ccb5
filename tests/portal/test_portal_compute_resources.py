"""The compute page and API show a compute's live nodes: this machine for ``local``, the Ray cluster's
alive nodes for a ray compute, and the reason (quickly) when the cluster cannot be reached."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient
from portal_fixtures import WORKSPACE, PortalWorld

from modelbuilder.compute.provisioning import MachineCapacity
from modelbuilder.entities import ProvisioningState
from ray_head import RayHead, free_ports

PAGES = f"/workspaces/{WORKSPACE}"
HTML = {"Accept": "text/html"}


def test_local_compute_shows_this_machine(client: TestClient) -> None:
    capacity = MachineCapacity.detect()
    api = client.get(f"/api{PAGES}/computes/local/resources").json()
    assert api["known"] and api["unreachable"] is None and len(api["nodes"]) == 1
    (node,) = api["nodes"]
    assert (node["cpus"], node["gpus"]) == (capacity.cores, capacity.gpus)
    assert abs(node["memory_gib"] - capacity.memory_gib) < 0.01
    assert 0 < node["memory_available_gib"] <= node["memory_gib"]
    html = client.get(f"{PAGES}/computes/local", headers=HTML).text
    assert f'data-cpus="{capacity.cores}" data-gpus="{capacity.gpus}"' in html
    assert f"{capacity.memory_gib:.1f}" in html
    # The list links to the page.
    assert f'href="{PAGES}/computes/local"' in client.get(f"{PAGES}/computes", headers=HTML).text


def test_ray_compute_shows_the_heads_nodes(client: TestClient, world: PortalWorld, ray_head: RayHead) -> None:
    world.store.create_compute(
        "ray-1", size="Standard_F2s_v2", backend="ray", address=ray_head.address,
        state=ProvisioningState.SUCCEEDED,
    )  # fmt: skip
    api = client.get(f"/api{PAGES}/computes/ray-1/resources").json()
    assert api["unreachable"] is None and api["address"] == ray_head.address
    assert [(n["address"], n["cpus"], n["gpus"]) for n in api["nodes"]] == [("127.0.0.1", 2.0, 0.0)]
    assert api["nodes"][0]["memory_gib"] > 0 and api["nodes"][0]["memory_available_gib"] is None
    html = client.get(f"{PAGES}/computes/ray-1", headers=HTML).text
    assert 'data-address="127.0.0.1" data-cpus="2" data-gpus="0"' in html and ray_head.address in html


def test_unreachable_cluster_shows_the_reason_quickly(client: TestClient, world: PortalWorld) -> None:
    (port,) = free_ports(1)
    address = f"http://127.0.0.1:{port}"
    world.store.create_compute(
        "ray-gone", size="Standard_F2s_v2", backend="ray", address=address, state=ProvisioningState.SUCCEEDED
    )
    started = time.monotonic()
    api = client.get(f"/api{PAGES}/computes/ray-gone/resources").json()
    html = client.get(f"{PAGES}/computes/ray-gone", headers=HTML).text
    assert time.monotonic() - started < 5
    assert api["nodes"] == [] and api["unreachable"].startswith(
        f"The Ray cluster at {address} is not reachable"
    )
    assert "Unreachable:" in html and f"The Ray cluster at {address} is not reachable" in html


def test_unknown_compute_is_404(client: TestClient) -> None:
    assert client.get(f"/api{PAGES}/computes/nope/resources").status_code == 404
    assert client.get(f"{PAGES}/computes/nope", headers=HTML).status_code == 404
