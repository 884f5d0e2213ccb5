"""With 1,000 runs in an experiment, the run list answers in under 300 ms and the page stays paginated."""

from __future__ import annotations

import json
import time
import uuid

import sqlalchemy as sa
from fastapi.testclient import TestClient
from portal_fixtures import WORKSPACE, PortalWorld

from modelbuilder.store.engine import create_store_engine
from modelbuilder.store.schema import latest_metrics, params, runs

RUNS = 1000
BUDGET_S = 0.3


def bulk_create_runs(world: PortalWorld, experiment: str, count: int) -> list[str]:
    """``count`` finished runs with params and an accuracy, inserted in ONE transaction into the store's
    own tables (``create_run`` is one transaction per run: ~3 s for 1,000 on a slow disk)."""
    exp = world.store.get_or_create_experiment(experiment)
    now = time.time() - count
    ids = [uuid.uuid4().hex for _ in range(count)]
    statuses = ["Completed", "Failed", "Canceled", "Completed"]
    engine = create_store_engine(world.workspace.store_url)
    try:
        with engine.begin() as conn:
            first = conn.execute(sa.select(sa.func.coalesce(sa.func.max(runs.c.number), 0))).scalar_one() + 1
            conn.execute(
                sa.insert(runs),
                [
                    {
                        "id": run_id,
                        "number": first + i,
                        "experiment_id": exp.id,
                        "parent_run_id": None,
                        "name": f"run-{i:04d}",
                        "status": statuses[i % 4],
                        "compute": "local",
                        "created_at": now + i,
                        "started_at": now + i + 0.5,
                        "ended_at": now + i + 30,
                        "log_line_count": 0,
                    }
                    for i, run_id in enumerate(ids)
                ],
            )
            conn.execute(
                sa.insert(params),
                [
                    {"run_id": run_id, "key": key, "value": json.dumps(value)}
                    for i, run_id in enumerate(ids)
                    for key, value in (("architecture", "resnet50"), ("time_budget", 60), ("seed", i))
                ],
            )
            conn.execute(
                sa.insert(latest_metrics),
                [
                    {
                        "run_id": run_id,
                        "key": "accuracy",
                        "value": (i * 37 % 1000) / 1000,
                        "step": 0,
                        "timestamp": now + i,
                    }
                    for i, run_id in enumerate(ids)
                ],
            )
    finally:
        engine.dispose()
    assert world.store.count_runs(exp.id, parent_run_id=None) == count
    return ids


def _timed(client: TestClient, url: str) -> tuple[float, dict]:  # type: ignore[type-arg]
    started = time.perf_counter()
    response = client.get(url)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    return elapsed, response.json() if "json" in response.headers["content-type"] else {}


def test_run_list_of_1000_runs_answers_in_under_300_ms(client: TestClient, world: PortalWorld) -> None:
    ids = bulk_create_runs(world, "big", RUNS)
    api = f"/api/workspaces/{WORKSPACE}/experiments/big/runs"
    client.get(api)  # the first request opens the workspace store
    cases = [
        f"{api}",
        f"{api}?offset=950&limit=50",
        f"{api}?order_by=accuracy%20desc&limit=100",
        f"{api}?order_by=status%20asc&offset=500",
        f"{api}?limit=500",
    ]
    for url in cases:
        best = min(_timed(client, url)[0] for _ in range(3))
        assert best < BUDGET_S, f"{url} took {best * 1000:.0f} ms"
    _, first = _timed(client, f"{api}?limit=50")
    assert first["total"] == RUNS and len(first["items"]) == 50
    assert first["items"][0]["id"] == ids[-1]  # newest first
    _, last = _timed(client, f"{api}?offset=950&limit=50")
    assert last["items"][-1]["id"] == ids[0]
    _, by_accuracy = _timed(client, f"{api}?order_by=accuracy%20desc&limit=3")
    assert [r["accuracy"] for r in by_accuracy["items"]] == [0.999, 0.998, 0.997]
    # The experiment page shows one page of 50 with a pager, also quickly.
    page_time = min(_timed(client, f"/workspaces/{WORKSPACE}/experiments/big?page=20")[0] for _ in range(3))
    assert page_time < BUDGET_S * 2
    html = client.get(f"/workspaces/{WORKSPACE}/experiments/big?page=20").text
    assert "page 20 of 20" in html and html.count('name="run"') == 50
    home_time = min(_timed(client, "/")[0] for _ in range(3))
    assert home_time < BUDGET_S
