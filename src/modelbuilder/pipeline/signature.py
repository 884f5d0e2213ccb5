"""The input/output signature of an ONNX classifier, read through onnxruntime, and its checks.

A modelbuilder classifier has one float32 input ``[N, 3, H, W]`` and a float32 output ``[N, C]``
(``input1`` / ``output1`` when exported by modelbuilder). The MLModel.zip manifest records both;
:func:`check_signature` proves that a model and a manifest agree before anything is predicted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

from ..errors import BundleError

Dim: TypeAlias = "int | str | None"

FLOAT_TENSOR = "tensor(float)"
_REBUILD_HINT = (
    "Re-create MLModel.zip from the run's bestModel.onnx and bestModelMap.json, or download it again."
)


@dataclass(frozen=True)
class TensorInfo:
    """One model input or output: name, shape (int, symbolic str or None per dim) and ONNX type."""

    name: str
    shape: tuple[Dim, ...]
    type: str

    @classmethod
    def from_ort(cls, arg: Any) -> TensorInfo:
        return cls(name=str(arg.name), shape=tuple(arg.shape), type=str(arg.type))


@dataclass(frozen=True)
class OnnxSignature:
    """All inputs and outputs of an ONNX model, in the model's order."""

    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    @classmethod
    def from_session(cls, session: Any) -> OnnxSignature:
        """Read the signature of an ``onnxruntime.InferenceSession``."""
        return cls(
            inputs=tuple(TensorInfo.from_ort(arg) for arg in session.get_inputs()),
            outputs=tuple(TensorInfo.from_ort(arg) for arg in session.get_outputs()),
        )

    def output(self, name: str) -> TensorInfo | None:
        return next((info for info in self.outputs if info.name == name), None)


def create_session(model: bytes | str, *, source: str, threads: int = 1, optimize: bool = False) -> Any:
    """An onnxruntime CPU session for ``model`` (bytes or a file path).

    Execution is sequential with ``threads`` intra-op threads; ``optimize`` enables every graph
    optimisation (worth it for a session that predicts, not for one that only reads the signature).

    Raises:
        BundleError: onnxruntime cannot load the model.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own, unexported exception types
        raise BundleError(f"{source} is not a loadable ONNX model: {exc}", hint=_REBUILD_HINT) from exc


def inspect_onnx(model: bytes | str, *, source: str) -> OnnxSignature:
    """Load ``model`` cheaply (no graph optimisation) and return its signature.

    Raises:
        BundleError: onnxruntime cannot load the model.
    """
    return OnnxSignature.from_session(create_session(model, source=source))


def schema_from_signature(signature: OnnxSignature, crop_size: int, num_labels: int) -> tuple[dict, dict]:
    """The manifest's ``input`` and ``output`` entries for a classifier with this signature.

    Raises:
        BundleError: the model is not a one-input image classifier compatible with the sizes given.
    """
    if len(signature.inputs) != 1 or not signature.outputs:
        raise BundleError(
            f"An image classifier needs exactly one input and at least one output. The model has "
            f"{len(signature.inputs)} input(s) and {len(signature.outputs)} output(s).",
            hint="Export the model with one [N,3,H,W] input (input1) and one [N,C] logits output (output1).",
        )
    model_input, model_output = signature.inputs[0], signature.outputs[0]
    batch = _batch_dim(model_input.shape)
    input_entry = {
        "name": model_input.name,
        "dtype": "float32",
        "shape": [batch, 3, crop_size, crop_size],
    }
    output_entry = {
        "name": model_output.name,
        "dtype": "float32",
        "shape": [batch, num_labels],
        "kind": "logits",
    }
    check_signature(signature, {"input": input_entry, "output": output_entry}, source="The model")
    return input_entry, output_entry


def check_signature(signature: OnnxSignature, manifest: dict[str, Any], *, source: str) -> None:
    """Check that the model's input and output agree with ``manifest['input']`` / ``['output']``.

    Raises:
        BundleError: names, element types, ranks or static dimensions disagree.
    """
    expected_input, expected_output = manifest["input"], manifest["output"]
    if len(signature.inputs) != 1:
        names = [info.name for info in signature.inputs]
        raise BundleError(
            f"{source} must have exactly one input. Got {len(names)} inputs {names} instead.",
            hint=_REBUILD_HINT,
        )
    _check_tensor(signature.inputs[0], expected_input, source=source, role="input")
    model_output = signature.output(str(expected_output["name"]))
    if model_output is None:
        names = [info.name for info in signature.outputs]
        raise BundleError(
            f"{source} has no output named '{expected_output['name']}'. Its outputs are {names}.",
            hint=_REBUILD_HINT,
        )
    _check_tensor(model_output, expected_output, source=source, role="output")


def _check_tensor(info: TensorInfo, expected: dict[str, Any], *, source: str, role: str) -> None:
    if info.name != expected["name"]:
        raise BundleError(
            f"The {role} of {source} must be named '{expected['name']}'. Got '{info.name}' instead.",
            hint=_REBUILD_HINT,
        )
    if info.type != FLOAT_TENSOR:
        raise BundleError(
            f"The {role} '{info.name}' of {source} must be float32 ({FLOAT_TENSOR}). "
            f"Got {info.type} instead.",
            hint="Export the model with float32 inputs and outputs.",
        )
    shape = list(expected["shape"])
    if len(info.shape) != len(shape) or any(
        isinstance(have, int) and isinstance(want, int) and have != want
        for have, want in zip(info.shape, shape, strict=True)
    ):
        raise BundleError(
            f"The {role} '{info.name}' of {source} must have shape {_show(shape)}. "
            f"Got {_show(info.shape)} instead.",
            hint=(
                "The labels or the preprocessing size do not match the model: "
                "use the bestModelMap.json and settings that were trained with it."
            ),
        )


def _batch_dim(shape: tuple[Dim, ...]) -> int | str:
    first = shape[0] if shape else None
    return first if isinstance(first, int) and first > 0 else "N"


def _show(shape: Any) -> str:
    return "[" + ", ".join("?" if dim is None else str(dim) for dim in shape) + "]"
