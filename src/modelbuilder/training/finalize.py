"""Write the outputs of a finished search: ONNX, label map, MLModel.zip, evaluation, generated code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..codegen import generate_code
from ..data import ImageItem
from ..fileio import atomic_copy, atomic_write_text
from ..pipeline.bundle import write_bundle
from ..pipeline.label_map import write_label_map
from .checkpoint import CheckpointDir, FinishedTrial
from .config import TrainingConfig
from .evaluation import evaluate, format_evaluation
from .reporter import Reporter


def finalize_outputs(config: TrainingConfig, reporter: Reporter, work_dir: Path, best: FinishedTrial,
                     checkpoints: CheckpointDir, labels: list[str], val_items: list[ImageItem],
                     y_val: np.ndarray, skipped: list[dict[str, str]],
                     ) -> tuple[dict[str, Any], dict[str, Path]]:
    """Write every output atomically into ``work_dir`` and report each one as an artifact."""
    files: dict[str, Path] = {}
    onnx_path = atomic_copy(checkpoints.onnx_path(best), work_dir / "bestModel.onnx")
    files["bestModel.onnx"] = onnx_path
    files["bestModelMap.json"] = write_label_map(work_dir / "bestModelMap.json", labels)
    metadata = {"backbone": best.backbone, "strategy": best.strategy,
                "val_accuracy": best.val_accuracy, "trial": best.name, "seed": config.seed}
    files["MLModel.zip"] = write_bundle(work_dir / "MLModel.zip", onnx_path, labels, best.spec,
                                        metadata=metadata)
    probabilities = checkpoints.probabilities(best)
    paths = [str(item.path) for item in val_items]
    evaluation = evaluate(y_val, probabilities, labels, paths)
    predicted = probabilities.argmax(1)
    evaluation.update({
        "backbone": best.backbone,
        "strategy": best.strategy,
        "preprocessing": best.preprocessing,
        "skipped_images": skipped,
        "trials": [{"name": t.name, "strategy": t.strategy, "backbone": t.backbone,
                    "val_accuracy": t.val_accuracy, "seconds": round(t.seconds, 2),
                    "image_size": t.preprocessing["crop_size"], "params": t.params,
                    "best": t.name == best.name} for t in checkpoints.trials],
        "validation_items": [
            {"path": path, "true_label": labels[int(true)], "predicted_label": labels[int(pred)],
             "score": float(probabilities[i, pred])}
            for i, (path, true, pred) in enumerate(zip(paths, y_val, predicted, strict=True))
        ],
    })
    files["evaluation.json"] = atomic_write_text(work_dir / "evaluation.json",
                                                 json.dumps(evaluation, indent=1, ensure_ascii=False))
    reporter.log(format_evaluation(evaluation))
    reporter.phase("codegen", "Generating the Model, ConsoleApp and WebApi projects")
    sample = val_items[0].path if val_items else None
    projects = generate_code(work_dir, config.project_name, files["MLModel.zip"], sample)
    for project in projects.values():
        files[project.name] = project
    for name, path in files.items():
        reporter.artifact(path, name)
    return evaluation, files
