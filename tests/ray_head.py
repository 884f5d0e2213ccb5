"""Start and stop one local Ray head for tests, listening on loopback only.

``ray start --head --node-ip-address 127.0.0.1`` is not enough on Ray 2.60: Ray "resolves" a loopback node
address to the machine's outward IP, so the GCS, raylet and agents still listen on every interface (seen
with ``ss -ltnp``). ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes Ray keep 127.0.0.1 as the node address,
and then every port of the head binds to loopback. Every fixed default port (6379, 8265, 10001, 52365) is
replaced by a free one so the head never collides with another Ray on the machine.

The head runs ``ray start --block`` in its own session; stopping it signals exactly the processes of that
session (found by session id), never ``ray stop``, which would stop every Ray on the machine.

Fixtures (imported by ``tests/conftest.py``, so the ray tests and the backend contract suite share the
heads of a test session): ``ray_head``, ``ray_token_head``, ``ray_fake_trainer``, ``ray_contract_compute``.
Without the ``[ray]`` extra, or when a head cannot start, the tests that need it are skipped with the
reason shown (``-ra``); in CI (``CI=true``) that is a failure, never a silent skip.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

#: Environment that pins what the head does: no usage reports, auth mode explicit, loopback node address.
HEAD_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    # One line per event even when several workers print the same text (the backend parses lines).
    "RAY_DEDUP_LOGS": "0",
}
OBJECT_STORE_BYTES = 80 * 1024 * 1024
START_TIMEOUT_S = 120.0
STOP_GRACE_S = 2.0


class RayHeadError(RuntimeError):
    """The test head could not be started."""


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that are free on 127.0.0.1 right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class RayHead:
    """A running local head: its dashboard (Jobs API) address, GCS address, and the session leader."""

    address: str
    gcs_address: str
    pid: int
    temp_dir: Path
    log_path: Path

    def session_pids(self) -> list[int]:
        """Every live (not zombie) process of the head's session: head, GCS, raylet, agents, workers, jobs."""
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.getsid(int(entry)) != self.pid:
                    continue
                # A zombie is dead already (nobody may reap it here: the container's pid 1 may not).
                if Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
                pids.append(int(entry))
            except (ProcessLookupError, PermissionError, FileNotFoundError, IndexError):
                continue
        return pids

    def stop(self) -> None:
        """SIGTERM the session's processes, SIGKILL what is left after a short grace (a test head keeps
        nothing worth Ray's 30 s drain)."""
        for sig, grace in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 10.0)):
            for pid in self.session_pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and self.session_pids():
                time.sleep(0.1)
            if not self.session_pids():
                break
        try:  # reap the leader if it is our child
            os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _get_json(url: str, token: str | None) -> object:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as response:
        return json.loads(response.read())


def _ready(address: str, token: str | None) -> bool:
    """The dashboard answers, the head node is alive, and the Jobs API is up."""
    try:
        nodes = _get_json(f"{address}/api/v0/nodes?detail=1", token)
        _get_json(f"{address}/api/jobs/", token)
    except (urllib.error.URLError, OSError, ValueError):
        return False
    listed = nodes.get("data", {}).get("result", {}).get("result", []) if isinstance(nodes, dict) else []
    return any(node.get("state") == "ALIVE" for node in listed)


def start_ray_head(
    num_cpus: int = 2, num_gpus: int = 0, root: Path | None = None, token: str | None = None
) -> RayHead:
    """Start a local head and wait until it accepts jobs; with ``token``, in Ray's token auth mode.

    Raises:
        RayHeadError: ray is not installed, or the head did not come up within ``START_TIMEOUT_S``.
    """
    ray_cli = Path(sys.executable).with_name("ray")
    if not ray_cli.exists():
        raise RayHeadError(f"{ray_cli} does not exist; install the ray extra: pip install -e '.[ray]'")
    # Ray's socket paths must stay under 108 bytes: a short folder directly under /tmp.
    temp_dir = Path(tempfile.mkdtemp(prefix="mbray-", dir=str(root) if root else "/tmp"))
    gcs_port, dashboard_port, client_port, agent_port = free_ports(4)
    log_path = temp_dir / "head.out"
    command = [
        str(ray_cli), "start", "--head", "--block",
        "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1",
        "--port", str(gcs_port), "--dashboard-port", str(dashboard_port),
        "--ray-client-server-port", str(client_port), "--dashboard-agent-listen-port", str(agent_port),
        "--num-cpus", str(num_cpus), "--num-gpus", str(num_gpus),
        "--object-store-memory", str(OBJECT_STORE_BYTES),
        "--temp-dir", str(temp_dir), "--disable-usage-stats",
    ]  # fmt: skip
    # As in an activated environment: the jobs' `python` is the one that has Ray and modelbuilder's deps.
    path = f"{ray_cli.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, **HEAD_ENV, "PATH": path}
    if token:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    head = RayHead(
        address=f"http://127.0.0.1:{dashboard_port}",
        gcs_address=f"127.0.0.1:{gcs_port}",
        pid=process.pid,
        temp_dir=temp_dir,
        log_path=log_path,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = log_path.read_text()[-2000:]
            head.stop()
            raise RayHeadError(f"ray start exited with code {process.returncode}: {output}")
        if _ready(head.address, token):
            return head
        time.sleep(0.5)
    output = log_path.read_text()[-2000:]
    head.stop()
    raise RayHeadError(f"The Ray head did not come up in {START_TIMEOUT_S:.0f} s: {output}")


def listening_sockets(pids: list[int]) -> list[tuple[str, int, int]]:
    """(address, port, pid) of every TCP socket that one of ``pids`` listens on (from ``ss -ltnpH``)."""
    output = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    wanted = set(pids)
    found = []
    for line in output.splitlines():
        fields = line.split()
        if len(fields) < 6:
            continue
        local = fields[3]
        address, _, port = local.rpartition(":")
        for part in fields[5].split("pid=")[1:]:
            pid = int(part.split(",")[0])
            if pid in wanted:
                found.append((address.strip("[]"), int(port), pid))
    return found


# --------------------------------------------------------------------------------------------- fixtures

#: A JSON file describing a running head to reuse instead of starting one (local development only):
#: {"address", "gcs", "pid", "temp_dir", "log"}.
REUSE_ENV = "MB_TEST_RAY_HEAD"
TESTS_DIR = Path(__file__).resolve().parent


def _unavailable(message: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(f"*** {message} ***")


@pytest.fixture(scope="session")
def ray_head() -> Iterator[RayHead]:
    """The session's local head (2 CPUs, 0 GPUs, loopback only), started on first use."""
    try:
        import ray  # noqa: F401
    except ImportError:
        _unavailable('Ray is not installed, so the Ray backend tests cannot run: pip install -e ".[ray]"')
    reuse = os.environ.get(REUSE_ENV)
    if reuse:
        info = json.loads(Path(reuse).read_text())
        yield RayHead(info["address"], info["gcs"], info["pid"], Path(info["temp_dir"]), Path(info["log"]))
        return
    try:
        head = start_ray_head(num_cpus=2, num_gpus=0)
    except RayHeadError as exc:
        _unavailable(f"The local Ray head could not start, so the Ray backend tests cannot run: {exc}")
        raise  # not reached: _unavailable always raises
    try:
        yield head
    finally:
        head.stop()


@pytest.fixture(scope="session")
def ray_token_head() -> Iterator[tuple[RayHead, str]]:
    """A second local head in Ray's token auth mode (2 CPUs), and its token; started on first use."""
    try:
        import ray  # noqa: F401
    except ImportError:
        _unavailable('Ray is not installed, so the Ray token tests cannot run: pip install -e ".[ray]"')
    token = secrets.token_hex(16)
    try:
        head = start_ray_head(num_cpus=2, token=token)
    except RayHeadError as exc:
        _unavailable(f"The token-mode Ray head could not start: {exc}")
        raise  # not reached
    try:
        yield head, token
    finally:
        head.stop()


@pytest.fixture
def ray_fake_trainer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Ray jobs can import the fake trainer: shipped as a package folder with every job (py_modules)."""
    from fake_trainer import TARGET
    from modelbuilder.compute.ray.jobs import EXTRA_MODULES_ENV

    package = tmp_path / "shipped" / "fake_trainer"
    package.mkdir(parents=True)
    shutil.copy(TESTS_DIR / "fake_trainer.py", package / "__init__.py")
    monkeypatch.setenv(EXTRA_MODULES_ENV, str(package))
    return TARGET


@pytest.fixture
def ray_contract_compute(ray_head: RayHead, ray_fake_trainer: str) -> Callable[[Any], str]:
    """For the backend contract suite: makes a CPU compute on the session's head in a workspace."""

    def make(session: Any) -> str:
        from modelbuilder.compute import ComputeSpec
        from modelbuilder.entities import ProvisioningState
        from modelbuilder.services.computes import create_compute

        spec = ComputeSpec.create("ray-c", "Standard_F2s_v2", backend="ray", address=ray_head.address)
        compute = create_compute(session, spec)
        assert compute.state is ProvisioningState.SUCCEEDED, compute.error
        return compute.name

    return make
