"""``modelbuilder predict MODEL IMAGE...``: one line per image (``--json``: a JSON list)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import ImageError
from ..pipeline import load_model
from ._common import EXIT_ERROR, JsonOption, WorkspaceOption, message, print_json


def predict(
    model: Annotated[Path, typer.Argument(help="MLModel.zip (or bestModel.onnx, or an outputs folder).")],
    images: Annotated[list[Path], typer.Argument(help="Image files.")],
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Predict the label of each image: '<image>\\t<label>\\t<score>' per line."""
    engine = load_model(model)
    results: list[dict[str, Any]] = []
    failed = 0
    for image in images:
        try:
            output = engine.predict(str(image))
        except (ImageError, FileNotFoundError, IsADirectoryError) as exc:
            failed += 1
            message(f"Error: {image}: {exc}")
            results.append({"image": str(image), "error": str(exc)})
            continue
        best = max(output.score) if output.score else 0.0
        results.append(
            {
                "image": str(image),
                "prediction": output.prediction,
                "score": best,
                "scores": dict(zip(engine.labels, output.score, strict=True)),
            }
        )
        if not json_:
            sys.stdout.write(f"{image}\t{output.prediction}\t{best:.4f}\n")
    if json_:
        print_json(results)
    if failed:
        raise typer.Exit(EXIT_ERROR)
