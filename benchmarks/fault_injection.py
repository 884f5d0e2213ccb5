"""Fault injection: SIGKILL the training worker of real runs at random moments, then fill the disk.

Real runs through the local backend (a worker process running the real trainer on the ``test_tiny``
backbone), in a fresh workspace. For each kill point the script

1. submits a run and watches its run log (written by the worker as it goes) and its status, until the run
   reaches the chosen phase (scan, features, a trial, export, codegen, artifact upload), waits a random
   moment inside it, and SIGKILLs the worker's process group;
2. reaps lost runs as the portal does (``services.runs.reap_lost_runs``, every 0.5 s, no CLI command) and
   times how long until the run is ``Failed (process lost)``; a run still active after 30 s is *stuck*;
3. checks the run's artifacts: every recorded artifact exists with its size and sha256 (none listed
   without its file, none half-written), and counts temp files left next to them (never listed);
4. resumes it (``--resume``: a new run from its checkpoints) and checks the resumed run completes with
   verified outputs.

Then the full-disk case: a small tmpfs mounted over a workspace's artifact root (root only), a run whose
outputs do not fit -> the run must fail with a clear "no space" WorkspaceError and nothing half-written
listed.

    .venv/bin/python benchmarks/fault_injection.py            # 20 kills + full disk: ~6 min, 2 busy cores
    .venv/bin/python benchmarks/fault_injection.py --kills 7  # one per phase

Prints one JSON line (see benchmarks/README.md) with the figures.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _common import CACHE_DIR, common_arguments, emit, isolated_home, setup_logging
from PIL import Image

from modelbuilder.entities import Run, RunStatus
from modelbuilder.services import runs as run_service
from modelbuilder.services.training_run import Submission, resume_training, submit_training
from modelbuilder.services.workspaces import WorkspaceSession, create_workspace, open_workspace
from modelbuilder.store import lifecycle
from modelbuilder.training.config import TrainingConfig

logger = logging.getLogger("benchmarks")

#: Where to kill, in the order a run goes through them. ``log`` phases are seen in the run log, ``upload``
#: when the run is Finalizing (its outputs being recorded as artifacts).
PHASES: list[tuple[str, str]] = [
    ("scan", "[scanning]"),
    ("features", "[features]"),
    ("trial 1", "[trial]"),
    ("trial 2", "[trial]#2"),
    ("export", "[export]"),
    ("codegen", "[codegen]"),
    ("artifact upload", "@finalizing"),
]
#: Log markers in the order a run writes them, to tell where a kill landed.
_MARKERS = ("[scanning]", "[features]", "[trial]", "[export]", "[codegen]")
LOST_WITHIN_S = 30.0
LONG_PHASES = ("features", "trial 1", "trial 2")
LONG_PHASE_DELAY_S = 0.15
REQUIRED_OUTPUTS = ("bestModel.onnx", "bestModelMap.json", "MLModel.zip")


@dataclass
class Kill:
    phase: str
    delay_s: float
    budget_s: float
    killed: bool = False
    landed_in: str = ""
    reason: str = ""
    lost_after_s: float | None = None
    final_status: str = ""
    error: str = ""
    recorded_artifacts: int = 0
    bad_artifacts: list[str] = field(default_factory=list)
    temp_files: int = 0
    resumed: str = ""
    resumed_bad_artifacts: list[str] = field(default_factory=list)


def make_data(root: Path, classes: int = 3, per_class: int = 40, size: int = 48, seed: int = 0) -> Path:
    """Labelled PNGs that the tiny backbone can learn (a colour and stripes per class, plus noise)."""
    colours = [(220, 40, 40), (40, 200, 60), (40, 70, 220)]
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"label{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.tile(np.array(colours[c], np.float32), (size, size, 1)) * 0.6
            pixels += rng.normal(0, 18, (size, size, 3))
            pixels[:: c + 2] = 255 - pixels[:: c + 2]
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{c}_{i}.png")
    return root


def _log_text(session: WorkspaceSession, run_id: str) -> str:
    try:
        return session.run_folders(run_id).log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _reached(session: WorkspaceSession, run_id: str, marker: str) -> bool | None:
    """True once the run reached ``marker``; None when it ended without reaching it."""
    run = session.store.get_run(run_id)
    if marker == "@finalizing":
        if run.status is RunStatus.FINALIZING or (
            run.status is RunStatus.CANCEL_REQUESTED and session.store.list_artifacts(run_id)
        ):
            return True
    else:
        text, _, count = marker.partition("#")
        if _log_text(session, run_id).count(text) >= int(count or 1):
            return True
    return None if run.status.is_terminal else False


def _landed_in(session: WorkspaceSession, run_id: str) -> str:
    """The phase the run was in, from its status and the last phase marker of its log."""
    status = session.store.get_run(run_id).status
    if status.is_terminal:
        return f"after the run ended ({status.value})"
    if status is RunStatus.FINALIZING:
        return "artifact upload"
    text = _log_text(session, run_id)
    found = [(text.rfind(marker), marker) for marker in _MARKERS if marker in text]
    if not found:
        return "starting"
    _, marker = max(found)
    if marker == "[trial]":
        return f"trial {text.count(marker)}"
    return {"[scanning]": "scan", "[features]": "features"}.get(marker, marker.strip("[]"))


def _kill_group(pid: int) -> None:
    for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            kill()
        except (ProcessLookupError, PermissionError):
            pass


def _wait_until_lost(session: WorkspaceSession, run_id: str) -> tuple[float | None, Run]:
    """Reap as the portal does until the run ends; seconds it took (None: still active after 30 s)."""
    started = time.monotonic()
    while True:
        run_service.reap_lost_runs(session)
        run = session.store.get_run(run_id)
        if run.status.is_terminal:
            return time.monotonic() - started, run
        if time.monotonic() - started > LOST_WITHIN_S:
            return None, run
        time.sleep(0.5)


def _bad_artifacts(session: WorkspaceSession, run_id: str) -> tuple[int, list[str], int]:
    """(recorded artifacts, those whose file is missing or differs, temp files left in the run's folder)."""
    recorded = session.store.list_artifacts(run_id)
    bad = session.artifacts.find_mismatches(run_id, recorded)
    folder = session.artifacts.run_dir(run_id)
    temps = [p for p in folder.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")]
    return len(recorded), list(bad), len(temps)


def _follow(session: WorkspaceSession, submission: Submission, timeout: float) -> Run:
    run = submission.run
    for update in run_service.follow_run(session, run.id, submission.worker, timeout=timeout):
        run = update.run
    return run


def inject(session: WorkspaceSession, data: Path, kill: Kill, resume_s: float) -> Kill:
    marker = dict(PHASES)[kill.phase]
    budget_s = kill.budget_s
    config = TrainingConfig(data=str(data), time_budget=budget_s, architecture="test_tiny", seed=0)
    submission = submit_training(session, config, experiment="faults")
    run_id = submission.run.id
    pid: int = submission.worker.pid  # type: ignore[attr-defined]
    deadline = time.monotonic() + budget_s + 120
    while (reached := _reached(session, run_id, marker)) is False:
        if time.monotonic() > deadline:
            break
        time.sleep(0.002)
    if not reached:
        kill.reason = f"the run ended ({session.store.get_run(run_id).status.value}) before {kill.phase}"
        _follow(session, submission, 60)
        return kill
    time.sleep(kill.delay_s)
    kill.landed_in = _landed_in(session, run_id)
    _kill_group(pid)
    kill.killed = True
    submission.worker.wait(10)  # reap our child (the reaper would see it as gone either way)
    seconds, run = _wait_until_lost(session, run_id)
    kill.lost_after_s = None if seconds is None else round(seconds, 2)
    kill.final_status = "Failed (process lost)" if lifecycle.is_lost(run) else run.status.value
    kill.error = "" if run.error is None else run.error.message
    kill.recorded_artifacts, kill.bad_artifacts, kill.temp_files = _bad_artifacts(session, run_id)
    if run.status in (RunStatus.FAILED, RunStatus.CANCELED):
        resumed = resume_training(session, run_id, time_budget=resume_s)
        final = _follow(session, resumed, resume_s + 120)
        kill.resumed = final.status.value
        _, kill.resumed_bad_artifacts, _ = _bad_artifacts(session, final.id)
        names = {a.path for a in session.store.list_artifacts(final.id)}
        missing = [name for name in REQUIRED_OUTPUTS if name not in names]
        if final.status is RunStatus.COMPLETED and missing:
            kill.resumed = f"Completed without {', '.join(missing)}"
    return kill


def full_disk(data: Path, size: str, budget_s: float) -> dict[str, Any]:
    """A run whose artifact root is a ``size`` tmpfs: it must fail with a clear no-space error."""
    if os.geteuid() != 0:
        return {"ran": False, "reason": "needs root to mount a tmpfs"}
    create_workspace("faults-disk")
    session = open_workspace("faults-disk")
    root = session.artifacts.root
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        session.close()
        return {"ran": False, "reason": f"mount failed: {mounted.stderr.strip()}"}
    try:
        config = TrainingConfig(data=str(data), time_budget=budget_s, architecture="test_tiny", seed=0)
        submission = submit_training(session, config, experiment="faults")
        run = _follow(session, submission, budget_s + 120)
        recorded, bad, temps = _bad_artifacts(session, run.id)
        error = run.error
        return {
            "ran": True,
            "tmpfs_size": size,
            "status": run.status.value,
            "error_type": None if error is None else error.type,
            "error": None if error is None else error.message,
            "hint": None if error is None else error.hint,
            "clear_no_space_error": bool(
                error is not None and error.type == "WorkspaceError" and "No space left" in error.message
            ),
            "recorded_artifacts": recorded,
            "bad_artifacts": bad,
            "temp_files": temps,
        }
    finally:
        session.close()
        subprocess.run(["umount", str(root)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=20, help="how many runs to kill (default 20)")
    parser.add_argument("--time", type=float, default=6.0, help="time budget of each killed run, seconds")
    parser.add_argument(
        "--two-trial-time", type=float, default=10.0, help="budget of the runs killed in their second trial"
    )
    parser.add_argument("--resume-time", type=float, default=5.0, help="time budget of each resumed run")
    parser.add_argument("--disk", default="48k", help="tmpfs size for the full-disk case ('' to skip)")
    common_arguments(parser)
    args = parser.parse_args()
    setup_logging(not args.quiet)
    rng = random.Random(args.seed)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="faults-", dir=CACHE_DIR))
    isolated_home(work / "home")
    data = make_data(work / "shapes", per_class=10, size=32, seed=args.seed)
    started = time.monotonic()
    create_workspace("faults")
    kills: list[Kill] = []
    with open_workspace("faults") as session:
        attempt = 0
        while len([k for k in kills if k.killed]) < args.kills and attempt < args.kills + 10:
            phase = PHASES[attempt % len(PHASES)][0]
            budget = args.two_trial_time if phase == "trial 2" else args.time
            # Short phases (the tiny backbone's scan, export, codegen, upload take tens of milliseconds
            # here) get a short random delay, or the kill would land in the next phase.
            delay = round(rng.uniform(0.0, LONG_PHASE_DELAY_S if phase in LONG_PHASES else 0.01), 3)
            kill = inject(session, data, Kill(phase, delay, budget), args.resume_time)
            attempt += 1
            kills.append(kill)
            logger.info("%s", {k: v for k, v in asdict(kill).items() if v not in ("", [], None)})
    disk = full_disk(data, args.disk, args.time) if args.disk else {"ran": False, "reason": "skipped"}
    logger.info("full disk: %s", disk)
    done = [k for k in kills if k.killed]
    lost = [k for k in done if k.final_status == "Failed (process lost)"]
    times = sorted(k.lost_after_s for k in done if k.lost_after_s is not None)
    record = {
        "kills": len(done),
        "phases": {phase: len([k for k in done if k.phase == phase]) for phase, _ in PHASES},
        "landed_in": {
            name: len([k for k in done if k.landed_in == name]) for name in {k.landed_in for k in done}
        },
        "missed_kill_points": [k.reason for k in kills if not k.killed],
        "failed_process_lost": len(lost),
        "lost_within_30s": len([k for k in lost if (k.lost_after_s or 99) <= LOST_WITHIN_S]),
        "seconds_to_lost": {
            "max": max(times, default=None),
            "median": times[len(times) // 2] if times else None,
        },
        "stuck": len([k for k in done if k.lost_after_s is None]),
        "other_endings": [f"{k.phase}: {k.final_status} {k.error}" for k in done if k not in lost],
        "artifacts_recorded": sum(k.recorded_artifacts for k in done),
        "artifacts_listed_without_their_file_or_half_written": sum(len(k.bad_artifacts) for k in done),
        "temp_files_left_unlisted": sum(k.temp_files for k in done),
        "resumed": len([k for k in done if k.resumed]),
        "resumed_completed": len(
            [k for k in done if k.resumed == "Completed" and not k.resumed_bad_artifacts]
        ),
        "resume_failures": [
            f"{k.phase}: {k.resumed}" for k in done if k.resumed and k.resumed != "Completed"
        ],
        "full_disk": disk,
        "wall_s": round(time.monotonic() - started, 1),
        "runs": [asdict(k) for k in kills],
    }
    emit("fault_injection", record, args.results)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
