"""The ``modelbuilder`` (alias ``mb``) command line: ``modelbuilder <noun> <verb>`` plus ``train``,
``predict`` and ``portal``."""

from __future__ import annotations

import typer

from ._common import ErrorHandlingGroup
from .computes import compute_app
from .experiments import experiment_app
from .portal import portal
from .predict import predict
from .resources import resource_group_app, workspace_app
from .runs import run_app
from .train import train

app = typer.Typer(
    cls=ErrorHandlingGroup,
    name="modelbuilder",
    help="Turn a folder of labelled images into a shippable image classifier.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("train")(train)
app.command("predict")(predict)
app.command("portal")(portal)
app.add_typer(resource_group_app, name="resource-group")
app.add_typer(workspace_app, name="workspace")
app.add_typer(experiment_app, name="experiment")
app.add_typer(compute_app, name="compute")
app.add_typer(run_app, name="run")


def main() -> None:
    """Entry point of the ``modelbuilder`` and ``mb`` scripts."""
    app()
