"""What a run accumulates, on SQL: params, metric histories, latest metrics, log lines, artifact records."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..entities import Artifact, LogLine, Metric, RunStatus
from ..errors import InvalidStateError
from . import _values as values
from .base import MetricInput
from .engine import TransactionRunner
from .schema import artifacts, latest_metrics, log_lines, runs
from .schema import metrics as metrics_table
from .schema import params as params_table


class RunRecordsMixin:
    """The run-record half of SqlAlchemyStore (needs ``_tx``, ``_clock`` and ``_resolve_run_id``)."""

    _tx: TransactionRunner
    _clock: Callable[[], float]

    def _resolve_run_id(self, conn: Connection, run_id: str) -> str:
        raise NotImplementedError

    def _open_run_id(self, conn: Connection, run_id: str, what: str) -> str:
        """The full id of a run that still accepts records; InvalidStateError when it is terminal."""
        full_id = self._resolve_run_id(conn, run_id)
        status = RunStatus(conn.execute(sa.select(runs.c.status).where(runs.c.id == full_id)).scalar_one())
        if status.is_terminal:
            raise InvalidStateError(
                f"Run '{full_id}' is {status.value}: it accepts no more {what}.",
                hint="Terminal runs never change; start a new run instead.",
            )
        return full_id

    # --- params -----------------------------------------------------------------------------------

    def log_params(self, run_id: str, params: Mapping[str, Any], *, overwrite: bool = False) -> None:
        encoded = values.encode_params(params)
        if not encoded:
            return

        def write(conn: Connection) -> None:
            full_id = self._open_run_id(conn, run_id, "params")
            existing: dict[str, str] = {
                key: value
                for key, value in conn.execute(
                    sa.select(params_table.c.key, params_table.c.value).where(
                        params_table.c.run_id == full_id, params_table.c.key.in_(list(encoded))
                    )
                )
            }
            for key, text in encoded.items():
                if key not in existing:
                    conn.execute(sa.insert(params_table).values(run_id=full_id, key=key, value=text))
                elif values.decode_param(existing[key]) != values.decode_param(text):
                    if not overwrite:
                        raise InvalidStateError(
                            f"Param '{key}' of run '{full_id}' is already {existing[key]}; "
                            f"cannot change it to {text}.",
                            hint="Params record what a run was started with; pass overwrite=True to "
                            "correct one on purpose.",
                        )
                    conn.execute(
                        sa.update(params_table)
                        .where(params_table.c.run_id == full_id, params_table.c.key == key)
                        .values(value=text)
                    )

        self._tx.write(write)

    # --- metrics ----------------------------------------------------------------------------------

    def log_metrics(self, run_id: str, metrics: Iterable[MetricInput]) -> int:
        batch = values.normalise_metrics(metrics, self._clock())
        if not batch:
            return 0
        newest: dict[str, tuple[str, float, int, float]] = {}
        for item in batch:
            key, _, step, timestamp = item
            if key not in newest or (step, timestamp) >= (newest[key][2], newest[key][3]):
                newest[key] = item

        def write(conn: Connection) -> int:
            full_id = self._open_run_id(conn, run_id, "metrics")
            # The run's row lock serialises writers of one run's latest_metrics on servers with many writers
            # (PostgreSQL); SQLite has one writer anyway and ignores FOR UPDATE.
            conn.execute(sa.select(runs.c.id).where(runs.c.id == full_id).with_for_update())
            conn.execute(
                sa.insert(metrics_table),
                [
                    {
                        "run_id": full_id,
                        "key": key,
                        "value": values.metric_value_to_db(value),
                        "step": step,
                        "timestamp": timestamp,
                    }
                    for key, value, step, timestamp in batch
                ],
            )
            current = {
                row.key: (row.step, row.timestamp)
                for row in conn.execute(
                    sa.select(latest_metrics.c.key, latest_metrics.c.step, latest_metrics.c.timestamp).where(
                        latest_metrics.c.run_id == full_id, latest_metrics.c.key.in_(list(newest))
                    )
                )
            }
            for key, value, step, timestamp in newest.values():
                row = {"value": values.metric_value_to_db(value), "step": step, "timestamp": timestamp}
                if key not in current:
                    conn.execute(sa.insert(latest_metrics).values(run_id=full_id, key=key, **row))
                elif (step, timestamp) >= current[key]:
                    conn.execute(
                        sa.update(latest_metrics)
                        .where(latest_metrics.c.run_id == full_id, latest_metrics.c.key == key)
                        .values(**row)
                    )
            return len(batch)

        return self._tx.write(write)

    def _metric_query(self, conn: Connection, run_id: str, key: str | None) -> list[sa.Row[Any]]:
        full_id = self._resolve_run_id(conn, run_id)
        query = sa.select(metrics_table).where(metrics_table.c.run_id == full_id)
        if key is not None:
            query = query.where(metrics_table.c.key == key)
        return list(
            conn.execute(
                query.order_by(
                    metrics_table.c.key, metrics_table.c.step, metrics_table.c.timestamp, metrics_table.c.id
                )
            )
        )

    @staticmethod
    def _metric(row: sa.Row[Any]) -> Metric:
        return Metric(row.key, values.metric_value_from_db(row.value), row.step, row.timestamp)

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        rows = self._tx.read(lambda conn: self._metric_query(conn, run_id, key))
        return [self._metric(row) for row in rows]

    def get_metric_histories(self, run_id: str) -> dict[str, list[Metric]]:
        histories: dict[str, list[Metric]] = {}
        for row in self._tx.read(lambda conn: self._metric_query(conn, run_id, None)):
            histories.setdefault(row.key, []).append(self._metric(row))
        return histories

    def get_latest_metrics(self, run_id: str) -> dict[str, Metric]:
        def read(conn: Connection) -> list[sa.Row[Any]]:
            full_id = self._resolve_run_id(conn, run_id)
            query = sa.select(latest_metrics).where(latest_metrics.c.run_id == full_id)
            return list(conn.execute(query.order_by(latest_metrics.c.key)))

        return {row.key: self._metric(row) for row in self._tx.read(read)}

    # --- log lines --------------------------------------------------------------------------------

    def log_lines(self, run_id: str, lines: Iterable[str], *, timestamp: float | None = None) -> int:
        texts = [part for line in lines for part in (str(line).splitlines() or [""])]
        when = self._clock() if timestamp is None else float(timestamp)

        def write(conn: Connection) -> int:
            full_id = self._resolve_run_id(conn, run_id)
            counted = sa.select(runs.c.log_line_count).where(runs.c.id == full_id)
            if not texts:
                return int(conn.execute(counted).scalar_one())
            # Count first, in one UPDATE: it takes the run's row lock, so concurrent writers on a server
            # (PostgreSQL, read committed) number their lines one after the other instead of alike.
            conn.execute(
                sa.update(runs)
                .where(runs.c.id == full_id)
                .values(log_line_count=runs.c.log_line_count + len(texts))
            )
            total = int(conn.execute(counted).scalar_one())
            count = total - len(texts)
            conn.execute(
                sa.insert(log_lines),
                [
                    {"run_id": full_id, "number": count + i, "timestamp": when, "text": text}
                    for i, text in enumerate(texts)
                ],
            )
            return total

        return self._tx.write(write)

    def get_log_lines(self, run_id: str, offset: int = 0, limit: int | None = 1000) -> list[LogLine]:
        values.check_page(abs(offset) if isinstance(offset, int) else offset, limit)

        def read(conn: Connection) -> list[LogLine]:
            full_id = self._resolve_run_id(conn, run_id)
            start = offset
            if offset < 0:
                count = conn.execute(
                    sa.select(runs.c.log_line_count).where(runs.c.id == full_id)
                ).scalar_one()
                start = max(0, int(count) + offset)
            query = (
                sa.select(log_lines)
                .where(log_lines.c.run_id == full_id, log_lines.c.number >= start)
                .order_by(log_lines.c.number)
            )
            if limit is not None:
                query = query.limit(limit)
            return [LogLine(row.number, row.timestamp, row.text) for row in conn.execute(query)]

        return self._tx.read(read)

    def count_log_lines(self, run_id: str) -> int:
        def read(conn: Connection) -> int:
            full_id = self._resolve_run_id(conn, run_id)
            return int(
                conn.execute(sa.select(runs.c.log_line_count).where(runs.c.id == full_id)).scalar_one()
            )

        return self._tx.read(read)

    # --- artifact records -------------------------------------------------------------------------

    def log_artifact(self, run_id: str, path: str, size: int, sha256: str) -> Artifact:
        values.check_artifact_record(path, size, sha256)

        def write(conn: Connection) -> Artifact:
            full_id = self._open_run_id(conn, run_id, "artifacts")
            conn.execute(sa.delete(artifacts).where(artifacts.c.run_id == full_id, artifacts.c.path == path))
            conn.execute(
                sa.insert(artifacts).values(
                    run_id=full_id, path=path, size=size, sha256=sha256, created_at=self._clock()
                )
            )
            return Artifact(path, size, sha256)

        return self._tx.write(write)

    def list_artifacts(self, run_id: str) -> list[Artifact]:
        def read(conn: Connection) -> list[Artifact]:
            full_id = self._resolve_run_id(conn, run_id)
            query = sa.select(artifacts).where(artifacts.c.run_id == full_id).order_by(artifacts.c.path)
            return [Artifact(row.path, row.size, row.sha256) for row in conn.execute(query)]

        return self._tx.read(read)
