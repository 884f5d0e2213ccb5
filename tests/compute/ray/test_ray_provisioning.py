"""Provisioning on Ray: live node resources decide whether a size can ever run; security of addresses."""

from __future__ import annotations

import socket
import time

import pytest

from modelbuilder.compute.ray.cluster import ClusterUnreachableError, RayCluster, check_address_security
from modelbuilder.compute.ray.resources import NodeResources, cluster_fit_reason, read_nodes, size_fit_reason
from modelbuilder.compute.sizes import get_size
from modelbuilder.errors import InvalidParameterError
from ray_head import RayHead, free_ports

ADDRESS = "http://10.0.0.5:8265"


def test_gpu_size_on_a_head_without_gpus_names_the_need_and_the_largest_node(ray_head: RayHead) -> None:
    reason = cluster_fit_reason(RayCluster(ray_head.address), get_size("Standard_NC12"))
    assert reason == f"Standard_NC12 needs 2 GPUs on one node; the largest node of {ray_head.address} has 0"


def test_cpu_size_that_fits_the_head(ray_head: RayHead) -> None:
    assert cluster_fit_reason(RayCluster(ray_head.address), get_size("Standard_F2s_v2")) is None
    nodes = read_nodes(RayCluster(ray_head.address))
    assert [(n.cpus, n.gpus) for n in nodes] == [(2.0, 0.0)]


def test_cpu_size_larger_than_the_head(ray_head: RayHead) -> None:
    reason = cluster_fit_reason(RayCluster(ray_head.address + "/"), get_size("Standard_F4s_v2"))
    assert (
        reason == f"Standard_F4s_v2 needs 4 vCPUs on one node; the largest node of {ray_head.address} has 2"
    )


def test_unreachable_address_is_a_reason() -> None:
    (port,) = free_ports(1)
    address = f"http://127.0.0.1:{port}"
    reason = cluster_fit_reason(RayCluster(address, timeout_s=3), get_size("Standard_F2s_v2"))
    assert reason is not None
    assert reason.startswith(f"The Ray cluster at {address} is not reachable")


def _node(gpus: float, cpus: float, memory_gib: float) -> NodeResources:
    return NodeResources(node_id="n", ip="10.0.0.9", cpus=cpus, gpus=gpus, memory_gib=memory_gib)


def test_gpus_and_cpus_must_be_on_one_node() -> None:
    nc12 = get_size("Standard_NC12")  # 2 GPUs, 12 vCPUs, 112 GiB
    split = [_node(gpus=2, cpus=4, memory_gib=200), _node(gpus=0, cpus=64, memory_gib=200)]
    assert size_fit_reason(nc12, split, ADDRESS) == (
        f"Standard_NC12 needs 12 vCPUs on one node; the largest node of {ADDRESS} with enough GPUs has 4"
    )
    assert size_fit_reason(nc12, [*split, _node(gpus=2, cpus=12, memory_gib=110)], ADDRESS) is None


def test_memory_is_checked_with_a_tolerance() -> None:
    nc12 = get_size("Standard_NC12")
    assert size_fit_reason(nc12, [_node(2, 12, 112 * 0.91)], ADDRESS) is None
    assert size_fit_reason(nc12, [_node(2, 12, 64)], ADDRESS) == (
        f"Standard_NC12 needs 112 GiB of memory on one node; the largest node of {ADDRESS} with enough "
        "GPUs and vCPUs has 64.0 GiB"
    )
    assert size_fit_reason(nc12, [], ADDRESS) == f"Standard_NC12 needs a node; {ADDRESS} has no alive nodes"


@pytest.mark.parametrize(
    "address", ["http://10.0.0.5:8265", "ray://192.168.1.2:10001", "http://head.lan:8265"]
)
def test_plain_network_address_without_token_is_refused(address: str) -> None:
    with pytest.raises(InvalidParameterError, match="without a token") as caught:
        check_address_security("gpu-a", address, token_ref=None)
    assert "RAY_AUTH_TOKEN" in (caught.value.hint or "")


@pytest.mark.parametrize(
    ("address", "token_ref"),
    [("http://127.0.0.1:8265", None), ("http://localhost:8265", None), ("https://ray.example:443", None),
     ("http://10.0.0.5:8265", "RAY_AUTH_TOKEN")],
)  # fmt: skip
def test_loopback_https_or_a_token_is_accepted(address: str, token_ref: str | None) -> None:
    check_address_security("gpu-a", address, token_ref=token_ref)


def test_token_goes_only_into_the_header(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cr3t-token-value"
    monkeypatch.setenv("MB_TEST_RAY_TOKEN", secret)
    cluster = RayCluster(ADDRESS, token_ref="MB_TEST_RAY_TOKEN")
    assert cluster.headers() == {"Authorization": f"Bearer {secret}"}
    assert secret not in repr(cluster)
    monkeypatch.delenv("MB_TEST_RAY_TOKEN")
    with pytest.raises(InvalidParameterError, match="MB_TEST_RAY_TOKEN, which is not set"):
        cluster.headers()


@pytest.mark.slow
def test_token_mode_head_needs_the_token_which_travels_only_in_the_header(
    ray_token_head: tuple[RayHead, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    head, token = ray_token_head
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    size = get_size("Standard_F2s_v2")
    refused = cluster_fit_reason(RayCluster(head.address), size)
    assert refused == f"The Ray cluster at {head.address} requires a token (HTTP 401); none was given."
    monkeypatch.setenv("MB_TEST_TOKEN", "wrong-" + token)
    wrong = cluster_fit_reason(RayCluster(head.address, "MB_TEST_TOKEN"), size)
    assert wrong is not None and "refused the token in $MB_TEST_TOKEN" in wrong and token not in wrong
    monkeypatch.setenv("MB_TEST_TOKEN", token)
    with_token = RayCluster(head.address, "MB_TEST_TOKEN")
    # Through the token, the answer is about resources: the token head has two CPUs.
    assert cluster_fit_reason(with_token, size) is None
    largest = f"the largest node of {head.address} has 2"
    assert cluster_fit_reason(with_token, get_size("Standard_F4s_v2")) == (
        f"Standard_F4s_v2 needs 4 vCPUs on one node; {largest}"
    )
    assert [n.cpus for n in read_nodes(with_token)] == [2.0]
    assert isinstance(with_token.job_client().list_jobs(), list)  # the Jobs API answers through the header


def test_a_silent_dashboard_times_out_instead_of_hanging() -> None:
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(ClusterUnreachableError, match="not reachable"):
            RayCluster(address, timeout_s=1, read_timeout_s=1).job_client()
        assert cluster_fit_reason(RayCluster(address, timeout_s=1), get_size("Standard_F2s_v2")) is not None
        assert time.monotonic() - started < 10
