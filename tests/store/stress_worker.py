"""A process that logs metrics into one workspace (SQLite or PostgreSQL) as fast as it can."""

from __future__ import annotations

import time
from typing import Any

from modelbuilder.store import SqlAlchemyStore


def log_for(
    url: str, run_id: str, shared_run_id: str, index: int, seconds: float, barrier: Any, results: Any
) -> None:
    """Log ``acc`` to ``run_id`` one metric per transaction (every 5th a batch of 3) for ``seconds``;
    now and then also a metric, a heartbeat and a log line on the shared run. Report counts and errors."""
    report: dict[str, Any] = {
        "index": index,
        "logged": 0,
        "shared": 0,
        "lines": 0,
        "transactions": 0,
        "errors": [],
    }
    try:
        store = SqlAlchemyStore(url, workspace="stress")
        barrier.wait(timeout=120)
        deadline = time.monotonic() + seconds
        step = 0
        while time.monotonic() < deadline:
            size = 3 if step % 5 == 4 else 1
            store.log_metrics(run_id, [("acc", float(step + i), step + i, None) for i in range(size)])
            report["logged"] += size
            report["transactions"] += 1
            step += size
            if step % 10 < size:
                store.log_metrics(shared_run_id, [(f"worker-{index}", float(step), step, None)])
                report["shared"] += 1
                store.heartbeat(shared_run_id)
                store.log_lines(shared_run_id, [f"worker {index} at step {step}"])
                report["lines"] += 1
                report["transactions"] += 3
        store.close()
    except BaseException as exc:  # everything must reach the parent, which asserts there is nothing
        report["errors"].append(f"{type(exc).__name__}: {exc}")
    results.put(report)
