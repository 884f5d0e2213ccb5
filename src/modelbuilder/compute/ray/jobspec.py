"""What the cluster is told about one run: ``RayJobSpec``, passed to the entrypoint as base64 JSON.

Its own small module, so the package's ``__init__`` (which registers the backend) never imports the
entrypoint module that ``python -m`` runs.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field
from typing import Any

JOB_FORMAT_VERSION = 1


@dataclass(frozen=True)
class RayJobSpec:
    """What the cluster needs to run one training run (no store URL, no credentials).

    Args:
        run_id: the run.
        config: ``TrainingConfig.to_dict()``; its ``data`` is a path the cluster can read, or "" when
            the data was uploaded as the job's working directory.
        target: ``module:function`` of the trainer.
        output_dir: where the trainer writes its outputs ("" : a folder in the job's working directory).
        checkpoint_dir: where it keeps checkpoints ("" : none).
    """

    run_id: str
    config: dict[str, Any]
    target: str
    output_dir: str = ""
    checkpoint_dir: str = ""
    format_version: int = JOB_FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_argument(self) -> str:
        return base64.urlsafe_b64encode(json.dumps(asdict(self)).encode()).decode()

    @classmethod
    def from_argument(cls, text: str) -> RayJobSpec:
        data = json.loads(base64.urlsafe_b64decode(text.encode()))
        if data.get("format_version") != JOB_FORMAT_VERSION:
            raise ValueError(f"job format {data.get('format_version')!r}, expected {JOB_FORMAT_VERSION}")
        return cls(**data)
