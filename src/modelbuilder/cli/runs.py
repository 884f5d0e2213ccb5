"""``modelbuilder run list/show/logs/cancel/attach/download``."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import hints
from ..entities import Run, RunStatus
from ..services import artifacts as artifact_service
from ..services import runs as service
from ..services.replay import find_recorded_plan
from ..services.views import artifact_view, run_view
from ..training.plan import plan_table, plan_title
from ._common import (
    JsonOption,
    WorkspaceOption,
    message,
    print_fields,
    print_json,
    print_table,
    workspace_session,
)

run_app = typer.Typer(
    help="Runs: training executions with metrics, logs and artifacts.", no_args_is_help=True
)

#: How long ``run cancel`` waits for the run to end before it leaves it to the worker.
CANCEL_WAIT_S = 60.0


def _duration(run: Run) -> str:
    if run.started_at is None:
        return ""
    end = run.ended_at.timestamp() if run.ended_at else time.time()
    return f"{end - run.started_at.timestamp():.1f}s"


def _main_metric(run: Run) -> str:
    for key in ("accuracy", "best_val_accuracy", "val_accuracy"):
        if key in run.latest_metrics:
            return f"{key}={run.latest_metrics[key]:.4f}"
    return ""


def run_rows(found: list[Run]) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of a run table."""
    columns = ["ID", "EXPERIMENT", "STATUS", "COMPUTE", "CREATED", "DURATION", "METRIC", "ERROR"]
    rows = [
        [
            run.id,
            run.experiment if run.parent_run_id is None else f"  {run.name or 'trial'}",
            run.status.value,
            run.compute,
            run.created_at.astimezone().strftime("%Y-%m-%d %H:%M:%S") if run.created_at else "",
            _duration(run),
            _main_metric(run),
            "" if run.error is None else run.error.message.split("\n")[0],
        ]
        for run in found
    ]
    return columns, rows


@run_app.command("list")
def run_list(
    experiment: Annotated[str | None, typer.Option("--experiment", "-e")] = None,
    all_runs: Annotated[bool, typer.Option("--all", help="Include trial (child) runs.")] = False,
    status: Annotated[str | None, typer.Option(help="Only runs in this status, e.g. Running.")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 100,
    workspace: WorkspaceOption = None,
    json_: JsonOption = False,
) -> None:
    """List runs, newest first."""
    statuses = [_status(status)] if status else None
    with workspace_session(workspace) as session:
        service.reap_lost_runs(session)
        found = service.list_runs(
            session, experiment, include_children=all_runs, statuses=statuses, limit=limit
        )
        name = session.name
    if json_:
        print_json([run_view(run, name) for run in found])
    else:
        print_table(*run_rows(found))


def _status(text: str) -> RunStatus:
    for status in RunStatus:
        if status.value.lower() == text.lower():
            return status
    from ..errors import InvalidParameterError

    raise InvalidParameterError(
        f"The 'status' option must be one of {', '.join(s.value for s in RunStatus)}. Got {text!r} instead.",
        hint=f"For example: {hints.command('run', 'list', status=RunStatus.RUNNING.value)}",
    )


@run_app.command("show")
def run_show(run_id: str, workspace: WorkspaceOption = None, json_: JsonOption = False) -> None:
    """Show a run: status, params, metrics, trials, artifacts, error."""
    with workspace_session(workspace) as session:
        service.reap_lost_runs(session)
        run = service.get_run(session, run_id)
        view = run_view(run, session.name)
        children = service.list_trials(session, run.id)
        view["children"] = [run_view(child) for child in children]
        view["artifacts"] = [artifact_view(a) for a in artifact_service.list_artifacts(session, run.id)]
        view["plan"] = find_recorded_plan(session, run.id)
    if json_:
        print_json(view)
        return
    print_fields(
        [
            ("id", run.id),
            ("experiment", run.experiment),
            ("status", service.status_label(run)),
            ("compute", run.compute),
            ("parent_run_id", run.parent_run_id),
            ("created_at", view["created_at"]),
            ("duration", _duration(run)),
            ("phase", run.phase),
            ("error", None if run.error is None else run.error.message),
            ("hint", None if run.error is None else run.error.hint),
            ("portal_url", view["portal_url"] or view["portal_url_reason"]),  # no link: why, and the fix
        ]
    )
    if run.latest_metrics:
        print_table(["METRIC", "VALUE"], [[k, f"{v:.6g}"] for k, v in sorted(run.latest_metrics.items())])
    if children:
        print_table(*run_rows(children), title="Trials")
    if view["artifacts"]:
        rows = [[a["path"], a["size"], a["sha256"][:16]] for a in view["artifacts"]]
        print_table(["ARTIFACT", "SIZE", "SHA256"], rows)
    if view["plan"]:
        print_table(*plan_table(view["plan"]), title=plan_title(view["plan"]))


@run_app.command("logs")
def run_logs(
    run_id: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the run ends.")] = False,
    tail: Annotated[int | None, typer.Option(min=1, help="Only the last N lines.")] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Print a run's log lines."""
    with workspace_session(workspace) as session:
        run = service.get_run(session, run_id)
        offset = 0
        if tail is not None:
            offset = max(0, session.store.count_log_lines(run.id) - tail)
        if not follow:
            for line in session.store.get_log_lines(run.id, offset, limit=None):
                sys.stdout.write(f"{line.text}\n")
            return
        for update in service.follow_run(session, run.id, log_offset=offset):
            for line in update.new_lines:
                sys.stdout.write(f"{line.text}\n")
            sys.stdout.flush()
        message(f"Run {run.id} ended {update.run.status.value}.")


@run_app.command("cancel")
def run_cancel(
    run_id: str,
    wait: Annotated[bool, typer.Option(help="Wait until the run has stopped.")] = True,
    workspace: WorkspaceOption = None,
    json_: JsonOption = False,
) -> None:
    """Cancel a run: it stops at the next safe point and keeps the best model so far."""
    with workspace_session(workspace) as session:
        service.reap_lost_runs(session)
        run = service.cancel_run(session, run_id)
        if not json_:
            message(f"Run {run.id}: {run.status.value}.")
        if wait and not run.status.is_terminal:
            for update in service.follow_run(session, run.id, timeout=CANCEL_WAIT_S):
                run = update.run
        if json_:
            print_json(run_view(run, session.name))
        elif run.status.is_terminal:
            message(f"Run {run.id} ended {run.status.value}.")
        else:
            message(f"Run {run.id} is still {run.status.value}; it stops at its next safe point.")


@run_app.command("attach")
def run_attach(
    run_id: str,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Also copy the outputs here.")] = None,
    no_portal: Annotated[bool, typer.Option("--no-portal", help="Do not start the portal.")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Follow a run again (after train --detach, or a closed terminal) until it ends, then its summary."""
    from .monitor import watch_run
    from .train import _finish, _print_monitor_link

    with workspace_session(workspace) as session:
        run = service.get_run(session, run_id)
        # Asking the backend reconnects the run's worker where it needs one (a Ray run's follower).
        worker = None if run.status.is_terminal else service.find_worker(session, run)
        where = f"of experiment '{run.experiment}' on compute '{run.compute}'"
        message(f"Run {run.id} {where}: {run.status.value}.")
        _print_monitor_link(session.name, run.id, no_portal)
        final, presses = watch_run(session, run.id, worker)
        _finish(session, final, output, presses)


@run_app.command("download")
def run_download(
    run_id: str,
    output: Annotated[Path, typer.Option("--output", "-o", help="Destination folder.")] = Path("."),
    raw: Annotated[
        bool, typer.Option(help="Every artifact as stored (folders stay zipped, plus logs).")
    ] = False,
    workspace: WorkspaceOption = None,
    json_: JsonOption = False,
) -> None:
    """Download a run's outputs (bestModel.onnx, bestModelMap.json, MLModel.zip, code, evaluation)."""
    with workspace_session(workspace) as session:
        found = service.download_outputs(session, run_id, output, raw=raw)
    if json_:
        print_json({name: str(path) for name, path in sorted(found.items())})
        return
    for name, path in sorted(found.items()):
        sys.stdout.write(f"{name}\t{path}\n")
