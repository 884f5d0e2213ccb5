"""Queries that read runs with their params and latest metrics, with filters, ordering and paging."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import EllipsisType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..entities import Run, RunStatus
from ..errors import InvalidParameterError
from . import _values as values
from .base import RUN_ORDER_FIELDS, ParentFilter
from .schema import experiments, latest_metrics, runs
from .schema import params as params_table

_RUN_COLUMNS = (*runs.c, experiments.c.name.label("experiment_name"))


def run_filters(
    experiment_id: str | None, parent_run_id: ParentFilter, statuses: Iterable[RunStatus] | None
) -> list[sa.ColumnElement[bool]]:
    where: list[sa.ColumnElement[bool]] = []
    if experiment_id is not None:
        where.append(runs.c.experiment_id == experiment_id)
    if parent_run_id is None:
        where.append(runs.c.parent_run_id.is_(None))
    elif not isinstance(parent_run_id, EllipsisType):
        where.append(runs.c.parent_run_id == parent_run_id)
    if statuses is not None:
        where.append(runs.c.status.in_([RunStatus(s).value for s in statuses]))
    return where


def run_order(order_by: Sequence[str]) -> tuple[list[Any], list[tuple[str, Any]], bool]:
    """SQL ORDER BY clauses, the metric joins they need, and whether the first one is descending."""
    clauses: list[Any] = []
    joins: list[tuple[str, Any]] = []
    first_desc = True
    for index, entry in enumerate([order_by] if isinstance(order_by, str) else order_by):
        parts = str(entry).split()
        field = parts[0] if parts else ""
        direction = parts[1].lower() if len(parts) == 2 else "asc" if len(parts) == 1 else "?"
        if field.startswith("metric.") and len(field) > 7:
            alias = latest_metrics.alias(f"order_metric_{len(joins)}")
            joins.append((field[7:], alias))
            column: Any = alias.c.value
        elif field in RUN_ORDER_FIELDS:
            column = runs.c[field]
        else:
            column = None
        if column is None or direction not in ("asc", "desc"):
            raise InvalidParameterError(
                f"The 'order_by' entry {entry!r} is not valid: expected one of "
                f"{', '.join(RUN_ORDER_FIELDS)} or metric.<key>, optionally followed by asc or desc.",
                hint="For example: order_by=['created_at desc'] or ['metric.accuracy desc'].",
            )
        if index == 0:
            first_desc = direction == "desc"
        clause = column.desc() if direction == "desc" else column.asc()
        clauses.append(clause if field == "number" else clause.nulls_last())
    clauses.append(runs.c.number.desc() if first_desc else runs.c.number.asc())
    return clauses, joins, first_desc


def query_runs(
    conn: Connection,
    where: list[sa.ColumnElement[bool]],
    limit: int | None = None,
    *,
    offset: int = 0,
    order_by: Sequence[str] = (),
) -> list[Run]:
    """Runs matching ``where`` with their params and latest metrics, in one read."""
    clauses, joins, _ = run_order(order_by or ("number asc",))
    source: Any = runs.join(experiments, runs.c.experiment_id == experiments.c.id)
    for key, alias in joins:
        source = source.outerjoin(alias, sa.and_(alias.c.run_id == runs.c.id, alias.c.key == key))
    query = sa.select(*_RUN_COLUMNS).select_from(source).where(*where).order_by(*clauses)
    if offset:
        query = query.offset(offset)
    if limit is not None:
        query = query.limit(limit)
    rows = conn.execute(query).all()
    if not rows:
        return []
    ids = [row.id for row in rows]
    run_params: dict[str, dict[str, Any]] = {run_id: {} for run_id in ids}
    for run_id, key, value in conn.execute(
        sa.select(params_table.c.run_id, params_table.c.key, params_table.c.value).where(
            params_table.c.run_id.in_(ids)
        )
    ):
        run_params[run_id][key] = values.decode_param(value)
    latest: dict[str, dict[str, float]] = {run_id: {} for run_id in ids}
    for run_id, key, value in conn.execute(
        sa.select(latest_metrics.c.run_id, latest_metrics.c.key, latest_metrics.c.value)
        .where(latest_metrics.c.run_id.in_(ids))
        .order_by(latest_metrics.c.key)
    ):
        latest[run_id][key] = values.metric_value_from_db(value)
    return [values.run_from_row(row, run_params[row.id], latest[row.id]) for row in rows]
