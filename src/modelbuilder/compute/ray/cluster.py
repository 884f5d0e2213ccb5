"""Reaching a Ray cluster: its address, its token, and the dashboard's HTTP API.

A ray compute's address is the head's dashboard (``http://host:8265``): the Jobs API and the state API
(live node resources) both answer there, so provisioning needs no Ray driver connection.

Security: a Ray cluster without token auth runs any code anyone sends it. A plain ``http://`` address that
is not loopback is therefore refused unless the compute names a token (Ray's ``RAY_AUTH_MODE=token``). The
token itself is never stored: it is read from the environment variable the compute names (``token_ref``)
or Ray's own ``RAY_AUTH_TOKEN``, only to build the request header. ``repr`` and
messages never show it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ...errors import ComputeError, InvalidParameterError

#: Seconds to wait for the dashboard before calling the cluster unreachable.
HTTP_TIMEOUT_S = 10.0
#: Seconds a Jobs API answer may take once connected (a log read, an upload's answer).
READ_TIMEOUT_S = 60.0


class ClusterUnreachableError(ComputeError):
    """The Ray cluster's dashboard does not answer at the compute's address."""


def is_loopback(address: str) -> bool:
    """Whether ``address`` points at this machine only (127.0.0.0/8, ::1, localhost)."""
    host = urlsplit(address).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_address_security(compute: str, address: str, token_ref: str | None) -> None:
    """Refuse sending code in clear to an unauthenticated cluster on the network.

    Raises:
        InvalidParameterError: a non-loopback ``http://`` (or ``ray://``) address without a token.
    """
    scheme = urlsplit(address).scheme
    if scheme == "https" or is_loopback(address) or token_ref:
        return
    raise InvalidParameterError(
        f"Compute '{compute}' would send training code to {address} over plain {scheme} without a token: "
        "anyone on the network could run code on that cluster.",
        hint="Start the cluster with RAY_AUTH_MODE=token, export its token where modelbuilder runs "
        "(export RAY_AUTH_TOKEN=...) and name that variable: --token-env RAY_AUTH_TOKEN (only the name is "
        "stored); or reach the head through https or an SSH tunnel to 127.0.0.1.",
    )


@dataclass(frozen=True)
class RayCluster:
    """A Ray head reached through its dashboard address; ``token_ref`` names the token's variable."""

    address: str
    token_ref: str | None = None
    timeout_s: float = field(default=HTTP_TIMEOUT_S, compare=False)
    read_timeout_s: float = field(default=READ_TIMEOUT_S, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", self.address.rstrip("/"))

    def headers(self) -> dict[str, str]:
        """The request headers (the bearer token when the compute has one).

        Raises:
            InvalidParameterError: the token's environment variable is not set.
        """
        if not self.token_ref:
            return {}
        token = os.environ.get(self.token_ref, "").strip()
        if not token:
            raise InvalidParameterError(
                f"The Ray cluster at {self.address} needs the token in the environment variable "
                f"{self.token_ref}, which is not set.",
                hint=f"Set it before running modelbuilder: export {self.token_ref}=<the cluster's token>",
            )
        return {"Authorization": f"Bearer {token}"}

    def get_json(self, path: str) -> Any:
        """GET a dashboard API path and parse the JSON answer.

        Raises:
            ClusterUnreachableError: no answer, a refused token, or not a Ray dashboard.
        """
        request = urllib.request.Request(f"{self.address}{path}", headers=self.headers())
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403) and not self.token_ref:
                raise ClusterUnreachableError(
                    f"The Ray cluster at {self.address} requires a token (HTTP {exc.code}); none was given.",
                    hint="export RAY_AUTH_TOKEN=<the cluster's token> (read from the environment, never "
                    "stored), then run the command again.",
                ) from None
            if exc.code in (401, 403):
                raise ClusterUnreachableError(
                    f"The Ray cluster at {self.address} refused the token in ${self.token_ref} "
                    f"(HTTP {exc.code}).",
                    hint=f"Check the token in ${self.token_ref}.",
                ) from None
            raise ClusterUnreachableError(
                f"The Ray dashboard at {self.address} answered HTTP {exc.code} to {path}.",
                hint="Check that the address is the head's dashboard (port 8265 by default).",
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClusterUnreachableError(
                f"The Ray cluster at {self.address} is not reachable ({reason}).",
                hint="Start the head (ray start --head --dashboard-host 127.0.0.1) or fix --address.",
            ) from None
        except ValueError:
            raise ClusterUnreachableError(
                f"{self.address} answered {path} with something that is not JSON: not a Ray dashboard.",
                hint="Give the head's dashboard address, e.g. http://127.0.0.1:8265.",
            ) from None

    def ray_version(self) -> str:
        """The cluster's Ray version (also proves the address is a Ray dashboard)."""
        answer = self.get_json("/api/version")
        version = answer.get("ray_version") if isinstance(answer, dict) else None
        if not isinstance(version, str):
            raise ClusterUnreachableError(
                f"{self.address} does not look like a Ray dashboard (no ray_version in /api/version).",
                hint="Give the head's dashboard address, e.g. http://127.0.0.1:8265.",
            )
        return version

    def job_client(self) -> Any:
        """A ``ray.job_submission.JobSubmissionClient`` for this cluster whose every request has a timeout
        (Ray's own has none: a silent host would hang ``run list`` and the portal)."""
        try:
            return _timed_client_class()(
                self.address, headers=self.headers(), request_timeout=(self.timeout_s, self.read_timeout_s)
            )
        except (OSError, RuntimeError) as exc:  # requests' errors are OSErrors
            raise ClusterUnreachableError(
                f"The Ray Jobs API at {self.address} is not reachable ({exc}).",
                hint="Start the head (ray start --head --dashboard-host 127.0.0.1) or fix --address.",
            ) from None


_TIMED_CLIENT: Any = None


def _timed_client_class() -> Any:
    """``JobSubmissionClient`` with a (connect, read) timeout on each request (built once, on first use)."""
    global _TIMED_CLIENT
    if _TIMED_CLIENT is None:
        from ray.job_submission import JobSubmissionClient

        class TimedJobSubmissionClient(JobSubmissionClient):  # type: ignore[misc]
            def __init__(self, *args: Any, request_timeout: tuple[float, float], **kwargs: Any) -> None:
                self._request_timeout = request_timeout  # set first: the constructor makes a request
                super().__init__(*args, **kwargs)

            def _do_request(self, *args: Any, **kwargs: Any) -> Any:
                kwargs.setdefault("timeout", self._request_timeout)
                return super()._do_request(*args, **kwargs)

        _TIMED_CLIENT = TimedJobSubmissionClient
    return _TIMED_CLIENT
