"""modelbuilder: turn a folder of labelled images into a shippable image classifier.

Everything public is importable from here; heavy modules (torch, the store, the portal) load on first
use, so ``import modelbuilder`` stays fast and torch-free::

    import modelbuilder
    result = modelbuilder.train("images/", output="out", time="5m")
    engine = modelbuilder.load_model("out/MLModel.zip")
    print(engine.predict("cat.jpg").prediction)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # prediction (torch-free)
    "ModelOutput": "modelbuilder.pipeline",
    "PredictionEngine": "modelbuilder.pipeline",
    "load_model": "modelbuilder.pipeline",
    "PreprocessSpec": "modelbuilder.pipeline.preprocess",
    # training
    "TrainingConfig": "modelbuilder.training.config",
    "TrainingResult": "modelbuilder.training.config",
    "parse_duration": "modelbuilder.training.config",
    "list_backbones": "modelbuilder.training.backbones",
    "create_backbone": "modelbuilder.training.backbones",
    "get_backbone_spec": "modelbuilder.training.backbones",
    # resource model
    "Workspace": "modelbuilder.workspace",
    "Experiment": "modelbuilder.workspace",
    "Run": "modelbuilder.workspace",
    "TrainingRunResult": "modelbuilder.workspace",
    "train": "modelbuilder.workspace",
    "RunStatus": "modelbuilder.entities",
    "ProvisioningState": "modelbuilder.entities",
    "ComputeSize": "modelbuilder.entities",
    "list_sizes": "modelbuilder.compute.sizes",
    # errors: the whole tree of modelbuilder.errors (tests/test_public_api.py checks it is complete)
    **{
        name: "modelbuilder.errors"
        for name in (
            "ModelBuilderError",
            "InvalidParameterError",
            "InvalidNameError",
            "NotFoundError",
            "WorkspaceNotFoundError",
            "ResourceGroupNotFoundError",
            "ExperimentNotFoundError",
            "RunNotFoundError",
            "ComputeNotFoundError",
            "BackboneNotFoundError",
            "ArtifactNotFoundError",
            "AlreadyExistsError",
            "ComputeExistsError",
            "InvalidStateError",
            "DatasetError",
            "ImageError",
            "WeightsError",
            "TrainingError",
            "ExportError",
            "BundleError",
            "ComputeError",
            "BackendUnavailableError",
            "OfflineModeError",
            "MissingDependencyError",
            "WorkspaceError",
            "WorkspaceBusyError",
            "SchemaVersionError",
        )
    },
}

__all__ = sorted([*_EXPORTS, "__version__"])

if TYPE_CHECKING:  # the re-exported names, for type checkers and IDEs
    from .compute.sizes import list_sizes
    from .entities import ComputeSize, ProvisioningState, RunStatus
    from .errors import (
        AlreadyExistsError,
        ArtifactNotFoundError,
        BackboneNotFoundError,
        BackendUnavailableError,
        BundleError,
        ComputeError,
        ComputeExistsError,
        ComputeNotFoundError,
        DatasetError,
        ExperimentNotFoundError,
        ExportError,
        ImageError,
        InvalidNameError,
        InvalidParameterError,
        InvalidStateError,
        MissingDependencyError,
        ModelBuilderError,
        NotFoundError,
        OfflineModeError,
        ResourceGroupNotFoundError,
        RunNotFoundError,
        SchemaVersionError,
        TrainingError,
        WeightsError,
        WorkspaceBusyError,
        WorkspaceError,
        WorkspaceNotFoundError,
    )
    from .pipeline import ModelOutput, PredictionEngine, load_model
    from .pipeline.preprocess import PreprocessSpec
    from .training.backbones import create_backbone, get_backbone_spec, list_backbones
    from .training.config import TrainingConfig, TrainingResult, parse_duration
    from .workspace import Experiment, Run, TrainingRunResult, Workspace, train


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'modelbuilder' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
