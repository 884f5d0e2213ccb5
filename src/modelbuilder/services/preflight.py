"""Refuse bad training input before a run exists, in the submitting process.

A typo (a wrong folder, one label, an unknown architecture) would otherwise become a ``Failed`` run left
behind in the experiment. ``check_submission`` runs the cheap checks that need no image content, with the
same message and hint the run would report: names, architecture, strategies, and a listing of the data
(``data.list_source`` opens directory listings and the CSV, never an image). Checks that need every file
(corrupt images, duplicates) stay in the run, where they are reported per file.

Data that this machine cannot see (a Ray compute reading a cluster path) cannot be listed here: its checks
are then deferred to the run, and a warning says so.

Torch-free: the backbone and trial registries are plain data until a backbone or trial is built.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..data.scan import check_label_count, check_required_labels, list_source
from ..errors import DatasetError
from ..names import check_experiment_name
from ..training import registry
from ..training.backbones import get_backbone_spec
from ..training.config import TrainingConfig

logger = logging.getLogger(__name__)

LOCAL_BACKEND = "local"


@dataclass(frozen=True)
class Preflight:
    """What the checks before the run found.

    Attributes:
        data_visible: the training data exists on this machine (so it was checked, and can be fingerprinted).
        deferred: why some data checks were left to the run (data not visible here), or None.
    """

    data_visible: bool
    deferred: str | None = None


def check_submission(
    config: TrainingConfig, *, experiment: str, compute: str = "local", backend: str = LOCAL_BACKEND
) -> Preflight:
    """Check a submission before its run is created; raise the error the run would end with.

    Args:
        config: the training config, paths absolute.
        experiment: the experiment name the run will be logged under.
        compute: the compute's name (for the deferral message).
        backend: the compute's backend; only a non-local one may read data this machine cannot see.

    Raises:
        InvalidNameError: the experiment name breaks its rule.
        BackboneNotFoundError: ``config.architecture`` is not a registered backbone (nor ``auto``).
        InvalidParameterError: ``config.strategies`` names an unknown strategy.
        DatasetError: the data (or validation data) is missing, empty, without label folders, an unreadable
            CSV/TSV, has fewer than 2 labels, or validation labels that differ from the training labels.
    """
    check_experiment_name(experiment)
    check_architecture(config.architecture)
    check_strategies(config.strategies)
    paths = (config.data, config.validation_data)
    deferred = [path for path in paths if path is not None and not _visible(path, backend)]
    if deferred:
        reason = (
            f"{' and '.join(repr(path) for path in deferred)} cannot be seen from this machine, so the data "
            f"checks are deferred to the run on compute '{compute}'."
        )
        logger.warning(reason)
    else:
        reason = None
    if config.data in deferred:
        return Preflight(data_visible=False, deferred=reason)
    listing, what = list_source(config.data)
    labels = sorted(listing.labels)
    check_label_count(what, Path(config.data), labels)
    if config.validation_data is not None and config.validation_data not in deferred:
        check_validation_data(config.validation_data, labels)
    return Preflight(data_visible=True, deferred=reason)


def check_architecture(architecture: str) -> None:
    """Raises: BackboneNotFoundError for a name that is neither ``auto`` nor a registered backbone."""
    if architecture != "auto":
        get_backbone_spec(architecture)


def check_strategies(strategies: tuple[str, ...] | None) -> None:
    """Raises: InvalidParameterError for a strategy that is not in the trial registry (checked again here:
    a resumed run's config comes from stored params, and a custom trial may have been unregistered)."""
    registry.check_strategies(strategies)


def check_validation_data(validation_data: str, training_labels: list[str]) -> None:
    """Validation data must exist and have exactly the training labels, each with at least one file.

    Raises:
        DatasetError: as the run would: missing, empty, or labels that differ from the training labels.
    """
    if not Path(validation_data).exists():
        raise DatasetError(
            f"The validation data {validation_data!r} does not exist.",
            hint="Give a folder with the same label sub-folders as the training data, or leave "
            "--validation-data out to split the training data.",
        )
    listing, what = list_source(validation_data)
    present = {label for _, label, _ in listing.entries}
    check_required_labels(what, sorted(listing.labels), present, training_labels)


def _visible(path: str, backend: str) -> bool:
    """Can the data checks run here? Always on a local compute (a missing path is then an error)."""
    return backend == LOCAL_BACKEND or Path(path).exists()
