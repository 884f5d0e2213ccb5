"""A Ray run's outputs travel back through the cluster's own API: no shared filesystem needed.

The job (its entrypoint, or rank 0 of a worker group) *publishes* its finished outputs into its node's
Ray log folder, under ``mb-outputs/<run_id>/`` (hard links when it can, else copies), and names them in
its ``result`` event with each file's size and sha256 (``Transfer``). The submitter's follower then
*fetches* each file through the dashboard's log API (``GET /api/v0/logs/file?node_id=..&filename=..``,
raw bytes, streamed, the compute's token in the header), verifies size and sha256 while it writes, and
only then records the outputs; afterwards it removes the published folder with a one-line Ray job pinned
to that node. The dashboard serves only files inside its node's log folder, which is why outputs are
published there; everything goes through the compute's address, as every other request does. Outputs
that were never fetched (the submitter gave up) are swept by a later publish after ``STALE_S``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shlex
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ...errors import ComputeError
from .cluster import ClusterUnreachableError, RayCluster

TRANSFER_VERSION = 1
#: The folder, inside a node's Ray log folder, where jobs publish their outputs.
PUBLISH_DIR = "mb-outputs"
#: Tries per file when the dashboard does not answer (a restarting agent), and the pause between them.
FETCH_TRIES = 3
FETCH_RETRY_S = 2.0
_CHUNK = 1 << 20
#: Published outputs older than this (seconds) are removed by the next job that publishes on the node.
STALE_S = 7 * 24 * 3600.0


class OutputTransferError(ComputeError):
    """An output of a Ray job could not be fetched, or its bytes differ from what the job published."""


@dataclass(frozen=True)
class Transfer:
    """Where a job published its outputs and what each file must be.

    Args:
        node_id: the Ray node that holds them (the log API reads files of one node).
        node_ip: that node's address (its ``node:<ip>`` resource pins the clean-up job there).
        logs_dir: the node's Ray log folder (absolute, on that node).
        root: the published folder, relative to ``logs_dir``: ``mb-outputs/<run_id>``.
        outputs: output name -> ``file`` or ``folder``.
        files: path relative to ``root`` (``<name>`` or ``<name>/<path in the folder>``) ->
            ``{"size": bytes, "sha256": hex}``.
    """

    node_id: str
    node_ip: str
    logs_dir: str
    root: str
    outputs: dict[str, str] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    version: int = TRANSFER_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Transfer:
        """Raises OutputTransferError: another format version, or fields missing."""
        if data.get("version") != TRANSFER_VERSION:
            raise OutputTransferError(
                f"The job described its outputs in transfer format {data.get('version')!r}; this "
                f"modelbuilder reads version {TRANSFER_VERSION}.",
                hint="Use the same modelbuilder version on the cluster and here (jobs ship this one).",
            )
        try:
            return cls(**{k: data[k] for k in ("node_id", "node_ip", "logs_dir", "root", "outputs", "files")})
        except KeyError as exc:
            raise OutputTransferError(
                f"The job's output description lacks {exc}.", hint="Run the training again."
            ) from None


def _sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def _safe_relative(path: str) -> str:
    """``path`` when it is a plain relative POSIX path (no ``..``, no root), else raise."""
    parts = PurePosixPath(path).parts
    if not parts or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in path:
        raise OutputTransferError(
            f"The job named an output file {path!r}, which is not a plain relative path.",
            hint="The job was not written by this modelbuilder; run the training again.",
        )
    return path


# --- the cluster side ----------------------------------------------------------------------------


def this_node() -> tuple[str, str, Path]:
    """(node id, node address, Ray log folder) of the node this process runs on (connects to Ray)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="auto", log_to_driver=False, logging_level=logging.WARNING)
    node = ray._private.worker.global_worker.node  # the only way to the node's log folder
    return ray.get_runtime_context().get_node_id(), str(node.node_ip_address), Path(node.get_logs_dir_path())


def _place(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)  # no copy: the published file keeps the written bytes' inode
    except OSError:
        shutil.copyfile(source, target)


def _sweep_stale(folder: Path) -> None:
    """Remove runs' published outputs nobody fetched within ``STALE_S`` (their follower never came back;
    the clean-up job could not run)."""
    if not folder.is_dir():
        return
    cutoff = time.time() - STALE_S
    for entry in folder.iterdir():
        with contextlib.suppress(OSError):
            if entry.is_dir() and entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)


def publish_outputs(
    run_id: str, files: Mapping[str, Path], node: tuple[str, str, Path] | None = None
) -> Transfer:
    """Put a run's outputs where the dashboard serves them (this node's log folder); their description.

    A restarted attempt publishes again over the older copy.
    """
    node_id, node_ip, logs_dir = node or this_node()
    root = f"{PUBLISH_DIR}/{run_id}"
    target_root = logs_dir / root
    shutil.rmtree(target_root, ignore_errors=True)
    _sweep_stale(logs_dir / PUBLISH_DIR)
    outputs: dict[str, str] = {}
    described: dict[str, dict[str, Any]] = {}
    for name, path in sorted(files.items()):
        path = Path(path)
        if path.is_dir():
            outputs[name] = "folder"
            members = [(f"{name}/{p.relative_to(path).as_posix()}", p) for p in sorted(path.rglob("*"))
                       if p.is_file()]
        else:
            outputs[name] = "file"
            members = [(name, path)]
        for relative, source in members:
            target = target_root / _safe_relative(relative)
            _place(source, target)
            described[relative] = {"size": target.stat().st_size, "sha256": _sha256(target)}
    return Transfer(node_id, node_ip, str(logs_dir), root, outputs, described)


# --- the submitter side --------------------------------------------------------------------------


def _download(cluster: RayCluster, transfer: Transfer, relative: str, target: Path) -> tuple[int, str]:
    """Stream one published file into ``target`` (atomically); its size and sha256 as received."""
    query = urllib.parse.urlencode(
        {
            "node_id": transfer.node_id,
            "filename": f"{transfer.root}/{relative}",
            "lines": -1,  # the whole file, from its first byte
            "timeout": int(cluster.read_timeout_s),
        }
    )
    request = urllib.request.Request(f"{cluster.address}/api/v0/logs/file?{query}", headers=cluster.headers())
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        hasher, size = hashlib.sha256(), 0
        with os.fdopen(handle, "wb") as sink, urllib.request.urlopen(
            request, timeout=cluster.read_timeout_s
        ) as response:
            while chunk := response.read(_CHUNK):
                hasher.update(chunk)
                sink.write(chunk)
                size += len(chunk)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return size, hasher.hexdigest()


def fetch_outputs(cluster: RayCluster, transfer: Transfer, destination: Path) -> dict[str, Path]:
    """Download every published file into ``destination`` and verify each; output name -> path there.

    Raises:
        OutputTransferError: a file is missing on the node, or its size or sha256 differs.
        ClusterUnreachableError: the dashboard did not answer after ``FETCH_TRIES`` tries.
    """
    for relative, expected in sorted(transfer.files.items()):
        target = destination / _safe_relative(relative)
        for attempt in range(1, FETCH_TRIES + 1):
            try:
                size, sha256 = _download(cluster, transfer, relative, target)
                break
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", "replace").strip()[-300:] or exc.reason
                raise OutputTransferError(
                    f"Output file {relative!r} could not be read from Ray node {transfer.node_ip} "
                    f"(HTTP {exc.code}: {detail}).",
                    hint="The node may have restarted or its log folder been cleaned; run the training "
                    "again.",
                ) from None
            except (urllib.error.URLError, OSError) as exc:
                if attempt == FETCH_TRIES:
                    raise ClusterUnreachableError(
                        f"Output file {relative!r} could not be fetched from {cluster.address}: "
                        f"{getattr(exc, 'reason', exc)}.",
                        hint="Check that the cluster is reachable, then follow the run again: "
                        "the outputs stay on the cluster until they are fetched.",
                    ) from None
                time.sleep(FETCH_RETRY_S)
        if (size, sha256) != (expected.get("size"), expected.get("sha256")):
            raise OutputTransferError(
                f"Output file {relative!r} arrived as {size} bytes with sha256 {sha256[:12]}...; the job "
                f"published {expected.get('size')} bytes with sha256 {str(expected.get('sha256'))[:12]}...",
                hint="The bytes changed on the way or on the node; run the training again.",
            )
    return {name: destination / name for name in sorted(transfer.outputs)}


CLEANUP_SUFFIX = "-outputs-rm"


def remove_published(cluster: RayCluster, client: Any, run_id: str, transfer: Transfer) -> None:
    """Remove the published folder from its node: a tiny Ray job pinned there (``node:<ip>``), since
    the dashboard only reads files. Best effort: a job that cannot run leaves only log-folder files."""
    root = _safe_relative(transfer.root)
    if PurePosixPath(root).parent != PurePosixPath(PUBLISH_DIR):
        return  # not a folder this module publishes: never remove anything else
    folder = Path(transfer.logs_dir) / root
    code = "import shutil, sys; shutil.rmtree(sys.argv[1], ignore_errors=True)"
    with contextlib.suppress(OSError, RuntimeError, ClusterUnreachableError):
        client.submit_job(
            entrypoint=shlex.join(["python", "-c", code, str(folder)]),
            submission_id=f"mb-{run_id}{CLEANUP_SUFFIX}",
            entrypoint_num_cpus=0,
            entrypoint_resources={f"node:{transfer.node_ip}": 0.001},
            metadata={"modelbuilder_run": run_id, "modelbuilder_cleanup": "outputs"},
        )
