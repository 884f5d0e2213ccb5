"""Links into the portal that answer: only to a portal that serves this ``MODELBUILDER_HOME``.

``run show --json`` and ``Run.get_details()`` carry a run's portal address. The configured address alone
(``settings.portal_base_url``) is only a guess: nothing may listen there, or another home's portal may,
which does not know this run. So a link is given only when ``MODELBUILDER_PORTAL_URL`` names the portal
explicitly or ``portal.launcher.find_portal`` finds this home's running portal (its health answer names
this home); otherwise there is no link, and a sentence says why and how to start one. Nothing is started
here (reading a run must not start a server), and FastAPI is not imported.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .. import hints, settings
from ..portal.identity import home_key
from ..portal.launcher import find_portal

#: Seconds a lookup is reused, so the views of many runs (``experiment show --json``) ask the portal once.
REUSE_S = 2.0


@dataclass(frozen=True)
class PortalLink:
    """Where this home's portal is, or why there is none.

    Attributes:
        base_url: the portal's address (no trailing slash), or None when no portal serves this home.
        reason: why there is no link, with the command that starts a portal (None when there is one).
    """

    base_url: str | None
    reason: str | None = None

    def run_url(self, workspace: str, run_id: str) -> str | None:
        """The run's portal page, or None without a portal."""
        if self.base_url is None:
            return None
        return settings.portal_run_url(workspace, run_id, self.base_url)


_lock = threading.Lock()
_last: tuple[tuple[str, str | None], float, PortalLink] | None = None


def _no_portal(workspace: str) -> str:
    return f"No portal is running for MODELBUILDER_HOME {home_key()}; start one with: " + hints.command(
        "portal", workspace=workspace
    )


def _look_up(workspace: str) -> PortalLink:
    configured = settings.portal_url_override()
    if configured is not None:
        return PortalLink(configured)
    found = find_portal()
    if found is not None:
        return PortalLink(found)
    return PortalLink(None, _no_portal(workspace))


def portal_link(workspace: str) -> PortalLink:
    """This home's portal (``MODELBUILDER_PORTAL_URL`` when set, else a running portal of this home), or
    why there is none. Starts nothing; a lookup is reused for ``REUSE_S`` seconds within this home."""
    global _last
    key = (home_key(), settings.portal_url_override())
    now = time.monotonic()
    with _lock:
        if _last is not None and _last[0] == key and now - _last[1] < REUSE_S:
            remembered = _last[2]
            if remembered.base_url is not None:
                return remembered
            # The reason names the workspace to start the portal for: rebuild it for this one.
            return PortalLink(None, _no_portal(workspace))
    link = _look_up(workspace)
    with _lock:
        _last = (key, time.monotonic(), link)
    return link


def forget() -> None:
    """Drop the remembered lookup (a portal was just started or stopped by this process)."""
    global _last
    with _lock:
        _last = None
