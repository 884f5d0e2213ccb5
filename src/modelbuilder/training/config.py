"""TrainingConfig and TrainingResult: torch-free, so the CLI, services and backends can use them."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidParameterError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|secs|m|min|mins|h|hr|hrs)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {
    "s": 1, "sec": 1, "secs": 1, "m": 60, "min": 60, "mins": 60, "h": 3600, "hr": 3600, "hrs": 3600,
}

ON_BAD_IMAGE = ("skip", "fail")


def parse_duration(text: str | float | int) -> float:
    """'90s', '5m', '1h', '2.5m' or a number of seconds -> seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if not match:
            raise InvalidParameterError(
                f"The 'time' parameter must be a duration such as 90s, 5m or 1h. Got {text!r} instead.",
                hint="Write a number followed by s, m or h, for example --time 5m.",
            )
        seconds = float(match.group(1)) * _UNIT_SECONDS[(match.group(2) or "s").lower()]
    if not 5 <= seconds <= 7 * 24 * 3600:
        raise InvalidParameterError(
            f"The 'time' parameter must be between 5s and 168h. Got {seconds:g} seconds instead.",
            hint="Give a budget such as --time 2m.",
        )
    return seconds


def _check(condition: bool, name: str, expected: str, value: object, hint: str | None = None) -> None:
    if not condition:
        raise InvalidParameterError(
            f"The '{name}' parameter of TrainingConfig must be {expected}. Got {value!r} instead.",
            hint=hint,
        )


@dataclass(frozen=True)
class TrainingConfig:
    """What to train and how long. ``__post_init__`` validates every field.

    Args:
        data: a folder with one sub-folder per label, or a CSV/TSV file with ImagePath,Label columns.
        time_budget: seconds of training (use ``parse_duration`` for "5m").
        architecture: a backbone name from ``list_backbones()`` or "auto".
        weights: an explicit weights file for the backbone (highest priority).
        validation_data: a separate labelled folder/CSV for validation (else a stratified split).
        validation_fraction: share of each label held out for validation when no validation_data.
        on_bad_image: "skip" (report and skip) or "fail" (stop before training).
        name: the name of the generated code projects (default: the data folder's name).
        seed: makes splits, initialisation and augmentation reproducible.
        max_trials: an upper bound on trials (None: as many as the budget allows).
        strategies: the trials to try, by registry name (None: every registered trial); unknown names
            are refused with the list of known ones.
        replay_plan: a recorded plan (``plan.json`` of a finished run) to run again exactly, bounded by
            its recorded steps instead of the time budget.
    """

    data: str
    time_budget: float = 300.0
    architecture: str = "auto"
    weights: str | None = None
    validation_data: str | None = None
    validation_fraction: float = 0.2
    on_bad_image: str = "skip"
    name: str | None = None
    seed: int = 0
    max_trials: int | None = None
    strategies: tuple[str, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    replay_plan: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        _check(isinstance(self.data, str) and bool(self.data), "data", "a path", self.data)
        _check(
            isinstance(self.time_budget, (int, float)) and 5 <= self.time_budget <= 7 * 24 * 3600,
            "time_budget", "a number of seconds in [5, 604800]", self.time_budget,
        )
        _check(
            isinstance(self.validation_fraction, float) and 0.01 <= self.validation_fraction <= 0.9,
            "validation_fraction", "a float in the range [0.01, 0.9]", self.validation_fraction,
        )
        _check(self.on_bad_image in ON_BAD_IMAGE, "on_bad_image", "'skip' or 'fail'", self.on_bad_image)
        _check(isinstance(self.seed, int) and self.seed >= 0, "seed", "an int >= 0", self.seed)
        _check(
            self.max_trials is None or (isinstance(self.max_trials, int) and self.max_trials >= 1),
            "max_trials", "None or an int >= 1", self.max_trials,
        )
        from .registry import check_strategies

        if self.strategies is not None and not isinstance(self.strategies, tuple):
            object.__setattr__(self, "strategies", tuple(self.strategies))
        check_strategies(self.strategies)
        if self.replay_plan is not None:
            from .plan import check_plan_dict

            check_plan_dict(self.replay_plan)

    @property
    def project_name(self) -> str:
        """Name of the generated <Name>.Model / <Name>.ConsoleApp projects."""
        if self.name:
            return self.name
        base = Path(self.data).resolve()
        stem = base.name if base.is_dir() else base.stem
        cleaned = re.sub(r"[^A-Za-z0-9_]+", "_", stem).strip("_")[:60]
        if cleaned and not cleaned[0].isalpha():
            cleaned = f"Model_{cleaned}"
        return cleaned or "ImageClassifier"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["strategies"] = list(self.strategies) if self.strategies else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingConfig:
        data = dict(data)
        if data.get("strategies") is not None:
            data["strategies"] = tuple(data["strategies"])
        return cls(**data)


@dataclass
class TrialSummary:
    name: str
    strategy: str
    backbone: str
    image_size: int
    val_accuracy: float
    seconds: float
    status: str = "Completed"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainingResult:
    """What ``modelbuilder.train`` returns: the best model's metrics and where the outputs are."""

    accuracy: float
    macro_accuracy: float
    backbone: str
    strategy: str
    labels: list[str]
    seconds: float
    output_dir: Path
    files: dict[str, Path]
    trials: list[TrialSummary]
    skipped_images: list[dict[str, str]]
    evaluation: dict[str, Any]
    canceled: bool = False
    plan: dict[str, Any] | None = None  # the executed plan (``Plan.to_dict()``), also in plan.json

    @property
    def model_path(self) -> Path:
        return self.files["MLModel.zip"]

    @property
    def algorithm(self) -> str:
        return f"{self.backbone} + {self.strategy}"
