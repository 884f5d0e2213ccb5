"""The Python API of the resource model, in the style of the Azure ML SDK.

    >>> from modelbuilder import Workspace, TrainingConfig
    >>> ws = Workspace.get_or_create("vision-ws", resource_group="team", region="local")
    >>> ws.create_compute("cpu-1", size="Standard_D2s_v3")
    >>> config = TrainingConfig(data="images/", time_budget=120)
    >>> run = ws.experiment("flowers").submit(config, compute="local")
    >>> run.wait_for_completion(show_output=True)
    >>> run.get_metrics()["accuracy"], run.get_portal_url()
    >>> run.download_outputs("out/")

``train()`` does all of that in one call and returns the result with the output paths. These classes are a
thin facade: the work happens in ``modelbuilder.services``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from . import entities, hints, settings
from .compute.backend import WorkerHandle
from .compute.spec import ComputeSpec
from .entities import Metric, RunStatus
from .errors import AlreadyExistsError, InvalidStateError, TrainingError
from .portal.launcher import portal_run_url, portal_workspace_url
from .services import artifacts as artifact_service
from .services import computes as compute_service
from .services import experiments as experiment_service
from .services import runs as run_service
from .services import workspaces as workspace_service
from .services.experiments import default_experiment_name
from .services.training_run import resume_training, submit_training
from .services.views import artifact_view, run_view
from .services.workspaces import WorkspaceSession
from .training.config import TrainingConfig, TrainingResult, parse_duration


class Workspace:
    """A workspace: a metadata store of experiments, runs and computes plus an artifact root.

    Get one with ``create``, ``get`` or ``get_or_create``; it keeps its store open until ``close()``
    (or the end of a ``with`` block).
    """

    def __init__(self, entity: entities.Workspace) -> None:
        self._entity = entity
        self._session: WorkspaceSession | None = None

    @classmethod
    def create(
        cls,
        name: str,
        *,
        resource_group: str = settings.DEFAULT_RESOURCE_GROUP,
        region: str = settings.DEFAULT_REGION,
        store: str | None = None,
        artifacts: str | os.PathLike[str] | None = None,
        exist_ok: bool = False,
    ) -> Workspace:
        """Create a workspace (its resource group is created on first use). With a PostgreSQL ``store`` URL
        and an ``artifacts`` folder every machine reaches, it is a team workspace others can ``attach``.

        Raises:
            InvalidNameError: the name breaks the rule (3-33 letters, digits and hyphens).
            NotFoundError: the region is not defined.
            AlreadyExistsError: it exists (unless ``exist_ok``), or the store holds another workspace.
        """
        try:
            root = Path(artifacts) if artifacts is not None else None
            return cls(workspace_service.create_workspace(name, resource_group, region, store, root))
        except AlreadyExistsError:
            if not exist_ok:
                raise
            return cls.get(name)

    @classmethod
    def attach(
        cls,
        name: str,
        *,
        store: str,
        artifacts: str | os.PathLike[str] | None = None,
        resource_group: str = settings.DEFAULT_RESOURCE_GROUP,
        region: str = settings.DEFAULT_REGION,
    ) -> Workspace:
        """Register on this machine a team workspace that another machine created in ``store``; its artifact
        root is the one recorded there unless ``artifacts`` says where this machine sees it.

        Raises:
            WorkspaceNotFoundError: the store holds no workspace ``name``.
            WorkspaceError: the artifact root is not reachable here.
            AlreadyExistsError: a workspace has this name on this machine.
        """
        root = Path(artifacts) if artifacts is not None else None
        attached = workspace_service.attach_workspace(
            name, store, resource_group=resource_group, region=region, artifact_root=root
        )
        return cls(attached)

    @classmethod
    def get(cls, name: str | None = None) -> Workspace:
        """The workspace ``name``; None: the default one (``MODELBUILDER_WORKSPACE`` or ``default``).

        Raises:
            WorkspaceNotFoundError: it does not exist (the default one is created on first use).
        """
        return cls(workspace_service.resolve_workspace(name))

    @classmethod
    def get_or_create(
        cls,
        name: str,
        *,
        resource_group: str = settings.DEFAULT_RESOURCE_GROUP,
        region: str = settings.DEFAULT_REGION,
        store: str | None = None,
    ) -> Workspace:
        """The workspace ``name``, created with these settings if it does not exist."""
        return cls.create(name, resource_group=resource_group, region=region, store=store, exist_ok=True)

    @classmethod
    def list_all(cls, resource_group: str | None = None) -> list[Workspace]:
        """Every workspace on this machine (or of one resource group)."""
        return [cls(entity) for entity in workspace_service.list_workspaces(resource_group)]

    # --- properties and lifecycle -----------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._entity.name

    @property
    def resource_group(self) -> str:
        return self._entity.resource_group

    @property
    def region(self) -> str:
        return self._entity.region

    @property
    def store_url(self) -> str:
        return self._entity.store_url

    @property
    def artifact_root(self) -> Path:
        return Path(self._entity.artifact_root)

    @property
    def session(self) -> WorkspaceSession:
        """The open services session (opened on first use)."""
        if self._session is None:
            self._session = workspace_service.open_session(self._entity)
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Workspace(name={self.name!r}, resource_group={self.resource_group!r}, region={self.region!r})"
        )

    def delete(self) -> None:
        """Delete the workspace and its files.

        Raises:
            InvalidStateError: one of its runs is still active.
        """
        self.close()
        workspace_service.delete_workspace(self.name)

    def get_portal_url(self, *, start: bool = True) -> str:
        """The workspace's portal page, on a portal of this MODELBUILDER_HOME (``start``: one is started).

        Raises:
            InvalidStateError: no portal serves this home and none could be started (the hint says how).
        """
        return portal_workspace_url(self.name, start=start)

    # --- experiments, computes, runs --------------------------------------------------------------

    def experiment(self, name: str) -> Experiment:
        """The experiment ``name``, registered on first use.

        Raises:
            InvalidNameError: the name breaks the rule (3-36 letters, digits, '_' and '-').
        """
        return Experiment(self, experiment_service.get_or_create_experiment(self.session, name))

    @property
    def experiments(self) -> dict[str, Experiment]:
        summaries = experiment_service.list_experiments(self.session)
        return {s.experiment.name: Experiment(self, s.experiment) for s in summaries}

    def create_compute(
        self,
        name: str,
        *,
        size: str,
        backend: str = "local",
        address: str | None = None,
        min_nodes: int = 0,
        max_nodes: int = 1,
        idle_seconds_before_scaledown: int = 1800,
        token_env: str | None = None,
    ) -> entities.Compute:
        """Provision a compute; it comes back ``Succeeded`` or ``Failed`` with its error (and is kept).

        ``address`` is where the backend reaches the compute (a Ray dashboard, ``http://HOST:8265``);
        ``token_env`` names the environment variable that holds its token (never the token itself).

        Raises:
            InvalidNameError, NotFoundError (size), InvalidParameterError, MissingDependencyError (the
            backend's extra), ComputeExistsError.
        """
        spec = ComputeSpec.create(
            name,
            size,
            backend=backend,
            address=address,
            min_nodes=min_nodes,
            max_nodes=max_nodes,
            idle_seconds_before_scaledown=idle_seconds_before_scaledown,
            token_ref=token_env,
        )
        return compute_service.create_compute(self.session, spec)

    @property
    def computes(self) -> dict[str, entities.Compute]:
        """Every compute by name (``local`` always among them)."""
        return {compute.name: compute for compute in compute_service.list_computes(self.session)}

    def get_compute(self, name: str) -> entities.Compute:
        """Raises: ComputeNotFoundError."""
        return compute_service.get_compute(self.session, name)

    def delete_compute(self, name: str) -> entities.Compute:
        """Raises: ComputeNotFoundError, InvalidStateError (``local``, or active runs on it)."""
        return compute_service.delete_compute(self.session, name)

    def get_run(self, run_id: str) -> Run:
        """Raises: RunNotFoundError."""
        return Run(self, run_service.get_run(self.session, run_id).id)

    def list_runs(self, experiment: str | None = None, *, include_children: bool = False) -> list[Run]:
        return [
            Run(self, run.id)
            for run in run_service.list_runs(self.session, experiment, include_children=include_children)
        ]

    def resume(self, run_id: str, *, time_budget: float | None = None) -> Run:
        """A new run continuing a Failed or Canceled run from its last checkpoint."""
        submission = resume_training(self.session, run_id, time_budget=time_budget)
        return Run(self, submission.run.id, submission.worker)


class Experiment:
    """An experiment of a workspace: a named group of runs."""

    def __init__(self, workspace: Workspace, entity: entities.Experiment) -> None:
        self.workspace = workspace
        self._entity = entity

    @property
    def name(self) -> str:
        return self._entity.name

    @property
    def id(self) -> str:
        return self._entity.id

    def __repr__(self) -> str:
        return f"Experiment(name={self.name!r}, workspace={self.workspace.name!r})"

    def submit(self, config: TrainingConfig, compute: str = "local") -> Run:
        """Start a training run of this experiment on ``compute``; returns at once.

        Raises:
            DatasetError: the data does not exist.
            ComputeNotFoundError / ComputeError: the compute does not exist or cannot run training.
        """
        submission = submit_training(self.workspace.session, config, experiment=self.name, compute=compute)
        return Run(self.workspace, submission.run.id, submission.worker)

    def get_runs(self) -> list[Run]:
        """The experiment's runs, newest first."""
        return self.workspace.list_runs(self.name)


class Run:
    """One training run (or one trial: a child run)."""

    def __init__(self, workspace: Workspace, run_id: str, worker: WorkerHandle | None = None) -> None:
        self.workspace = workspace
        self.id = run_id
        self._worker = worker

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, workspace={self.workspace.name!r})"

    @property
    def entity(self) -> entities.Run:
        """The run as stored now."""
        return run_service.get_run(self.workspace.session, self.id)

    @property
    def experiment(self) -> str:
        return self.entity.experiment

    def get_status(self) -> str:
        """The status now: NotStarted, Queued, Preparing, Running, Finalizing, CancelRequested,
        Completed, Failed or Canceled (a lost worker is noticed here too)."""
        run = self.entity
        if not run.status.is_terminal:
            session = self.workspace.session
            run_service.reap_lost_runs(session)
            run = self.entity
        return run.status.value

    def get_metrics(self) -> dict[str, float]:
        """The latest value of each metric, by name."""
        return dict(self.entity.latest_metrics)

    def get_metric_history(self, key: str) -> list[Metric]:
        return run_service.metric_history(self.workspace.session, self.id, key)

    def get_children(self) -> list[Run]:
        """The trials of this run (child runs), in order."""
        children = run_service.list_trials(self.workspace.session, self.id)
        return [Run(self.workspace, child.id) for child in children]

    def get_details(self) -> dict[str, Any]:
        """The run as a dict (``modelbuilder run show --json``): status, params, metrics, error, children,
        artifacts, portal URL."""
        session = self.workspace.session
        view = run_view(self.entity, self.workspace.name)
        view["children"] = [run_view(child) for child in run_service.list_trials(session, self.id)]
        view["artifacts"] = [artifact_view(a) for a in artifact_service.list_artifacts(session, self.id)]
        return view

    def get_logs(self, tail: int | None = None) -> list[str]:
        offset = -tail if tail else 0
        lines, _ = run_service.log_lines(self.workspace.session, self.id, offset, limit=None)
        return [line.text for line in lines]

    def get_portal_url(self, *, start: bool = True) -> str:
        """The run's portal page ("Monitor current run"): a link that answers for this run.

        The portal is the one serving this MODELBUILDER_HOME (never another home's on the same port); with
        ``start`` one is started in the background when none runs.

        Raises:
            InvalidStateError: no portal serves this home and none could be started (the hint says how).
        """
        return portal_run_url(self.workspace.name, self.id, start=start)

    def wait_for_completion(
        self, show_output: bool = False, timeout: float | None = None, raise_on_error: bool = True
    ) -> dict[str, Any]:
        """Wait until the run ends (supervising its worker) and return ``get_details()``.

        Args:
            show_output: print the run's log lines and status changes as they come.
            timeout: give up waiting after this many seconds (the run goes on).
            raise_on_error: raise the run's error when it ends Failed.

        Raises:
            ModelBuilderError: the run failed: the error its worker raised, of the same class (DatasetError,
                WeightsError, ...) with its message and hint; TrainingError for an unexpected error or a lost
                worker.
        """
        closing = run_service.ClosingErrorFilter() if raise_on_error else None
        session = self.workspace.session
        for followed in run_service.follow_run(session, self.id, self._worker, timeout=timeout):
            update = followed if closing is None else closing.apply(followed)
            if show_output:
                for line in update.new_lines:
                    sys.stdout.write(f"{line.text}\n")
                if update.status_changed:
                    sys.stdout.write(f"Run {self.id[:12]}: {update.run.status.value}\n")
                sys.stdout.flush()
        run = self.entity
        if raise_on_error and run.status is RunStatus.FAILED:
            # The worker's error with its own class: a DatasetError in the worker is a DatasetError here.
            raise run_service.run_failure(self.workspace.session, run)
        return self.get_details()

    def cancel(self) -> str:
        """Request cancellation (the best model so far is kept); returns the status now.

        Raises:
            InvalidStateError: the run already ended.
        """
        return run_service.cancel_run(self.workspace.session, self.id).status.value

    def kill(self) -> str:
        """Kill the worker now and end the run Canceled (no final outputs)."""
        return run_service.kill_run(self.workspace.session, self.id, self._worker).status.value

    def download_outputs(self, destination: str | os.PathLike[str]) -> dict[str, Path]:
        """Copy the outputs to ``destination`` as training wrote them (folders unzipped).

        Raises:
            InvalidStateError: the run has no artifacts.
        """
        return run_service.download_outputs(self.workspace.session, self.id, destination)

    def get_result(self, output_dir: str | os.PathLike[str] | None = None) -> TrainingResult | None:
        """The training result (files pointing into ``output_dir``, default the artifact folder)."""
        folder = Path(output_dir) if output_dir is not None else self.workspace.artifact_root / self.id
        return run_service.load_result(self.workspace.session, self.id, folder)


def _running_portal_url(run: Run) -> str:
    """The run's page on a running portal of this home, or "" (``train()`` starts no portal by itself)."""
    try:
        return run.get_portal_url(start=False)
    except InvalidStateError:
        return ""


@dataclass
class TrainingRunResult(TrainingResult):
    """What ``train()`` returns: the TrainingResult plus the run it came from."""

    run_id: str = ""
    workspace: str = ""
    experiment: str = ""
    #: The run's portal page when a portal of this home was running at the end, else "".
    portal_url: str = ""


def train(
    data: str | os.PathLike[str],
    *,
    output: str | os.PathLike[str] | None = None,
    time: str | float = "5m",
    architecture: str = "auto",
    weights: str | os.PathLike[str] | None = None,
    validation_data: str | os.PathLike[str] | None = None,
    validation_fraction: float = 0.2,
    on_bad_image: str = "skip",
    name: str | None = None,
    seed: int = 0,
    max_trials: int | None = None,
    workspace: str | None = None,
    experiment: str | None = None,
    compute: str = "local",
    show_output: bool = False,
) -> TrainingRunResult:
    """Train an image classifier from a folder of labelled images, as a run in a workspace.

    Submits the run, waits for it (Ctrl-C cancels it and keeps the best model so far), and copies the
    outputs to ``output`` (default: ``<workspace folder>/outputs/<run id>``).

    Raises:
        InvalidParameterError: an option is invalid.
        DatasetError: the data does not exist.
        ModelBuilderError: the run failed, with the error its worker raised (see ``Run.wait_for_completion``).
    """
    config = TrainingConfig(
        data=os.fspath(data),
        time_budget=parse_duration(time),
        architecture=architecture,
        weights=None if weights is None else os.fspath(weights),
        validation_data=None if validation_data is None else os.fspath(validation_data),
        validation_fraction=validation_fraction,
        on_bad_image=on_bad_image,
        name=name,
        seed=seed,
        max_trials=max_trials,
    )
    with Workspace.get(workspace) as ws:
        exp = ws.experiment(experiment or default_experiment_name(config.data))
        run = exp.submit(config, compute=compute)
        try:
            run.wait_for_completion(show_output=show_output)
        except KeyboardInterrupt:
            run.cancel()
            run.wait_for_completion(show_output=show_output)
            raise
        destination = Path(output) if output is not None else ws.session.folder / "outputs" / run.id
        run.download_outputs(destination)
        result = run.get_result(destination)
        if result is None:
            raise TrainingError(
                f"Run '{run.id}' ended {run.get_status()} without a result.",
                hint=f"See its log: {hints.command('run', 'logs', hints.short_id(run.id))}",
            )
        values = {f.name: getattr(result, f.name) for f in fields(TrainingResult)}
        return TrainingRunResult(
            **values,
            run_id=run.id,
            workspace=ws.name,
            experiment=exp.name,
            portal_url=_running_portal_url(run),
        )
