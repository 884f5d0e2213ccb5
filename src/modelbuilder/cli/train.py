"""``modelbuilder train``: a training run in a workspace, followed in the terminal, with the summary."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from .. import hints, settings
from ..entities import Run, RunStatus
from ..errors import InvalidParameterError
from ..services import preflight
from ..services import runs as run_service
from ..services.training_run import Submission, config_of_run, resume_training, submit_training
from ..services.workspaces import WorkspaceSession
from ..training.config import TrainingConfig, TrainingResult, parse_duration
from ._common import EXIT_ERROR, EXIT_INTERRUPTED, WorkspaceOption, message, workspace_session
from .monitor import watch_run

logger = logging.getLogger(__name__)


def ensure_portal(workspace: str) -> str | None:
    """The base URL of a portal serving this home (started in the background if needed), or None."""
    try:
        from ..portal.launcher import ensure_portal as launch
    except ImportError:
        return None
    try:
        return launch(workspace)
    except Exception as exc:  # the portal is a convenience: never fail training because of it
        logger.warning("The portal could not be started: %s", exc)
        return None


def find_portal() -> str | None:
    """The base URL of a running portal serving this home, or None (``--no-portal``: start nothing)."""
    try:
        from ..portal.launcher import find_portal as find

        return find()
    except Exception as exc:  # as above: a link is a convenience
        logger.warning("Cannot look for a running portal: %s", exc)
        return None


class _WarningLines(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        message(f"Warning: {record.getMessage()}")


@contextmanager
def _preflight_warnings_shown() -> Iterator[None]:
    """Show the checks' warnings (data checks deferred to the run): the CLI otherwise logs only errors."""
    source = logging.getLogger(preflight.__name__)
    handler = _WarningLines(logging.WARNING)
    source.addHandler(handler)
    try:
        yield
    finally:
        source.removeHandler(handler)


def _print_monitor_link(workspace: str, run_id: str, no_portal: bool) -> None:
    """The "Monitor current run" line: a link that answers for this run, or how to get one (never a guess)."""
    base = settings.portal_url_override() or (find_portal() if no_portal else ensure_portal(workspace))
    if base is not None:
        line = settings.portal_run_url(workspace, run_id, base)
    else:
        start = hints.command("portal", workspace=workspace)
        line = f"no portal is running; start one ({start}), then open /workspaces/{workspace}/runs/{run_id}"
        if not no_portal:
            message(f"The portal could not be started; its output is in {settings.home() / 'logs'}.")
    sys.stdout.write(f"Monitor current run: {line}\n")
    sys.stdout.flush()


def _config(
    data: Path, time: str, architecture: str, weights: Path | None, validation_data: Path | None,
    validation_fraction: float, on_bad_image: str, name: str | None, seed: int, max_trials: int | None,
) -> TrainingConfig:
    return TrainingConfig(
        data=str(data),
        time_budget=parse_duration(time),
        architecture=architecture,
        weights=None if weights is None else str(weights),
        validation_data=None if validation_data is None else str(validation_data),
        validation_fraction=validation_fraction,
        on_bad_image=on_bad_image,
        name=name,
        seed=seed,
        max_trials=max_trials,
    )


def _resume(session: WorkspaceSession, run_id: str, data: Path | None, time: str | None) -> Submission:
    old = session.store.get_run(run_id)
    trained_on = config_of_run(old).data
    if data is not None and Path(trained_on) != data.expanduser().resolve():
        raise InvalidParameterError(
            f"Run '{old.id}' trained on {trained_on!r}; --resume cannot switch it to {str(data)!r}.",
            hint="Leave DATA out to resume on the same data: "
            + hints.command("train", resume=hints.short_id(old.id)),
        )
    return resume_training(session, old.id, time_budget=None if time is None else parse_duration(time))


def _replay(session: WorkspaceSession, run_id: str, data: Path | None, compute: str) -> Submission:
    from ..services.replay import replay_training

    if data is not None:
        raise InvalidParameterError(
            "--replay repeats a run on the data it trained on; DATA cannot be given with it.",
            hint="Leave DATA out: " + hints.command("train", replay=hints.short_id(run_id)),
        )
    return replay_training(session, run_id, compute=compute)


def train(
    data: Annotated[
        Path | None,
        typer.Argument(help="A folder with one sub-folder per label, or a CSV/TSV with ImagePath,Label."),
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Also copy the outputs here.")] = None,
    time: Annotated[str | None, typer.Option("--time", "-t", help="Training budget: 90s, 5m, 1h.")] = None,
    architecture: Annotated[str, typer.Option(help="A backbone, or auto.")] = "auto",
    weights: Annotated[Path | None, typer.Option(help="A weights file for the backbone.")] = None,
    validation_data: Annotated[Path | None, typer.Option(help="Labelled validation images.")] = None,
    validation_fraction: Annotated[float, typer.Option(help="Held out per label.")] = 0.2,
    on_bad_image: Annotated[str, typer.Option(help="skip (report and skip) or fail.")] = "skip",
    name: Annotated[str | None, typer.Option(help="Name of the generated code projects.")] = None,
    seed: Annotated[int, typer.Option(min=0)] = 0,
    max_trials: Annotated[int | None, typer.Option(min=1, help="At most this many trials.")] = None,
    experiment: Annotated[
        str | None, typer.Option("--experiment", "-e", help="Default: the data folder's name.")
    ] = None,
    compute: Annotated[str, typer.Option("--compute", "-c", help="The compute to train on.")] = "local",
    resume: Annotated[
        str | None, typer.Option(help="Continue a Failed or Canceled run from its last checkpoint.")
    ] = None,
    replay: Annotated[
        str | None,
        typer.Option(help="Run a finished run's recorded plan again, bounded by its steps, not time."),
    ] = None,
    no_portal: Annotated[bool, typer.Option("--no-portal", help="Do not start the portal.")] = False,
    detach: Annotated[
        bool, typer.Option("--detach", help="Return once the run is submitted; it goes on (run attach).")
    ] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Train an image classifier as a run in a workspace, and show its progress and summary."""
    with workspace_session(workspace) as session, _preflight_warnings_shown():
        if resume is not None:
            submission = _resume(session, resume, data, time)
        elif replay is not None:
            submission = _replay(session, replay, data, compute)
        elif data is None:
            raise InvalidParameterError(
                "modelbuilder train needs the training data (or --resume RUN_ID).",
                hint=f"For example: {hints.command('train', './images', time='5m')}",
            )
        else:
            config = _config(
                data, time or "5m", architecture, weights, validation_data, validation_fraction,
                on_bad_image, name, seed, max_trials,
            )
            submission = submit_training(session, config, experiment=experiment, compute=compute)
        run = submission.run
        resumed = f", resuming {run.params['resumed_from']}" if "resumed_from" in run.params else ""
        resumed += f", replaying {run.params['replay_of']}" if "replay_of" in run.params else ""
        message(
            f"Run {run.id} of experiment '{run.experiment}' on compute '{run.compute}' in workspace "
            f"'{session.name}'{resumed}."
        )
        _print_monitor_link(session.name, run.id, no_portal)
        if detach:  # the worker (a Ray job and its follower) runs in its own session: it goes on
            attach = hints.command("run", "attach", hints.short_id(run.id))
            message(f"Detached: run {run.id} goes on without this command. Follow it with: {attach}")
            return
        final, presses = watch_run(session, run.id, submission.worker)
        _finish(session, final, output, presses)


def _finish(session: WorkspaceSession, run: Run, output: Path | None, presses: int) -> None:
    copied: Path | None = None
    if run.status in (RunStatus.COMPLETED, RunStatus.CANCELED) and output is not None:
        if session.store.list_artifacts(run.id):
            run_service.download_outputs(session, run.id, output)
            copied = output.resolve()
    result = run_service.load_result(session, run.id, copied or session.artifacts.run_dir(run.id))
    if run.status is RunStatus.FAILED:
        if settings.debug() and (traceback := run_service.debug_log(session, run.id)):
            message(traceback.rstrip())
        # The worker's own error, raised here once: the ErrorHandlingGroup prints it as Error/Hint.
        raise run_service.run_failure(session, run)
    _print_summary(session, run, result, copied)
    if run.status is RunStatus.CANCELED:
        raise typer.Exit(EXIT_INTERRUPTED if presses else EXIT_ERROR)


def _print_summary(
    session: WorkspaceSession, run: Run, result: TrainingResult | None, copied: Path | None
) -> None:
    out = sys.stdout
    status = "Completed"
    if run.status is RunStatus.CANCELED:
        status = "Canceled (partial result: the best model so far)"
    out.write(f"\nRun {run.id}: {status}\n")
    if result is None:
        out.write("  No model was produced.\n")
        return
    skipped = result.skipped_images
    seconds = (
        run.ended_at.timestamp() - run.started_at.timestamp()
        if run.ended_at and run.started_at
        else result.seconds
    )
    rows = [
        ("Best validation accuracy", f"{result.accuracy:.4f}"),
        ("Macro accuracy", f"{result.macro_accuracy:.4f}"),
        ("Algorithm", result.algorithm),
        ("Trials", str(len(result.trials))),
        ("Time", f"{seconds:.1f} s (training {result.seconds:.1f} s)"),
        ("Skipped images", f"{len(skipped)}" + (" (listed in evaluation.json)" if skipped else "")),
        ("Outputs (workspace)", str(session.artifacts.run_dir(run.id))),
    ]
    if copied is not None:
        rows.append(("Outputs", str(copied)))
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        out.write(f"  {label.ljust(width)}  {value}\n")
    if copied is None:
        download = hints.command("run", "download", hints.short_id(run.id), output="DIR")
        out.write(f"  Copy them out with: {download}\n")
    out.flush()
