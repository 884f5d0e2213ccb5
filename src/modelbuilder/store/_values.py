"""Validation and conversion of the values a store receives and returns (params, metrics, times, rows)."""

from __future__ import annotations

import enum
import json
import math
import numbers
import operator
import os
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from ..artifacts.paths import check_artifact_name
from ..entities import Compute, Experiment, Metric, ProvisioningState, Run, RunError, RunStatus
from ..errors import InvalidParameterError

MAX_KEY_LENGTH = 250
_SHA256 = re.compile(r"[0-9a-f]{64}")


def to_datetime(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, tz=timezone.utc)


def _json_default(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(type(value).__name__)


def encode_param(key: object, value: Any) -> tuple[str, str]:
    """Check a param key and turn its value into JSON text (paths and enums become strings).

    Raises:
        InvalidParameterError: the key is not a short string, or the value cannot be written as JSON.
    """
    check_key("param", key)
    assert isinstance(key, str)
    try:
        return key, json.dumps(value, sort_keys=True, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise InvalidParameterError(
            f"The value of param '{key}' must be JSON-serialisable (numbers, strings, lists, dicts, "
            f"paths). Got {type(value).__name__} instead.",
            hint="Convert it to a string or a number before logging it.",
        ) from exc


def encode_params(params: Mapping[str, Any] | None) -> dict[str, str]:
    return dict(encode_param(key, value) for key, value in (params or {}).items())


def decode_param(text: str) -> Any:
    return json.loads(text)


def check_text(owner: str, name: str, value: object, max_length: int, *, optional: bool = True) -> None:
    """Check a short text field against its column size (SQLite would store anything; servers refuse).

    Raises:
        InvalidParameterError: not a string (or None when optional), empty, or too long.
    """
    if value is None and optional:
        return
    if not isinstance(value, str) or not 1 <= len(value) <= max_length or "\x00" in value:
        raise InvalidParameterError(
            f"The '{name}' parameter of {owner} must be a string of 1 to {max_length} characters"
            + (" or None" if optional else "")
            + f". Got {value!r} instead.",
            hint=f"Give a shorter '{name}'.",
        )


def check_key(kind: str, key: object) -> None:
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH or "\x00" in key:
        raise InvalidParameterError(
            f"A {kind} key must be a string of 1 to {MAX_KEY_LENGTH} characters. Got {key!r} instead.",
            hint=f"Name the {kind} with a short string such as 'accuracy'.",
        )


def normalise_metrics(
    metrics: Iterable[Metric | tuple[str, float, int, float | None]], now: float
) -> list[tuple[str, float, int, float]]:
    """Check metric inputs and return ``(key, value, step, timestamp)`` tuples.

    Raises:
        InvalidParameterError: a key, value, step or timestamp is invalid.
    """
    result: list[tuple[str, float, int, float]] = []
    for item in metrics:
        timestamp: float | None
        if isinstance(item, Metric):
            key, value, step, timestamp = item.key, item.value, item.step, item.timestamp
        else:
            try:
                key, value, step, timestamp = item
            except (TypeError, ValueError) as exc:
                raise InvalidParameterError(
                    f"A metric must be a Metric or a (key, value, step, timestamp) tuple. Got {item!r}.",
                    hint="Pass timestamp None to use the current time.",
                ) from exc
        check_key("metric", key)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise InvalidParameterError(
                f"The value of metric '{key}' must be a number. Got {value!r} instead.",
                hint="Log numbers only; put text in the run's log.",
            )
        try:
            step_int = operator.index(step)
        except TypeError as exc:
            raise InvalidParameterError(
                f"The step of metric '{key}' must be an integer. Got {step!r} instead.",
                hint="Use the epoch or iteration number as the step.",
            ) from exc
        if timestamp is None:
            when = now
        elif (
            isinstance(timestamp, bool)
            or not isinstance(timestamp, numbers.Real)
            or not math.isfinite(timestamp)
        ):
            raise InvalidParameterError(
                f"The timestamp of metric '{key}' must be seconds since the epoch. Got {timestamp!r}.",
                hint="Pass None to use the current time.",
            )
        else:
            when = float(timestamp)
        result.append((key, float(value), step_int, when))
    return result


def metric_value_to_db(value: float) -> float | None:
    return None if math.isnan(value) else value


def metric_value_from_db(value: float | None) -> float:
    return math.nan if value is None else float(value)


def check_artifact_record(path: object, size: object, sha256: object) -> None:
    check_artifact_name(path)  # the database never records a path that could leave the run's folder
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidParameterError(
            f"The size of artifact '{path}' must be an int >= 0. Got {size!r} instead.",
            hint="Record the size in bytes of the written file.",
        )
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise InvalidParameterError(
            f"The sha256 of artifact '{path}' must be 64 lowercase hex digits. Got {sha256!r} instead.",
            hint="Use modelbuilder.fileio.sha256_file(path).",
        )


def check_page(offset: object, limit: object) -> None:
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidParameterError(
            f"The 'offset' parameter must be an int >= 0. Got {offset!r} instead.",
            hint="Start at offset 0.",
        )
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InvalidParameterError(
            f"The 'limit' parameter must be None or an int >= 0. Got {limit!r} instead.",
            hint="Use None for no limit.",
        )


def experiment_from_row(row: sa.Row[Any], workspace: str) -> Experiment:
    return Experiment(id=row.id, name=row.name, workspace=workspace, created_at=to_datetime(row.created_at))  # type: ignore[arg-type]


#: How a run's hint was packed into its error text before the error became three fields.
_PACKED_HINT = "\nHint: "


def run_error_from_row(row: sa.Row[Any]) -> RunError | None:
    """The run's error from its ``error``, ``error_type`` and ``error_hint`` columns (None without one)."""
    if row.error is None:
        return None
    message, hint, kind = row.error, row.error_hint, row.error_type
    if kind is None and hint is None and _PACKED_HINT in message:
        message, _, hint = message.partition(_PACKED_HINT)  # written by an older modelbuilder
    return RunError(kind or "TrainingError", message, hint)


def run_error_columns(error: RunError) -> dict[str, Any]:
    """The columns that store a run's error."""
    return {"error": error.message, "error_type": error.type[:100], "error_hint": error.hint}


def run_from_row(row: sa.Row[Any], params: dict[str, Any], latest: dict[str, float]) -> Run:
    return Run(
        id=row.id,
        experiment_id=row.experiment_id,
        experiment=row.experiment_name,
        status=RunStatus(row.status),
        compute=row.compute,
        parent_run_id=row.parent_run_id,
        name=row.name,
        params=params,
        dataset_fingerprint=row.dataset_fingerprint,
        created_at=to_datetime(row.created_at),
        started_at=to_datetime(row.started_at),
        ended_at=to_datetime(row.ended_at),
        heartbeat_at=to_datetime(row.heartbeat_at),
        error=run_error_from_row(row),
        phase=row.phase,
        latest_metrics=latest,
    )


def compute_from_row(row: sa.Row[Any], workspace: str) -> Compute:
    return Compute(
        name=row.name,
        workspace=workspace,
        size=row.size,
        backend=row.backend,
        state=ProvisioningState(row.state),
        error=row.error,
        min_nodes=row.min_nodes,
        max_nodes=row.max_nodes,
        idle_seconds_before_scaledown=row.idle_seconds_before_scaledown,
        address=row.address,
        created_at=to_datetime(row.created_at),
        token_ref=row.token_ref,
    )
