"""The training worker: ``python -m modelbuilder.compute.worker JOB.json``.

It opens the workspace store itself, moves the run ``Queued -> Preparing -> Running``, calls the trainer
with a ``StoreReporter``, then records the outputs, the result and the run log as artifacts, verifies them
against their records, and only then ends the run ``Completed`` (or ``Canceled`` when a cancel was
requested: the best model so far is kept as a partial result). Whatever goes wrong ends the run ``Failed``
with its error as data (``RunError``: type, message, hint), shown once in the run log as ``Error:`` and
``Hint:``. The traceback of an expected error (a ``ModelBuilderError``) goes to the run's debug log
(``debug.log`` next to ``run.log``) only; an unexpected exception keeps its traceback in the run log.
Every status change goes through ``store.lifecycle``. A worker that is killed outright cannot do that; the
parent's supervisor or the stale-run reaper (``services.runs.reap_stale_runs``) marks its run lost.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import json
import logging
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from .. import hints
from ..artifacts import open_artifact_store
from ..artifacts.local import ArtifactStore
from ..entities import RunError, RunStatus
from ..errors import InvalidParameterError, InvalidStateError, ModelBuilderError, WorkspaceBusyError
from ..store import lifecycle, open_store
from ..store.base import MetadataStore
from ..training.config import TrainingConfig, TrainingResult
from .job import RunFolders, TrainingJob
from .outputs import LOG_NAME, RESULT_NAME, OutputRecorder, result_to_dict
from .store_reporter import HEARTBEAT_INTERVAL_S, StoreReporter

logger = logging.getLogger(__name__)

Trainer = Callable[..., TrainingResult]


def load_target(target: str) -> Trainer:
    """The trainer function named ``module:function``.

    Raises:
        InvalidParameterError: the name is malformed or does not lead to a callable.
    """
    module_name, _, function_name = target.partition(":")
    if not module_name or not function_name:
        raise InvalidParameterError(
            f"The training target must be 'module:function'. Got {target!r} instead.",
            hint="For example: modelbuilder.training.trainer:run_training",
        )
    module = importlib.import_module(module_name)
    function = getattr(module, function_name, None)
    if not callable(function):
        raise InvalidParameterError(
            f"The training target {target!r} is not a function of module '{module_name}'.",
            hint="Check the module and function name.",
        )
    return function  # type: ignore[no-any-return]


#: The run's debug log, next to its run log in the worker folder: tracebacks of expected errors.
DEBUG_LOG_NAME = "debug.log"


#: ``OSError.errno`` values that mean the disk (or the user's quota) is full.
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def _no_space(exc: BaseException) -> OSError | None:
    """The "no space left" OSError behind ``exc`` (itself or a cause), or None."""
    seen: BaseException | None = exc
    for _ in range(10):  # causes form a short chain; never loop on a cycle
        if seen is None:
            return None
        if isinstance(seen, OSError) and seen.errno in _NO_SPACE:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def no_space_error(exc: OSError, run_id: str) -> RunError:
    """A full disk as an expected error: where, and how to go on (free space, then resume)."""
    where = f" while writing {exc.filename}" if exc.filename else ""
    resume = hints.command("train", resume=hints.short_id(run_id))
    return RunError(
        "WorkspaceError",
        f"No space left on the disk{where}: run '{run_id}' could not write its files "
        f"({exc.strerror or 'no space left on device'}). Nothing half-written was recorded.",
        "Free space on the disk of the workspace's artifact root (or move the workspace to a bigger disk), "
        f"then continue the run from its last checkpoint: {resume}",
    )


def run_error(exc: BaseException, run_id: str) -> RunError:
    """The error a failed run records. Our errors keep their type, message and hint; a full disk is a
    clear WorkspaceError; anything else is a bug, whose hint points at the traceback in the run log."""
    full = _no_space(exc)
    if full is not None:
        return no_space_error(full, run_id)
    error = RunError.from_exception(exc)
    if error.hint is None and not isinstance(exc, ModelBuilderError):
        logs = hints.command("run", "logs", hints.short_id(run_id))
        error = RunError(
            error.type,
            error.message,
            f"This is an unexpected error (a bug); the traceback is in the run log: {logs}",
        )
    return error


def write_debug_log(path: Path, exc: BaseException) -> None:
    """Append the traceback of ``exc`` to the run's debug log (never raises: the run must still end)."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        text = "".join(traceback.format_exception(exc)).rstrip()
        with open(path, "a", encoding="utf-8") as debug:
            debug.write(f"[{stamp}] {text}\n")


class _RunLogHandler(logging.Handler):
    """Forwards modelbuilder's own log records (INFO and up) into the run log."""

    def __init__(self, reporter: StoreReporter) -> None:
        super().__init__(logging.INFO)
        self.reporter = reporter

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("modelbuilder.store", "modelbuilder.compute")):
            return  # our own plumbing: it goes to worker.out only
        with contextlib.suppress(Exception):
            self.reporter.log(f"{record.levelname.lower()}: {record.getMessage()}")


class Worker:
    """Executes one training job against its workspace."""

    #: Seconds between heartbeats (a cancel request is seen at the next one).
    heartbeat_interval = HEARTBEAT_INTERVAL_S

    def __init__(self, job: TrainingJob, store: MetadataStore, artifacts: ArtifactStore) -> None:
        self.job = job
        self.store = store
        self.artifacts = artifacts
        #: Where this machine keeps the run's files (the job carries no local paths).
        self.folders = RunFolders.of_job(job)
        self.recorder = OutputRecorder(store, artifacts, job.run_id, self.folders.state_dir / "zips")
        self.reporter: StoreReporter | None = None

    def run(self) -> int:
        """Run the job; the worker's exit code (0: Completed or Canceled, 1: Failed or not run)."""
        job = self.job
        try:
            run = lifecycle.prepare(self.store, job.run_id, phase="starting the worker")
        except InvalidStateError:
            current = self.store.get_run(job.run_id)
            if current.status is RunStatus.CANCEL_REQUESTED:
                lifecycle.end_canceled(self.store, job.run_id)
                return 0
            if current.status is RunStatus.CANCELED:
                return 0  # canceled while it waited for this worker
            logger.warning("Run %s is %s; nothing to do", job.run_id, current.status.value)
            return 1
        reporter = self.reporter = StoreReporter(
            self.store,
            run,
            log_path=self.folders.log_path,
            on_artifact=self._record_quietly,
            heartbeat_interval=self.heartbeat_interval,
        ).start()
        handler = _RunLogHandler(reporter)
        logging.getLogger("modelbuilder").addHandler(handler)
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        started = time.monotonic()
        try:
            reporter.log(f"Run {job.run_id} started on compute '{job.compute}' (worker pid {os.getpid()}).")
            trainer = load_target(job.target)
            config = TrainingConfig.from_dict(job.config)
            with contextlib.suppress(InvalidStateError):  # a cancel may have arrived meanwhile
                lifecycle.start(self.store, job.run_id, phase="training")
            work_dir = self.folders.work_dir
            work_dir.mkdir(parents=True, exist_ok=True)
            checkpoint_dir = self.folders.checkpoint_dir(job.checkpoint_owner)
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            result = trainer(config, reporter, work_dir, checkpoint_dir=checkpoint_dir)
            return self.finish(result, time.monotonic() - started)
        except BaseException as exc:
            if isinstance(exc, ModelBuilderError) or _no_space(exc) is not None:
                # Expected: the user sees Error/Hint once; the traceback is for whoever debugs it.
                write_debug_log(self.folders.state_dir / DEBUG_LOG_NAME, exc)
            else:
                reporter.log(traceback.format_exc().rstrip())
            code = self.fail(run_error(exc, job.run_id))
            if not isinstance(exc, Exception):
                raise
            return code
        finally:
            signal.signal(signal.SIGTERM, previous)
            logging.getLogger("modelbuilder").removeHandler(handler)
            reporter.close()

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        if self.reporter is not None:
            self.reporter.request_stop("SIGTERM")

    def _record_quietly(self, path: Path, name: str) -> None:
        self.recorder.record(path, name)

    def finish(self, result: TrainingResult, seconds: float) -> int:
        """Record the result's outputs and end the run ``Completed`` (or ``Canceled``); the exit code."""
        reporter = self.reporter
        assert reporter is not None
        try:
            reporter.drain()  # every metric and log line is in the store before the run can end
        except WorkspaceBusyError as exc:
            return self.fail(run_error(exc, self.job.run_id))
        if reporter.run_ended_elsewhere:
            return 1
        status = self.store.get_run(self.job.run_id).status
        canceled = result.canceled or status is RunStatus.CANCEL_REQUESTED
        if canceled and status is not RunStatus.CANCEL_REQUESTED:
            lifecycle.request_cancel(self.store, self.job.run_id)
        elif status is RunStatus.RUNNING:
            lifecycle.finalize(self.store, self.job.run_id, phase="recording outputs")
        for name, path in sorted(result.files.items()):
            self.recorder.record(path, name)
        self.recorder.record_manifest()
        self.recorder.record_bytes(RESULT_NAME, json.dumps(result_to_dict(result), indent=2).encode())
        self._log_final_metrics(result)
        reporter.end_active_children(RunStatus.CANCELED if canceled else RunStatus.COMPLETED)
        ending = "Canceled (partial result kept)" if canceled else "Completed"
        reporter.log(
            f"Run {ending}: best validation accuracy {result.accuracy:.4f} with {result.backbone} + "
            f"{result.strategy} in {seconds:.1f} s."
        )
        reporter.flush()
        self._record_log()
        bad = self.artifacts.find_mismatches(self.job.run_id, self.store.list_artifacts(self.job.run_id))
        if bad:
            return self.fail(
                RunError(
                    "ArtifactNotFoundError",
                    f"Artifacts of run '{self.job.run_id}' failed verification after writing: "
                    f"{', '.join(bad)}.",
                    "The artifact folder changed while the run wrote it; start the run again.",
                )
            )
        final = RunStatus.CANCELED if canceled else RunStatus.COMPLETED
        reporter.ending = True
        try:
            lifecycle.end(self.store, self.job.run_id, final)
        except InvalidStateError:
            # A cancel that arrived during Finalizing wins: the run ends Canceled, its outputs kept.
            current = self.store.get_run(self.job.run_id).status
            if current is not RunStatus.CANCEL_REQUESTED:
                return 1  # ended elsewhere
            lifecycle.end_canceled(self.store, self.job.run_id)
            final = RunStatus.CANCELED
        self._clean_up(final)
        return 0

    def _log_final_metrics(self, result: TrainingResult) -> None:
        values: dict[str, float] = {
            "accuracy": result.accuracy,
            "macro_accuracy": result.macro_accuracy,
            "seconds": result.seconds,
            "skipped_images": float(len(result.skipped_images)),
        }
        latest = self.store.get_latest_metrics(self.job.run_id)
        batch = [
            (key, float(value), latest[key].step if key in latest else 0, None)
            for key, value in values.items()
        ]
        self.store.log_metrics(self.job.run_id, batch)

    def _record_log(self) -> None:
        try:
            self.recorder.record(self.folders.log_path, LOG_NAME)
        except Exception as exc:
            logger.warning("The run log of %s could not be recorded: %s", self.job.run_id, exc)

    def fail(self, error: RunError) -> int:
        """End the run ``Failed`` with ``error`` (its active trials too); the exit code (1)."""
        reporter = self.reporter
        if reporter is not None:
            reporter.log("\n".join(error.lines()))
            reporter.flush()
            reporter.end_active_children(RunStatus.FAILED, RunError("TrainingError", "the run failed"))
            # The heartbeat must not take the Failed status we write next for another process ending the
            # run (it would log "Stop requested ... by another process" after the Error/Hint lines).
            reporter.ending = True
        self._record_log()
        try:
            lifecycle.fail(self.store, self.job.run_id, error)
        except InvalidStateError:
            logger.warning("Run %s ended elsewhere before it could be marked Failed", self.job.run_id)
        except Exception as exc:
            logger.error("Run %s could not be marked Failed: %s", self.job.run_id, exc)
        return 1

    def _clean_up(self, final: RunStatus) -> None:
        shutil.rmtree(self.folders.work_dir, ignore_errors=True)
        shutil.rmtree(self.folders.state_dir / "zips", ignore_errors=True)
        if final is RunStatus.COMPLETED:
            shutil.rmtree(self.folders.checkpoint_dir(self.job.checkpoint_owner), ignore_errors=True)


def run_job(job: TrainingJob) -> int:
    """Open the job's workspace and execute it; the exit code."""
    store = open_store(job.store_url, job.workspace)
    try:
        return Worker(job, store, open_artifact_store(job.artifact_root)).run()
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m modelbuilder.compute.worker JOB.json\n")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # The terminal's Ctrl-C goes to the CLI (we run in our own session); ignore a stray SIGINT.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    job = TrainingJob.load(args[0])
    try:
        return run_job(job)
    except Exception as exc:  # the store itself failed: nothing more we can record
        logger.exception("Worker of run %s failed outside the run: %s", job.run_id, exc)
        return 1


def _entry() -> Any:
    sys.exit(main())


if __name__ == "__main__":
    _entry()
