"""Data-parallel training on CPU: 1 vs 2 Ray Train workers (gloo) on the same data and seed.

    .venv/bin/python benchmarks/ddp_workers.py                      # samples/fashion-mnist-mini, 60 s
    .venv/bin/python benchmarks/ddp_workers.py --budget 120 --repeats 2

Starts one loopback Ray head (as tests/ray_head.py does: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, node address
127.0.0.1) and trains the gradient trial (partial_finetune) through the real path: a Ray compute of a CPU
size with --max-nodes 1, then 2 (one worker per node). The plan's batch is the global one, so both take
the same optimizer steps per epoch. Prints one JSON line per run (validation accuracy, training images/s
of the trial, machine load) and appends it to benchmarks/results/ddp_workers.jsonl; the head is stopped
by its own session at the end. Timings on a shared machine are noisy: compare runs of the same call.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import BENCH_DIR, emit, isolated_home

sys.path.insert(0, str(BENCH_DIR.parent / "tests"))  # the loopback head helper the tests use

from ray_head import start_ray_head  # noqa: E402

SAMPLE = BENCH_DIR.parent / "samples" / "fashion-mnist-mini"


def train_once(session: Any, address: str, workers: int, budget: int, seed: int) -> dict[str, Any]:
    from modelbuilder.compute import ComputeSpec
    from modelbuilder.entities import RunStatus
    from modelbuilder.services import runs, submit_training
    from modelbuilder.services.computes import create_compute
    from modelbuilder.training.config import TrainingConfig
    from modelbuilder.training.trials.partial import BATCH_SIZE

    name = f"ddp-{workers}-{os.urandom(3).hex()}"
    spec = ComputeSpec.create(name, "Standard_F2s_v2", backend="ray", address=address, max_nodes=workers)
    create_compute(session, spec)
    config = TrainingConfig(data=str(SAMPLE), time_budget=budget, strategies=("partial_finetune",), seed=seed)
    load_before = os.getloadavg()[0]
    submission = submit_training(session, config, compute=name)
    *_, last = runs.follow_run(session, submission.run.id, submission.worker, timeout=budget * 6 + 300)
    run = session.store.get_run(submission.run.id)
    if last.run.status is not RunStatus.COMPLETED:
        raise SystemExit(f"{workers}-worker run ended {last.run.status}: {run.error}")
    trial = session.store.list_child_runs(run.id)[0]
    metrics, trial_metrics = run.latest_metrics, trial.latest_metrics
    # Every epoch reports one train_loss; an epoch covers the training split once over all workers.
    epochs = len(session.store.get_metric_history(trial.id, "train_loss"))
    images = sum(1 for p in SAMPLE.rglob("*") if p.is_file())
    train_images = round(images * (1 - config.validation_fraction))
    seconds = float(trial_metrics.get("seconds") or 0.0)
    return {"workers": workers, "world_size": int(metrics.get("world_size", 1)),
            "val_accuracy": trial_metrics.get("val_accuracy"), "epochs": epochs,
            "steps_rank_0": metrics.get("steps_rank_0"), "global_batch": BATCH_SIZE,
            "trial_seconds": round(seconds, 1), "planned_epochs": trial.params.get("planned_epochs"),
            "train_images_per_s": round(epochs * train_images / seconds, 1) if seconds else None,
            "load_1min_before": round(load_before, 2), "load_1min_after": round(os.getloadavg()[0], 2),
            "budget_s": budget, "seed": seed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=60, help="time budget of each training, seconds")
    parser.add_argument("--repeats", type=int, default=1, help="pairs of (1, 2)-worker runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    home = isolated_home(Path(tempfile.mkdtemp(prefix="mb-ddp-")))
    from modelbuilder.services import open_workspace

    head = start_ray_head(num_cpus=2, root=home)
    try:
        session = open_workspace()
        try:
            for _ in range(args.repeats):
                for workers in (1, 2):
                    emit("ddp_workers", train_once(session, head.address, workers, args.budget, args.seed))
        finally:
            session.close()
    finally:
        head.stop()


if __name__ == "__main__":
    main()
