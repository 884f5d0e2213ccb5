"""A tiny ONNX colour classifier built with onnx.helper (no torch), shared by pipeline and codegen tests.

``input1`` float32 [N,3,H,W] -> ReduceMean over H,W -> [N,3] -> MatMul [3,C] -> ``output1`` [N,C].
With SPEC's normalisation ((x - 0.5) / 0.5, so pixels lie in -1..1) a pure red image predicts
label 0, green label 1 and blue label 2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelbuilder.pipeline.onnx_metadata import onnx_metadata_props
from modelbuilder.pipeline.preprocess import PreprocessSpec

LABELS = ["red", "green", "blue"]
SPEC = PreprocessSpec(resize_size=36, crop_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
WEIGHTS = np.eye(3, dtype=np.float32) * 4.0
PURE = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def make_classifier(
    path: Path,
    *,
    num_classes: int = 3,
    size: int | None = 32,
    batch: int | str = "N",
    input_name: str = "input1",
    output_name: str = "output1",
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write the colour classifier to ``path`` (``size=None`` makes H and W symbolic)."""
    import onnx
    from onnx import TensorProto, helper

    weights = np.zeros((3, num_classes), dtype=np.float32)
    weights[:, : min(3, num_classes)] = WEIGHTS[:, : min(3, num_classes)]
    height: int | str = size if size is not None else "H"
    width: int | str = size if size is not None else "W"
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", [input_name], ["pooled"], axes=[2, 3], keepdims=0),
            helper.make_node("MatMul", ["pooled", "weights"], [output_name]),
        ],
        "colour_classifier",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, 3, height, width])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch, num_classes])],
        initializer=[helper.make_tensor("weights", TensorProto.FLOAT, list(weights.shape), weights.ravel())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def default_metadata() -> dict[str, str]:
    return onnx_metadata_props(LABELS, SPEC)
