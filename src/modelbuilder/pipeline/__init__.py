"""The torch-free prediction side: MLModel.zip, preprocessing and the onnxruntime PredictionEngine.

Nothing here imports torch, timm, fastapi, sqlalchemy or ray: predicting needs only onnxruntime,
numpy and Pillow.

The ``preprocess`` function is not re-exported here: ``modelbuilder.pipeline.preprocess`` is the
module (copied verbatim into generated code), and a function of the same name would shadow it.
"""

from __future__ import annotations

from .bundle import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    MODEL_NAME,
    Bundle,
    read_bundle,
    read_manifest,
    verify_bundle,
    write_bundle,
)
from .engine import ModelOutput, PredictionEngine, load_model
from .label_map import LABEL_MAP_NAME, read_label_map, write_label_map
from .onnx_metadata import MODEL_METADATA_KEYS, onnx_metadata_props, read_onnx_metadata
from .preprocess import ImageSource, PreprocessSpec, open_image

__all__ = [
    "Bundle",
    "FORMAT_VERSION",
    "ImageSource",
    "LABEL_MAP_NAME",
    "MANIFEST_NAME",
    "MODEL_METADATA_KEYS",
    "MODEL_NAME",
    "ModelOutput",
    "PredictionEngine",
    "PreprocessSpec",
    "load_model",
    "onnx_metadata_props",
    "open_image",
    "read_bundle",
    "read_label_map",
    "read_manifest",
    "read_onnx_metadata",
    "verify_bundle",
    "write_bundle",
    "write_label_map",
]
