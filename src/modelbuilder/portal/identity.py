"""Who a portal serves, and the record files through which launchers find it. Standard library only.

A portal serves one ``MODELBUILDER_HOME`` (the catalog and workspaces under it). Two homes on one machine (two
users, or ``MODELBUILDER_HOME=/tmp/project-a``) each need their own portal, so a portal says which home it
serves: in ``/api/health`` and in a record file ``<home>/portals/<port>.json`` that it writes while it serves.
The launcher reads the records of its own home to find that home's portal on whatever port it got, and
trusts a port only when the portal's health names the same home.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import settings

logger = logging.getLogger(__name__)

SERVICE_NAME = "modelbuilder-portal"
#: Format version of the record files (bump when a field changes meaning).
RECORD_VERSION = 1
_WILDCARD_HOSTS = {"0.0.0.0", "::", ""}


def home_key() -> str:
    """This process's ``MODELBUILDER_HOME`` as a portal reports it (absolute, symlinks resolved)."""
    return os.path.realpath(settings.home())


def records_dir() -> Path:
    return settings.home() / "portals"


def record_path(port: int) -> Path:
    return records_dir() / f"{port}.json"


@dataclass(frozen=True)
class PortalIdentity:
    """One running portal: the home it serves, where it listens, and a random id for this start.

    Attributes:
        home: the ``MODELBUILDER_HOME`` it serves (as ``home_key()``).
        instance: random per start, so a record is tied to one process even when ports and pids are reused.
        pid: its process id.
        host: the address it is bound to.
        port: its port.
        workspace: the workspace it was started for (it serves every workspace of its home).
        hostname: the machine it runs on (a home on a shared disk may be seen from several machines).
        started_at: seconds since the epoch.
    """

    home: str
    instance: str
    pid: int
    host: str
    port: int
    workspace: str
    hostname: str
    started_at: float

    @classmethod
    def new(cls, workspace: str, host: str, port: int) -> PortalIdentity:
        """The identity of a portal about to serve this process's home on ``host``:``port``."""
        return cls(
            home=home_key(),
            instance=secrets.token_hex(8),
            pid=os.getpid(),
            host=host,
            port=port,
            workspace=workspace,
            hostname=socket.gethostname(),
            started_at=time.time(),
        )

    @property
    def connect_host(self) -> str:
        """Where a client on this machine reaches it (a wildcard bind answers on loopback)."""
        return "127.0.0.1" if self.host in _WILDCARD_HOSTS else self.host

    @property
    def base_url(self) -> str:
        host = self.connect_host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        return {"version": RECORD_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PortalIdentity:
        """Raises: KeyError, TypeError or ValueError for a record of another shape."""
        if data.get("version") != RECORD_VERSION:
            raise ValueError(f"unknown portal record version {data.get('version')!r}")
        return cls(
            home=str(data["home"]),
            instance=str(data["instance"]),
            pid=int(data["pid"]),
            host=str(data["host"]),
            port=int(data["port"]),
            workspace=str(data["workspace"]),
            hostname=str(data["hostname"]),
            started_at=float(data["started_at"]),
        )


def write_record(identity: PortalIdentity) -> Path:
    """Write ``identity`` as this home's record for its port (atomically: launchers read it at any time)."""
    path = record_path(identity.port)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{identity.instance}.tmp")
    temporary.write_text(json.dumps(identity.to_dict(), indent=2), encoding="utf-8")
    os.replace(temporary, path)
    return path


def remove_record(identity: PortalIdentity) -> None:
    """Remove the record of ``identity``'s port if it is still its own (another portal may own it now)."""
    path = record_path(identity.port)
    found = _read(path)
    if found is not None and found.instance == identity.instance:
        with contextlib.suppress(OSError):
            path.unlink()


def read_records() -> list[PortalIdentity]:
    """The portal records of this home on this machine, newest first (unreadable files are left out)."""
    folder = records_dir()
    if not folder.is_dir():
        return []
    hostname = socket.gethostname()
    found = [record for path in folder.glob("*.json") if (record := _read(path)) is not None]
    found = [record for record in found if record.hostname == hostname]
    return sorted(found, key=lambda record: record.started_at, reverse=True)


def forget_if_dead(record: PortalIdentity) -> None:
    """Remove a record whose process is gone (a portal killed without cleaning up)."""
    if not pid_alive(record.pid):
        logger.info("Removing the record of portal pid %d on port %d: it is gone", record.pid, record.port)
        remove_record(record)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _read(path: Path) -> PortalIdentity | None:
    try:
        return PortalIdentity.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        logger.debug("Ignoring portal record %s: %s", path, exc)
        return None
