"""Live node resources of a Ray cluster, and whether a compute size can ever be scheduled on it.

A size is a request for GPUs, vCPUs and memory on ONE node (as on one VM; the training workers of a run
are packed onto one node with ``STRICT_PACK``). The check answers "fits" or the reason, naming the size,
what it needs and what the largest node has, e.g. "Standard_NC24 needs 4 GPUs on one node; the largest
node of http://127.0.0.1:8265 has 0".
"""

from __future__ import annotations

from dataclasses import dataclass

from ...entities import ComputeSize
from .cluster import ClusterUnreachableError, RayCluster

#: Ray's ``memory`` resource is what the node may give tasks, a little below its physical memory (and a
#: VM's usable memory is a little below its nominal size): allow 10 %, as the local backend does.
MEMORY_TOLERANCE = 0.10
_GIB = 2**30


@dataclass(frozen=True)
class NodeResources:
    """What one alive Ray node offers the scheduler."""

    node_id: str
    ip: str
    cpus: float
    gpus: float
    memory_gib: float


def read_nodes(cluster: RayCluster) -> list[NodeResources]:
    """The cluster's alive nodes and their total resources (from the dashboard's state API).

    Raises:
        ClusterUnreachableError: the dashboard does not answer, or answers something unexpected.
    """
    answer = cluster.get_json("/api/v0/nodes?detail=1&limit=10000")
    try:
        listed = answer["data"]["result"]["result"]
    except (KeyError, TypeError):
        raise ClusterUnreachableError(
            f"The Ray dashboard at {cluster.address} answered the node list in an unknown format.",
            hint="Use a Ray 2.x head (pip install 'ray[default]').",
        ) from None
    nodes = []
    for node in listed:
        if node.get("state") != "ALIVE":
            continue
        total = node.get("resources_total") or {}
        nodes.append(
            NodeResources(
                node_id=str(node.get("node_id", "")),
                ip=str(node.get("node_ip", "")),
                cpus=float(total.get("CPU", 0.0)),
                gpus=float(total.get("GPU", 0.0)),
                memory_gib=float(total.get("memory", 0.0)) / _GIB,
            )
        )
    return nodes


def _count(value: float) -> str:
    return f"{value:g}"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def size_fit_reason(size: ComputeSize, nodes: list[NodeResources], address: str) -> str | None:
    """None when one node can hold ``size`` (GPUs, vCPUs and memory together), else the reason.

    The reason names the first unmet need, checked GPUs first (the scarce resource), with the best any
    single node offers.
    """
    where = f"the largest node of {address}"
    if not nodes:
        return f"{size.name} needs a node; {address} has no alive nodes"
    needs = size.memory_gib * (1 - MEMORY_TOLERANCE)
    if not any(n.gpus >= size.gpus and n.cpus >= size.vcpus and n.memory_gib >= needs for n in nodes):
        if size.gpus and max(n.gpus for n in nodes) < size.gpus:
            return (
                f"{size.name} needs {_plural(size.gpus, 'GPU')} on one node; "
                f"{where} has {_count(max(n.gpus for n in nodes))}"
            )
        with_gpus = [n for n in nodes if n.gpus >= size.gpus]
        if max(n.cpus for n in with_gpus) < size.vcpus:
            return (
                f"{size.name} needs {_plural(size.vcpus, 'vCPU')} on one node; "
                f"{where}{' with enough GPUs' if size.gpus else ''} has "
                f"{_count(max(n.cpus for n in with_gpus))}"
            )
        enough = [n for n in with_gpus if n.cpus >= size.vcpus]
        return (
            f"{size.name} needs {size.memory_gib:g} GiB of memory on one node; {where} with enough "
            f"{'GPUs and ' if size.gpus else ''}vCPUs has {max(n.memory_gib for n in enough):.1f} GiB"
        )
    return None


def cluster_fit_reason(cluster: RayCluster, size: ComputeSize) -> str | None:
    """None when ``cluster`` can ever schedule ``size`` on one node, else the reason (an unreachable
    cluster is a reason too, not an exception: provisioning keeps the compute ``Failed`` with it)."""
    try:
        cluster.ray_version()
        nodes = read_nodes(cluster)
    except ClusterUnreachableError as exc:
        return exc.message
    return size_fit_reason(size, nodes, cluster.address)
