"""The test head itself: it answers, and every port of it listens on loopback only."""

from __future__ import annotations

import json
import urllib.request

from ray_head import RayHead, listening_sockets

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def test_head_listens_on_loopback_only(ray_head: RayHead) -> None:
    sockets = listening_sockets(ray_head.session_pids())
    # The GCS, raylet, dashboard, client server and agents: a handful of listeners, all found by pid.
    assert len(sockets) >= 5, sockets
    assert any(port == int(ray_head.gcs_address.rsplit(":", 1)[1]) for _, port, _ in sockets)
    exposed = [entry for entry in sockets if entry[0] not in LOOPBACK]
    assert exposed == [], f"Ray head listens beyond loopback: {exposed}"


def test_head_has_two_cpus_and_no_gpus(ray_head: RayHead) -> None:
    with urllib.request.urlopen(f"{ray_head.address}/api/v0/nodes?detail=1", timeout=10) as response:
        nodes = json.loads(response.read())["data"]["result"]["result"]
    assert len(nodes) == 1
    resources = nodes[0]["resources_total"]
    assert resources["CPU"] == 2.0
    assert resources.get("GPU", 0.0) == 0.0
    assert nodes[0]["node_ip"] == "127.0.0.1"
