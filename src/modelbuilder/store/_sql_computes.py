"""Compute records on SQL: one name, one compute, whatever its provisioning state."""

from __future__ import annotations

import numbers
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from .. import hints
from ..entities import Compute, ProvisioningState
from ..errors import ComputeExistsError, ComputeNotFoundError, InvalidParameterError
from ..names import ENV_VAR_NAME, check_compute_name
from . import _values as values
from .base import check_compute_transition
from .engine import TransactionRunner
from .schema import computes


def compute_exists_error(compute: Compute) -> ComputeExistsError:
    """The errored-compute rule's error: names the state and its reason, and gives both fixes."""
    reason = f" ({compute.error})" if compute.error else ""
    where = f" in workspace '{compute.workspace}'" if compute.workspace else ""
    delete = hints.command("compute", "delete", compute.name, workspace=compute.workspace or None)
    return ComputeExistsError(
        f"Compute '{compute.name}' already exists{where} and is in state {compute.state.value}{reason}.",
        hint=f"Create it with another name, or delete it first: {delete}",
    )


def _check_count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise InvalidParameterError(
            f"The '{name}' parameter of a compute must be an int >= {minimum}. Got {value!r} instead.",
            hint=f"Give a whole number of at least {minimum}.",
        )
    return int(value)


def _check_token_ref(name: str, token_ref: object) -> str | None:
    """A token reference is an environment variable's name; the message never echoes a bad value, which
    may be the token itself."""
    if token_ref is None:
        return None
    if not isinstance(token_ref, str) or not ENV_VAR_NAME.fullmatch(token_ref):
        raise InvalidParameterError(
            f"The 'token_ref' of compute '{name}' must be the name of the environment variable that holds "
            "the token (1-64 letters, digits and '_', not starting with a digit), not the token itself.",
            hint="For example: export RAY_AUTH_TOKEN=...; then give RAY_AUTH_TOKEN.",
        )
    return token_ref


class ComputeTableMixin:
    """The compute half of SqlAlchemyStore (needs ``_tx``, ``_clock`` and ``workspace``)."""

    _tx: TransactionRunner
    _clock: Callable[[], float]
    _where: str
    workspace: str

    def _find_compute(self, conn: Connection, name: str) -> Compute | None:
        row = conn.execute(sa.select(computes).where(computes.c.name == name)).first()
        return None if row is None else values.compute_from_row(row, self.workspace)

    def create_compute(
        self,
        name: str,
        *,
        size: str,
        backend: str,
        state: ProvisioningState = ProvisioningState.CREATING,
        error: str | None = None,
        min_nodes: int = 0,
        max_nodes: int = 1,
        idle_seconds_before_scaledown: int = 1800,
        address: str | None = None,
        token_ref: str | None = None,
    ) -> Compute:
        check_compute_name(name)
        values.check_text(f"compute '{name}'", "size", size, 64, optional=False)
        values.check_text(f"compute '{name}'", "backend", backend, 32, optional=False)
        values.check_text(f"compute '{name}'", "address", address, 500)
        token_ref = _check_token_ref(name, token_ref)
        minimum = _check_count("min_nodes", min_nodes, 0)
        maximum = _check_count("max_nodes", max_nodes, 1)
        idle = _check_count("idle_seconds_before_scaledown", idle_seconds_before_scaledown, 0)
        if minimum > maximum:
            raise InvalidParameterError(
                f"The 'min_nodes' of compute '{name}' ({minimum}) must not exceed 'max_nodes' ({maximum}).",
                hint="Lower min_nodes or raise max_nodes.",
            )
        state = ProvisioningState(state)

        def create(conn: Connection) -> Compute:
            existing = self._find_compute(conn, name)
            if existing is not None:
                raise compute_exists_error(existing)
            now = self._clock()
            conn.execute(
                sa.insert(computes).values(
                    name=name,
                    size=size,
                    backend=backend,
                    state=state.value,
                    error=error,
                    min_nodes=minimum,
                    max_nodes=maximum,
                    idle_seconds_before_scaledown=idle,
                    address=address,
                    token_ref=token_ref,
                    created_at=now,
                    updated_at=now,
                )
            )
            created = self._find_compute(conn, name)
            assert created is not None
            return created

        try:
            return self._tx.write(create)
        except IntegrityError as exc:  # inserted meanwhile by a writer on a multi-writer server
            existing = self.find_compute(name)
            if existing is None:
                raise
            raise compute_exists_error(existing) from exc

    def find_compute(self, name: str) -> Compute | None:
        return self._tx.read(lambda conn: self._find_compute(conn, name))

    def get_compute(self, name: str) -> Compute:
        found = self.find_compute(name)
        if found is None:
            raise self._compute_not_found(name)
        return found

    def _compute_not_found(self, name: str) -> ComputeNotFoundError:
        workspace = self.workspace or None
        return ComputeNotFoundError(
            f"Compute '{name}' not found in {self._where}.",
            hint=f"List computes with: {hints.command('compute', 'list', workspace=workspace)}, or create it "
            f"with: {hints.command('compute', 'create', name, size='SIZE', workspace=workspace)}",
        )

    def list_computes(self) -> list[Compute]:
        rows = self._tx.read(lambda conn: conn.execute(sa.select(computes).order_by(computes.c.name)).all())
        return [values.compute_from_row(row, self.workspace) for row in rows]

    def set_compute_state(self, name: str, state: ProvisioningState, *, error: str | None = None) -> Compute:
        state = ProvisioningState(state)

        def change(conn: Connection) -> Compute:
            while True:
                current = self._find_compute(conn, name)
                if current is None:
                    raise self._compute_not_found(name)
                check_compute_transition(name, current.state, state)
                result = conn.execute(
                    sa.update(computes)
                    .where(computes.c.name == name, computes.c.state == current.state.value)
                    .values(state=state.value, error=error, updated_at=self._clock())
                )
                if result.rowcount == 1:
                    changed = self._find_compute(conn, name)
                    assert changed is not None
                    return changed

        return self._tx.write(change)

    def delete_compute(self, name: str) -> Compute:
        def delete(conn: Connection) -> Compute:
            current = self._find_compute(conn, name)
            if current is None:
                raise self._compute_not_found(name)
            conn.execute(sa.delete(computes).where(computes.c.name == name))
            return current

        return self._tx.write(delete)
