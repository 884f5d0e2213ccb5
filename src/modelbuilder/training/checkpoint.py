"""Trial checkpoints: each finished trial's ONNX model and validation scores, so a run can resume."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_write_bytes, atomic_write_text
from ..pipeline.preprocess import PreprocessSpec

CHECKPOINT_FORMAT_VERSION = 1


@dataclass
class FinishedTrial:
    name: str
    strategy: str
    backbone: str
    val_accuracy: float
    seconds: float
    preprocessing: dict[str, Any]
    params: dict[str, Any]
    onnx_file: str
    probs_file: str
    canceled: bool = False

    @property
    def spec(self) -> PreprocessSpec:
        return PreprocessSpec.from_dict(self.preprocessing)


class CheckpointDir:
    """``state.json`` + ``<trial>.onnx`` + ``<trial>.probs.npy`` in one folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.trials: list[FinishedTrial] = []
        self.elapsed = 0.0
        state = root / "state.json"
        if state.is_file():
            data = json.loads(state.read_text(encoding="utf-8"))
            if data.get("format_version") == CHECKPOINT_FORMAT_VERSION:
                self.elapsed = float(data.get("elapsed", 0.0))
                self.trials = [FinishedTrial(**t) for t in data.get("trials", [])
                               if (root / t["onnx_file"]).is_file()]

    def done(self, name: str) -> FinishedTrial | None:
        return next((t for t in self.trials if t.name == name and not t.canceled), None)

    def onnx_path(self, trial: FinishedTrial) -> Path:
        return self.root / trial.onnx_file

    def probabilities(self, trial: FinishedTrial) -> np.ndarray:
        return np.load(self.root / trial.probs_file)

    def add(self, trial: FinishedTrial, probabilities: np.ndarray, elapsed: float) -> None:
        buffer_path = self.root / trial.probs_file
        import io

        buffer = io.BytesIO()
        np.save(buffer, probabilities)
        atomic_write_bytes(buffer_path, buffer.getvalue())
        self.trials = [t for t in self.trials if t.name != trial.name] + [trial]
        self.save(elapsed)

    def save(self, elapsed: float) -> None:
        self.elapsed = elapsed
        atomic_write_text(self.root / "state.json", json.dumps({
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "elapsed": elapsed,
            "trials": [asdict(t) for t in self.trials],
        }, indent=1))

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
