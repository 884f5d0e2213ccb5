#!/usr/bin/env bash
# GPU check (< 5 minutes), for a machine with NVIDIA GPUs: start a local Ray head (loopback) with the
# machine's GPUs, train samples/fashion-mnist-mini through the ray backend on CUDA (mixed precision; DDP
# over NCCL when there are 2+ GPUs), and assert that the run completes and that its accuracy matches a
# CPU run of the same data, seed and budget within noise.
#
#   scripts/gpu-check.sh            # budget 60 s per run
#   GPU_CHECK_BUDGET=90 scripts/gpu-check.sh
#
# Needs the [train] and [ray] extras in .venv (scripts/setup.sh). Prints the figures to report.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || { echo "gpu-check: $PY not found; run scripts/setup.sh first" >&2; exit 2; }

HOME_DIR=$(mktemp -d /tmp/mb-gpu-check-XXXXXX)
trap 'rm -rf "$HOME_DIR"' EXIT
export MODELBUILDER_HOME="$HOME_DIR/home" MODELBUILDER_NO_PROGRESS=1
export GPU_CHECK_BUDGET="${GPU_CHECK_BUDGET:-60}"

exec timeout 290 "$PY" - <<'EOF'
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, "tests")  # the test suite's loopback Ray head
import torch

from modelbuilder.compute import ComputeSpec
from modelbuilder.entities import ProvisioningState, RunStatus
from modelbuilder.services import open_workspace, runs, submit_training
from modelbuilder.services.computes import create_compute
from modelbuilder.training.config import TrainingConfig
from modelbuilder.training.devices import CPUStrategy
from modelbuilder.training.reporter import RecordingReporter
from modelbuilder.training.trainer import run_training
from ray_head import start_ray_head

#: Accuracy of the GPU run may differ from the CPU run's by this much (mixed precision, a different
#: number of steps in the same time, DDP's shards): 500 images, 9 classes.
TOLERANCE = 0.12

gpus = torch.cuda.device_count()
if gpus == 0:
    sys.exit("gpu-check: torch sees no CUDA GPU on this machine")
cpus = os.cpu_count() or 1
# One worker per GPU: a 2-GPU size trains with DDP; a 1-GPU size in the job's own process.
size = "Standard_NC12" if gpus >= 2 else "Standard_NC4as_T4_v3"
budget = float(os.environ["GPU_CHECK_BUDGET"])
data = Path("samples/fashion-mnist-mini").resolve()
config = TrainingConfig(data=str(data), time_budget=budget)
print(f"gpu-check: {gpus} GPU(s) ({torch.cuda.get_device_name(0)}), {cpus} CPUs; size {size}, "
      f"budget {budget:.0f}s", flush=True)

started = time.monotonic()
cpu = run_training(config, RecordingReporter(), Path(os.environ["MODELBUILDER_HOME"]) / "cpu-run",
                   strategy=CPUStrategy())
print(f"gpu-check: CPU run accuracy {cpu.accuracy:.4f} ({cpu.strategy}) in "
      f"{time.monotonic() - started:.0f}s", flush=True)

head = start_ray_head(num_cpus=min(cpus, 16), num_gpus=min(gpus, 2))
try:
    session = open_workspace()
    spec = ComputeSpec.create("gpu-check", size, backend="ray", address=head.address)
    state = create_compute(session, spec)
    assert state.state is ProvisioningState.SUCCEEDED, f"compute {state.state}: {state}"
    started = time.monotonic()
    submission = submit_training(session, config, compute="gpu-check")
    *_, last = runs.follow_run(session, submission.run.id, submission.worker, timeout=budget + 150)
    run = session.store.get_run(submission.run.id)
    assert last.run.status is RunStatus.COMPLETED, f"the GPU run ended {last.run.status}: {run.error}"
    metrics = run.latest_metrics
    print(f"gpu-check: GPU run accuracy {metrics['accuracy']:.4f} in {time.monotonic() - started:.0f}s; "
          f"world size {metrics.get('world_size', 1):.0f}, steps per rank "
          f"{[metrics[k] for k in sorted(metrics) if k.startswith('steps_rank_')]}", flush=True)
    if gpus >= 2:
        assert metrics["world_size"] == 2 and metrics["steps_rank_0"] == metrics["steps_rank_1"] > 0
    assert metrics["accuracy"] >= cpu.accuracy - TOLERANCE, (
        f"GPU accuracy {metrics['accuracy']:.4f} is below the CPU run's {cpu.accuracy:.4f} - {TOLERANCE}")
    session.close()
finally:
    head.stop()
print("gpu-check: OK")
EOF
