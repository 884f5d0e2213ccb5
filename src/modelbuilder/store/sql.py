"""``SqlAlchemyStore``: the metadata store on any SQLAlchemy database (SQLite file by default).

Every public method is one transaction: reads in a read transaction, writes in a write transaction
(``BEGIN IMMEDIATE`` on SQLite), retried on lock errors (see ``engine.py``). Rules are checked inside the
write transaction, and status changes are compare-and-set updates, so they hold across processes and on
databases without SQLite's single writer too.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import IntegrityError

from .. import hints
from ..entities import Experiment, ExperimentSummary, Run, RunError, RunStatus, check_run_transition
from ..errors import (
    ExperimentNotFoundError,
    InvalidParameterError,
    RunNotFoundError,
)
from ..names import check_experiment_name
from . import _values as values
from ._sql_computes import ComputeTableMixin
from ._sql_queries import query_runs, run_filters, run_order
from ._sql_records import RunRecordsMixin
from .base import DEFAULT_RUN_ORDER, WORKER_STATUSES, MetadataStore, ParentFilter
from .engine import (
    DEFAULT_BUSY_TIMEOUT_S,
    DEFAULT_RETRY_S,
    TransactionRunner,
    create_store_engine,
    describe_url,
    parse_url,
)
from .schema import STORE_SCHEMA, ensure_schema, experiments, read_version, runs
from .schema import params as params_table

logger = logging.getLogger(__name__)

MIN_PREFIX_LENGTH = 6
_HEX = re.compile(r"[0-9a-f]+")


class SqlAlchemyStore(ComputeTableMixin, RunRecordsMixin, MetadataStore):
    """The metadata store of one workspace on a SQLAlchemy URL; creates or migrates the schema on open.

    Args:
        url: ``sqlite:////abs/path/workspace.db``, ``sqlite://`` (in memory, for tests) or any
            SQLAlchemy URL such as ``postgresql://user@host/db``.
        workspace: the workspace name, used in entities and messages.
        busy_timeout_s: how long SQLite waits for a lock inside one attempt.
        retry_s: how long lock errors are retried before WorkspaceBusyError.
        clock: returns seconds since the epoch (tests pass a fake one).

    Raises:
        InvalidParameterError: the URL is malformed.
        SchemaVersionError: the database was written by a newer modelbuilder, or is not a workspace store.
        WorkspaceError / WorkspaceBusyError: the database cannot be opened.
    """

    def __init__(
        self,
        url: str | URL,
        *,
        workspace: str = "",
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        retry_s: float = DEFAULT_RETRY_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = parse_url(url)
        self.workspace = workspace
        self._clock = clock
        self._where = f"workspace '{workspace}'" if workspace else f"store {describe_url(self.url)}"
        self._tx = TransactionRunner(
            create_store_engine(self.url, busy_timeout_s=busy_timeout_s), retry_s=retry_s, what=self._where
        )
        try:
            ensure_schema(self._tx, STORE_SCHEMA, self._where, workspace=workspace or None)
        except BaseException:
            self._tx.dispose()
            raise

    def __repr__(self) -> str:
        return f"SqlAlchemyStore({describe_url(self.url)!r}, workspace={self.workspace!r})"

    @property
    def schema_version(self) -> str:
        return self._tx.read(lambda conn: read_version(conn, STORE_SCHEMA, self._where))

    def close(self) -> None:
        self._tx.dispose()

    def check_integrity(self) -> str:
        """``PRAGMA integrity_check`` on SQLite ("ok" when healthy); "ok" on servers that guard themselves."""
        if self.url.get_backend_name() != "sqlite":
            return "ok"
        rows = self._tx.read(lambda conn: conn.exec_driver_sql("PRAGMA integrity_check").scalars().all())
        return "\n".join(str(r) for r in rows)

    # --- experiments ------------------------------------------------------------------------------

    def get_or_create_experiment(self, name: str) -> Experiment:
        check_experiment_name(name)
        if (found := self.find_experiment(name)) is not None:
            return found

        def create(conn: Connection) -> Experiment:
            row = conn.execute(sa.select(experiments).where(experiments.c.name == name)).first()
            if row is None:
                new = {"id": uuid.uuid4().hex, "name": name, "created_at": self._clock()}
                conn.execute(sa.insert(experiments).values(**new))
                row = conn.execute(sa.select(experiments).where(experiments.c.id == new["id"])).one()
            return values.experiment_from_row(row, self.workspace)

        try:
            return self._tx.write(create)
        except IntegrityError:  # created meanwhile by another writer (servers without a single writer)
            return self.get_experiment(name)

    def find_experiment(self, name: str) -> Experiment | None:
        row = self._tx.read(
            lambda conn: conn.execute(sa.select(experiments).where(experiments.c.name == name)).first()
        )
        return None if row is None else values.experiment_from_row(row, self.workspace)

    def get_experiment(self, name: str) -> Experiment:
        found = self.find_experiment(name)
        if found is None:
            raise ExperimentNotFoundError(
                f"Experiment '{name}' not found in {self._where}.",
                hint="List experiments with: "
                + hints.command("experiment", "list", workspace=self.workspace or None),
            )
        return found

    def get_experiment_by_id(self, experiment_id: str) -> Experiment:
        row = self._tx.read(
            lambda conn: conn.execute(sa.select(experiments).where(experiments.c.id == experiment_id)).first()
        )
        if row is None:
            raise self._experiment_id_not_found(experiment_id)
        return values.experiment_from_row(row, self.workspace)

    def _experiment_id_not_found(self, experiment_id: str) -> ExperimentNotFoundError:
        return ExperimentNotFoundError(
            f"Experiment with id '{experiment_id}' not found in {self._where}.",
            hint="Get the experiment by name with get_or_create_experiment(name).",
        )

    def list_experiments(self) -> list[ExperimentSummary]:
        def read(conn: Connection) -> list[ExperimentSummary]:
            top = runs.c.parent_run_id.is_(None)
            counts: dict[str, int] = {
                experiment_id: int(count)
                for experiment_id, count in conn.execute(
                    sa.select(runs.c.experiment_id, sa.func.count()).where(top).group_by(runs.c.experiment_id)
                )
            }
            latest_numbers = (
                sa.select(sa.func.max(runs.c.number))
                .where(top)
                .group_by(runs.c.experiment_id)
                .scalar_subquery()
            )
            latest = {run.experiment_id: run for run in query_runs(conn, [runs.c.number.in_(latest_numbers)])}
            rows = conn.execute(sa.select(experiments).order_by(experiments.c.name)).all()
            return [
                ExperimentSummary(
                    values.experiment_from_row(row, self.workspace), counts.get(row.id, 0), latest.get(row.id)
                )
                for row in rows
            ]

        return self._tx.read(read)

    # --- runs -------------------------------------------------------------------------------------

    def create_run(
        self,
        experiment_id: str,
        *,
        compute: str | None = None,
        params: Mapping[str, Any] | None = None,
        dataset_fingerprint: str | None = None,
        parent_run_id: str | None = None,
        name: str | None = None,
        status: RunStatus = RunStatus.NOT_STARTED,
    ) -> Run:
        status = RunStatus(status)
        if status.is_terminal:
            raise InvalidParameterError(
                f"A new run must start in a non-terminal status. Got {status.value} instead.",
                hint="Create it as NotStarted or Queued, then move it with set_run_status.",
            )
        values.check_text("create_run", "name", name, values.MAX_KEY_LENGTH)
        values.check_text("create_run", "compute", compute, 64)
        values.check_text("create_run", "dataset_fingerprint", dataset_fingerprint, 128)
        encoded = values.encode_params(params)

        def create(conn: Connection) -> Run:
            if (
                conn.execute(sa.select(experiments.c.id).where(experiments.c.id == experiment_id)).first()
                is None
            ):
                raise self._experiment_id_not_found(experiment_id)
            parent_id: str | None = None
            if parent_run_id is not None:
                parent_id = self._resolve_run_id(conn, parent_run_id)
                parent = conn.execute(sa.select(runs.c.experiment_id).where(runs.c.id == parent_id)).one()
                if parent.experiment_id != experiment_id:
                    raise InvalidParameterError(
                        f"A child run must be in its parent's experiment: run '{parent_id}' is in experiment "
                        f"'{parent.experiment_id}', not '{experiment_id}'.",
                        hint="Create the child run with the parent's experiment_id.",
                    )
            now = self._clock()
            number = conn.execute(sa.select(sa.func.coalesce(sa.func.max(runs.c.number), 0))).scalar_one() + 1
            run_id = uuid.uuid4().hex
            started = now if status in (RunStatus.PREPARING, RunStatus.RUNNING) else None
            conn.execute(
                sa.insert(runs).values(
                    id=run_id,
                    number=number,
                    experiment_id=experiment_id,
                    parent_run_id=parent_id,
                    name=name,
                    status=status.value,
                    compute=compute,
                    dataset_fingerprint=dataset_fingerprint,
                    created_at=now,
                    started_at=started,
                    heartbeat_at=started,
                    log_line_count=0,
                )
            )
            if encoded:
                conn.execute(
                    sa.insert(params_table),
                    [{"run_id": run_id, "key": k, "value": v} for k, v in encoded.items()],
                )
            return self._load_run(conn, run_id)

        for attempt in range(5):
            try:
                return self._tx.write(create)
            except IntegrityError:  # run number taken by a concurrent writer on a multi-writer server
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def _run_not_found(self, run_id: str) -> RunNotFoundError:
        return RunNotFoundError(
            f"Run '{run_id}' not found in {self._where}.",
            hint="List runs with: " + hints.command("run", "list", workspace=self.workspace or None),
        )

    def _resolve_run_id(self, conn: Connection, run_id: str) -> str:
        """The full id of the run with id or unique prefix ``run_id``."""
        if not isinstance(run_id, str):
            raise self._run_not_found(str(run_id))
        if conn.execute(sa.select(runs.c.id).where(runs.c.id == run_id)).first() is not None:
            return run_id
        prefix = run_id.lower()
        if len(prefix) >= MIN_PREFIX_LENGTH and _HEX.fullmatch(prefix):
            matches = (
                conn.execute(
                    sa.select(runs.c.id).where(runs.c.id.like(prefix + "%")).order_by(runs.c.id).limit(5)
                )
                .scalars()
                .all()
            )
            if len(matches) == 1:
                return matches[0]
            if matches:
                raise InvalidParameterError(
                    f"Run id prefix '{run_id}' matches several runs ({', '.join(matches)}...).",
                    hint="Give more characters of the run id.",
                )
        raise self._run_not_found(run_id)

    def _load_run(self, conn: Connection, run_id: str) -> Run:
        found = query_runs(conn, [runs.c.id == run_id])
        if not found:
            raise self._run_not_found(run_id)
        return found[0]

    def find_run(self, run_id: str) -> Run | None:
        try:
            return self.get_run(run_id)
        except RunNotFoundError:
            return None

    def get_run(self, run_id: str) -> Run:
        return self._tx.read(lambda conn: self._load_run(conn, self._resolve_run_id(conn, run_id)))

    def list_runs(
        self,
        experiment_id: str | None = None,
        *,
        parent_run_id: ParentFilter = ...,
        statuses: Iterable[RunStatus] | None = None,
        offset: int = 0,
        limit: int | None = 100,
        order_by: Sequence[str] = DEFAULT_RUN_ORDER,
    ) -> list[Run]:
        values.check_page(offset, limit)
        run_order(order_by)  # validate before touching the database
        where = run_filters(experiment_id, parent_run_id, statuses)
        if limit == 0:
            return []
        return self._tx.read(lambda conn: query_runs(conn, where, limit, offset=offset, order_by=order_by))

    def count_runs(
        self,
        experiment_id: str | None = None,
        *,
        parent_run_id: ParentFilter = ...,
        statuses: Iterable[RunStatus] | None = None,
    ) -> int:
        where = run_filters(experiment_id, parent_run_id, statuses)
        return int(
            self._tx.read(
                lambda conn: conn.execute(
                    sa.select(sa.func.count()).select_from(runs).where(*where)
                ).scalar_one()
            )
        )

    def set_run_status(
        self, run_id: str, status: RunStatus, *, error: RunError | None = None, phase: str | None = None
    ) -> Run:
        status = RunStatus(status)
        values.check_text("set_run_status", "phase", phase, values.MAX_KEY_LENGTH)

        def change(conn: Connection) -> Run:
            full_id = self._resolve_run_id(conn, run_id)
            while True:
                row = conn.execute(
                    sa.select(runs.c.status, runs.c.started_at).where(runs.c.id == full_id)
                ).one()
                current = RunStatus(row.status)
                check_run_transition(full_id, current, status)
                now = self._clock()
                update: dict[str, Any] = {"status": status.value}
                if status in (RunStatus.PREPARING, RunStatus.RUNNING) and row.started_at is None:
                    update["started_at"] = now
                if status in (RunStatus.PREPARING, RunStatus.RUNNING, RunStatus.FINALIZING):
                    update["heartbeat_at"] = now
                if status.is_terminal:
                    update["ended_at"] = now
                if error is not None:
                    update.update(values.run_error_columns(error))
                if phase is not None:
                    update["phase"] = phase
                # Compare-and-set: only if nobody changed the status since we read it.
                result = conn.execute(
                    sa.update(runs)
                    .where(runs.c.id == full_id, runs.c.status == current.value)
                    .values(**update)
                )
                if result.rowcount == 1:
                    logger.debug("Run %s: %s -> %s", full_id, current.value, status.value)
                    return self._load_run(conn, full_id)

        return self._tx.write(change)

    def set_run_phase(self, run_id: str, phase: str | None) -> Run:
        values.check_text("set_run_phase", "phase", phase, values.MAX_KEY_LENGTH)

        def change(conn: Connection) -> Run:
            full_id = self._resolve_run_id(conn, run_id)
            conn.execute(sa.update(runs).where(runs.c.id == full_id).values(phase=phase))
            return self._load_run(conn, full_id)

        return self._tx.write(change)

    def heartbeat(self, run_id: str) -> RunStatus:
        def beat(conn: Connection) -> RunStatus:
            full_id = self._resolve_run_id(conn, run_id)
            active = [s.value for s in RunStatus if not s.is_terminal]
            conn.execute(
                sa.update(runs)
                .where(runs.c.id == full_id, runs.c.status.in_(active))
                .values(heartbeat_at=self._clock())
            )
            return RunStatus(conn.execute(sa.select(runs.c.status).where(runs.c.id == full_id)).scalar_one())

        return self._tx.write(beat)

    def find_stale_runs(self, older_than_seconds: float) -> list[Run]:
        cutoff = self._clock() - older_than_seconds
        last_sign = sa.func.coalesce(runs.c.heartbeat_at, runs.c.started_at, runs.c.created_at)
        where = [runs.c.status.in_([s.value for s in WORKER_STATUSES]), last_sign < cutoff]
        return self._tx.read(lambda conn: query_runs(conn, where))
