"""``ComputeSpec``: what a compute is, validated once and passed down to provisioning and execution.

The CLI (``compute create``), the Python API (``Workspace.create_compute``) and the portal build the same
spec with ``ComputeSpec.create``; ``services.computes.create_compute(session, spec)`` provisions it, and a
backend's ``start(job, spec)`` gets it with every job (its size is the job's resource request, its address
the cluster). ``ComputeSpec.from_compute`` rebuilds it from a stored compute.

Rules checked by ``create``, in this order: the compute name rule, the size is in the catalog, the backend
is known (an uninstalled extra names its install command), nodes (0 <= min <= max, the backend's maximum),
the ``local`` size only where the backend accepts it, the address (a URL with a host; never credentials
in it: a token is referred to by the environment variable that holds it), then the backend's own rules.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .. import hints
from ..entities import ComputeSize
from ..errors import InvalidParameterError
from ..names import ENV_VAR_NAME, check_compute_name
from .backend import get_backend
from .sizes import LOCAL_SIZE_NAME, get_size, is_local_size

if TYPE_CHECKING:
    from ..entities import Compute

LOCAL_BACKEND = "local"
DEFAULT_IDLE_SECONDS = 1800
ADDRESS_SCHEMES = ("http", "https", "ray")
_TOKEN_REF = ENV_VAR_NAME  # the column holds 64 characters
_MAX_ADDRESS = 500


@dataclass(frozen=True)
class ComputeSpec:
    """A compute as provisioning and backends see it.

    Args:
        name: 2-16 letters, digits and hyphens.
        size: the catalog size (a resource request: vCPUs, memory, GPUs on one node).
        backend: a registered backend name (``local``, ``ray``).
        address: where the backend reaches the compute (a Ray dashboard ``http://host:8265``); None for local.
        min_nodes, max_nodes: scaling bounds, where the backend scales.
        idle_seconds_before_scaledown: idle time before scaling down, where the backend scales.
        token_ref: the name of the environment variable that holds the cluster's auth token (Ray's token
            mode), never the token itself; None without token auth.
    """

    name: str
    size: ComputeSize
    backend: str = LOCAL_BACKEND
    address: str | None = None
    min_nodes: int = 0
    max_nodes: int = 1
    idle_seconds_before_scaledown: int = DEFAULT_IDLE_SECONDS
    token_ref: str | None = None

    @classmethod
    def create(
        cls,
        name: str,
        size: str | ComputeSize,
        *,
        backend: str = LOCAL_BACKEND,
        address: str | None = None,
        min_nodes: int = 0,
        max_nodes: int = 1,
        idle_seconds_before_scaledown: int = DEFAULT_IDLE_SECONDS,
        token_ref: str | None = None,
    ) -> ComputeSpec:
        """A validated spec (see the module doc for the rules).

        Raises:
            InvalidNameError: the name breaks the compute name rule.
            NotFoundError: the size is not in the catalog.
            MissingDependencyError: the backend's extra is not installed.
            InvalidParameterError: unknown backend, bad nodes, address or token reference.
        """
        check_compute_name(name)
        resolved = get_size(size.name if isinstance(size, ComputeSize) else size)
        plugin = get_backend(backend)
        _check_int(name, "min_nodes", min_nodes, minimum=0)
        _check_int(name, "max_nodes", max_nodes, minimum=1)
        _check_int(name, "idle_seconds_before_scaledown", idle_seconds_before_scaledown, minimum=0)
        if min_nodes > max_nodes:
            raise InvalidParameterError(
                f"The 'min_nodes' parameter of compute '{name}' must be at most max_nodes ({max_nodes}). "
                f"Got {min_nodes!r} instead.",
                hint="Give --min-nodes no larger than --max-nodes.",
            )
        if plugin.max_nodes is not None and max_nodes > plugin.max_nodes:
            raise InvalidParameterError(
                f"The 'max_nodes' parameter of compute '{name}' must be at most {plugin.max_nodes} on the "
                f"{backend} backend. Got {max_nodes!r} instead.",
                hint="The local backend runs on this machine only; use the ray backend for several nodes."
                if backend == LOCAL_BACKEND
                else f"Give --max-nodes {plugin.max_nodes} or less.",
            )
        if is_local_size(resolved) and not plugin.accepts_local_size:
            raise InvalidParameterError(
                f"The size '{LOCAL_SIZE_NAME}' means this machine; it cannot be used with the {backend} "
                "backend.",
                hint=f"Choose a size from: {hints.command('compute', 'sizes')}",
            )
        spec = cls(
            name=name,
            size=resolved,
            backend=backend,
            address=_check_address(name, address),
            min_nodes=min_nodes,
            max_nodes=max_nodes,
            idle_seconds_before_scaledown=idle_seconds_before_scaledown,
            token_ref=_check_token_ref(name, token_ref),
        )
        plugin.validate(spec)
        return spec

    @classmethod
    def from_compute(cls, compute: Compute) -> ComputeSpec:
        """The spec of a stored compute, as it was created (not validated again: rules may have changed
        since, and a stored compute must stay usable and deletable). Its ``token_ref`` is the stored
        variable name; the token is read from that variable only where a backend reaches the cluster.

        Raises:
            NotFoundError: its size is no longer in the catalog.
        """
        return cls(
            name=compute.name,
            size=get_size(compute.size),
            backend=compute.backend,
            address=compute.address,
            min_nodes=compute.min_nodes,
            max_nodes=compute.max_nodes,
            idle_seconds_before_scaledown=compute.idle_seconds_before_scaledown,
            token_ref=compute.token_ref,
        )

    @property
    def is_local_size(self) -> bool:
        return is_local_size(self.size)

    def describe(self) -> str:
        """For messages: "gpu-a (Standard_NC12 on ray at http://127.0.0.1:8265)"."""
        where = f" at {self.address}" if self.address else ""
        return f"{self.name} ({self.size.name} on {self.backend}{where})"


def _check_int(name: str, parameter: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidParameterError(
            f"The {parameter!r} parameter of compute '{name}' must be an integer of at least {minimum}. "
            f"Got {value!r} instead.",
            hint=f"Give a whole number of {minimum} or more.",
        )


def _check_address(name: str, address: str | None) -> str | None:
    """The address, stripped; None for none. A URL with a known scheme and a host, without credentials."""
    if address is None or not address.strip():
        return None
    address = address.strip()
    bad = None
    if len(address) > _MAX_ADDRESS:
        bad = f"it is longer than {_MAX_ADDRESS} characters"
    else:
        try:
            parts = urlsplit(address)
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError as exc:
            bad = str(exc)
        else:
            if parts.scheme not in ADDRESS_SCHEMES or not parts.hostname:
                bad = f"it must be {' or '.join(s + '://HOST:PORT' for s in ADDRESS_SCHEMES)}"
            elif parts.username or parts.password or parts.query or parts.fragment:
                # A token in the URL would be stored and printed in clear.
                bad = "it must not carry credentials, a query or a fragment"
    if bad:
        raise InvalidParameterError(
            f"The 'address' parameter of compute '{name}' is not a cluster address: {bad}. "
            f"Got {_redacted(address)[:80]!r} instead.",
            hint="Give the Ray dashboard address, e.g. --address http://127.0.0.1:8265; put a token in an "
            "environment variable, never in the address.",
        )
    return address


def _redacted(address: str) -> str:
    """The address without what may be a secret (user info, query, fragment), for errors and logs."""
    try:
        parts = urlsplit(address)
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "<unparsable address>"
    hidden = "***@" if "@" in parts.netloc else ""
    tail = "?***" if parts.query or parts.fragment else ""
    return f"{parts.scheme}://{hidden}{host}{parts.path}{tail}" if parts.scheme else address.split("@")[-1]


def _check_token_ref(name: str, token_ref: str | None) -> str | None:
    if token_ref is None:
        return None
    if not isinstance(token_ref, str) or not _TOKEN_REF.fullmatch(token_ref):
        raise InvalidParameterError(
            f"The 'token_ref' parameter of compute '{name}' must name an environment variable that holds "
            "the token (1-64 letters, digits and '_', not starting with a digit), not the token itself.",
            hint="Put the token in a variable (export RAY_AUTH_TOKEN=...), then give its name: "
            "--token-env RAY_AUTH_TOKEN (token_env='RAY_AUTH_TOKEN' in Python).",
        )
    return token_ref


def is_loopback_address(address: str | None) -> bool:
    """Whether an address points at this machine only (127.0.0.0/8, ::1, localhost)."""
    if not address:
        return False
    host = urlsplit(address).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
