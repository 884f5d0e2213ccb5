"""The JSON shapes of the portal's API (pydantic models; the only module of the portal that uses pydantic).

Field names are the stable snake_case names of the CLI's ``--json`` output (``id``, ``name``, ``status``,
``experiment``, ``parent_run_id``, ``compute``, ``state``, ``size``, ``error``, metrics by name). Times are
ISO 8601 in UTC; durations are seconds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class ErrorOut(BaseModel):
    error: str = Field(description="What went wrong, naming the object.")
    hint: str | None = Field(None, description="How to fix it.")


class HealthOut(BaseModel):
    status: str = "ok"
    service: str = Field(description="Always 'modelbuilder-portal', so a launcher can tell us apart.")
    version: str
    workspace: str = Field(description="The workspace the portal was started for.")
    pid: int
    home: str = Field(description="The MODELBUILDER_HOME it serves (launchers use only their own home's).")
    instance: str = Field(description="Random per start of the portal (matches its record file).")
    port: int = Field(description="The port it was started on.")
    workspaces: list[str] = Field(description="The workspaces of its home, which it all serves.")


class WorkspaceOut(BaseModel):
    name: str
    resource_group: str
    region: str
    created_at: datetime
    url: str
    computes_url: str


class RunSummary(BaseModel):
    id: str
    name: str | None
    display_name: str
    experiment: str
    parent_run_id: str | None
    status: str
    is_active: bool
    phase: str | None
    compute: str | None
    backbone: str | None
    accuracy: float | None = Field(description="The run's best accuracy (its 'accuracy' metric).")
    created_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    duration_s: float | None = Field(description="From start to end (or to now, while active).")
    error: str | None = Field(description="Why a Failed run failed: the error's message.")
    error_type: str | None = Field(default=None, description="The error's class (DatasetError, ...).")
    error_hint: str | None = Field(default=None, description="How to fix it.")
    status_label: str = Field(
        default="",
        description="The status as shown: 'Failed (process lost)' for a run whose worker vanished.",
    )
    url: str


class ExperimentOut(BaseModel):
    id: str
    name: str
    workspace: str
    created_at: datetime
    run_count: int = Field(description="Top-level runs (trials are child runs and not counted).")
    latest_run: RunSummary | None
    url: str


class ResourceGroupOut(BaseModel):
    name: str
    created_at: datetime
    workspaces: list[WorkspaceOut]


class WorkspaceDetailOut(WorkspaceOut):
    experiments: list[ExperimentOut]


class RunPageOut(BaseModel):
    items: list[RunSummary]
    total: int
    offset: int
    limit: int
    order_by: str


class RunDetailOut(RunSummary):
    params: dict[str, Any]
    metrics: dict[str, float] = Field(description="The latest value of each metric.")
    dataset_fingerprint: str | None
    heartbeat_at: datetime | None
    elapsed_s: float | None
    time_budget_s: float | None
    remaining_s: float | None = Field(description="Estimated from the time budget while the run is active.")
    progress: float | None = Field(description="Progress of the current phase, 0..1, when reported.")
    child_count: int
    best_child_id: str | None
    can_cancel: bool
    has_results: bool = Field(description="True when the run has an evaluation or a model to show.")


class TrialOut(RunSummary):
    metrics: dict[str, float]
    best_val_accuracy: float | None
    epochs: int
    is_best: bool
    params: dict[str, Any]


class MetricPointOut(BaseModel):
    step: int
    value: float | None
    timestamp: float


class LogLineOut(BaseModel):
    number: int
    timestamp: float
    text: str


class LogPageOut(BaseModel):
    lines: list[LogLineOut]
    total: int = Field(description="How many lines the run's log has.")
    next_offset: int = Field(description="Ask for this offset next to get only new lines.")


class ArtifactOut(BaseModel):
    path: str
    size: int
    sha256: str | None = Field(description="From the run's artifact record, when recorded.")
    kind: str = Field(description="model, label_map, bundle, code, evaluation, log or file.")
    title: str
    url: str


class PerClassOut(BaseModel):
    label: str
    precision: float
    recall: float
    f1: float
    support: int


class ConfusionMatrixOut(BaseModel):
    labels: list[str]
    matrix: list[list[int]]


class EvaluationItemOut(BaseModel):
    path: str | None
    true_label: str
    predicted_label: str
    score: float | None
    thumbnail_url: str | None


class EvaluationOut(BaseModel):
    accuracy: float | None
    macro_accuracy: float | None
    log_loss: float | None
    num_samples: int | None
    per_class: list[PerClassOut]
    confusion_matrix: ConfusionMatrixOut | None
    most_confidently_wrong: list[EvaluationItemOut]
    validation_item_count: int
    items_url: str


class EvaluationItemsOut(BaseModel):
    items: list[EvaluationItemOut]
    total: int
    offset: int
    limit: int


class ScoreOut(BaseModel):
    label: str
    score: float


class PredictionOut(BaseModel):
    prediction: str
    score: list[float] = Field(description="The probability of each label, in label order.")
    labels: list[str]
    ranked: list[ScoreOut] = Field(description="Labels with their probability, most likely first.")
    image_format: str
    width: int
    height: int


class SizeSpecOut(BaseModel):
    name: str
    vcpus: int
    memory_gib: float
    temp_storage_gib: int
    gpus: int
    gpu_memory_gib: int
    max_data_disks: int
    max_nics: int
    gpu_model: str | None
    description: str


class ComputeOut(BaseModel):
    name: str
    workspace: str
    size: str
    spec: SizeSpecOut | None = Field(description="The size's catalog entry (None for an unknown size).")
    backend: str
    state: str
    error: str | None
    fixes: list[str] = Field(description="For a Failed compute: the two ways out.")
    min_nodes: int
    max_nodes: int
    idle_seconds_before_scaledown: int
    address: str | None
    token_env: str | None = Field(
        default=None,
        description="The environment variable that holds the cluster's token (its name; the token itself "
        "is never stored or shown).",
    )
    created_at: datetime | None


class NodeOut(BaseModel):
    address: str = Field(description="The node's IP (Ray) or host name (local).")
    cpus: float
    gpus: float
    gpu_names: list[str]
    memory_gib: float
    memory_available_gib: float | None = Field(description="Free now; None where the backend does not say.")


class ComputeResourcesOut(BaseModel):
    compute: str
    backend: str
    address: str | None
    state: str
    known: bool = Field(description="False when the backend cannot tell its nodes.")
    unreachable: str | None = Field(description="Why the nodes could not be read (the cluster's error).")
    nodes: list[NodeOut]


class CompareRowOut(BaseModel):
    key: str
    values: list[Any]
    differs: bool


class CompareOut(BaseModel):
    runs: list[RunSummary]
    params: list[CompareRowOut]
    metrics: list[CompareRowOut]


class CancelOut(BaseModel):
    run: RunSummary
    message: str
