"""``modelbuilder experiment list/show``."""

from __future__ import annotations

import typer

from ..services import experiments as service
from ..services.runs import reap_lost_runs
from ..services.views import experiment_view, run_view
from ._common import JsonOption, WorkspaceOption, print_fields, print_json, print_table, workspace_session
from .runs import run_rows

experiment_app = typer.Typer(help="Experiments: named groups of runs.", no_args_is_help=True)


@experiment_app.command("list")
def experiment_list(workspace: WorkspaceOption = None, json_: JsonOption = False) -> None:
    """List the experiments of a workspace."""
    with workspace_session(workspace) as session:
        reap_lost_runs(session)
        summaries = service.list_experiments(session)
    if json_:
        print_json([experiment_view(s.experiment, s) for s in summaries])
        return
    print_table(
        ["NAME", "RUNS", "LATEST RUN", "STATUS"],
        [
            [
                s.experiment.name,
                s.run_count,
                s.latest_run.id if s.latest_run else "",
                s.latest_run.status.value if s.latest_run else "",
            ]
            for s in summaries
        ],
    )


@experiment_app.command("show")
def experiment_show(name: str, workspace: WorkspaceOption = None, json_: JsonOption = False) -> None:
    """Show an experiment and its runs."""
    with workspace_session(workspace) as session:
        reap_lost_runs(session)
        experiment, found = service.get_experiment(session, name)
        if json_:
            view = experiment_view(experiment)
            view["runs"] = [run_view(run, session.name) for run in found]
            print_json(view)
            return
        print_fields([("name", experiment.name), ("id", experiment.id), ("runs", len(found))])
        if found:
            print_table(*run_rows(found))
