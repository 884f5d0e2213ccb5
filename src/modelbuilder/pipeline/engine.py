"""PredictionEngine: MLModel.zip (or bestModel.onnx) + onnxruntime + numpy + Pillow, nothing else.

    >>> engine = load_model("outputs/MLModel.zip")
    >>> engine.predict("cat.jpg")
    ModelOutput(prediction='cat', score=[0.97, 0.03])

One onnxruntime session is created per engine (sequential execution, full graph optimisation, one
intra-op thread per physical core). Images are decoded and preprocessed with exactly the functions
training used for validation (:mod:`modelbuilder.pipeline.preprocess`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError, ImageError, InvalidParameterError
from .bundle import FORMAT_VERSION, MODEL_NAME, read_bundle
from .label_map import LABEL_MAP_NAME, read_label_map
from .onnx_metadata import LABELS_KEY, PREPROCESSING_KEY, decode_metadata_map
from .preprocess import ImageDecodeError, ImageSource, PreprocessSpec, preprocess
from .signature import OnnxSignature, check_signature, create_session, schema_from_signature

logger = logging.getLogger(__name__)

ACCEPTED_IMAGES_HINT = (
    "Give a path to an image file (JPEG, PNG, BMP, GIF, TIFF, WebP, ...), its bytes, a PIL image, "
    "or a uint8 numpy array shaped HxW, HxWx3 or HxWx4."
)


@dataclass(frozen=True)
class ModelOutput:
    """One prediction: the most likely label and the softmax probability of every label, in label order."""

    prediction: str
    score: list[float]


def physical_cores() -> int:
    """Physical cores this process may use (the intra-op thread count that runs fastest)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or usable
    except ImportError:
        physical = usable
    return max(1, min(usable, physical))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable for large logits)."""
    # In place on one float64 copy, with array methods instead of np.max/np.sum: the same operations
    # in the same order (bit-identical), but fewer calls, which is what a single prediction pays for.
    exp = logits.astype(np.float64)
    exp -= exp.max(axis=-1, keepdims=True)
    np.exp(exp, out=exp)
    exp /= exp.sum(axis=-1, keepdims=True)
    return exp


class PredictionEngine:
    """Predicts labels for images with an exported modelbuilder classifier.

    Create it with :meth:`load` (or :func:`load_model`); the constructor takes an existing session.
    """

    def __init__(
        self, session: Any, labels: list[str], preprocessing: PreprocessSpec, manifest: dict[str, Any]
    ) -> None:
        self._session = session
        self.labels = list(labels)
        self.preprocessing = preprocessing
        self.manifest = manifest
        self._input_name = str(manifest["input"]["name"])
        self._output_names = [str(manifest["output"]["name"])]
        self._outputs_probabilities = manifest["output"].get("kind") == "probabilities"
        batch = session.get_inputs()[0].shape[0]
        self._max_batch = batch if isinstance(batch, int) and batch > 0 else None
        # predict() hands its own [1, 3, H, W] float32 tensor straight to the session when the model
        # takes a batch of one; predict_logits' checks are for batches that callers build.
        self._runs_single = self._max_batch in (None, 1)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, threads: int | None = None) -> PredictionEngine:
        """Load MLModel.zip, a folder holding it (or bestModel.onnx), or a bare ``.onnx`` file.

        A bare ONNX file takes its labels from ``bestModelMap.json`` next to it (else from its
        ``modelbuilder.labels`` metadata) and its preprocessing from ``modelbuilder.preprocessing``.

        Args:
            path: the model to load.
            threads: onnxruntime intra-op threads (default: physical cores).

        Raises:
            BundleError: the model is missing, corrupt, or its parts disagree.
        """
        model_path = Path(path)
        if model_path.is_dir():
            model_path = _model_in_folder(model_path)
        if not model_path.exists():
            raise BundleError(
                f"Model file '{model_path}' does not exist.",
                hint="Give the path to MLModel.zip or bestModel.onnx from a completed run's outputs folder.",
            )
        if model_path.suffix.lower() == ".onnx":
            return cls._load_onnx(model_path, threads)
        bundle = read_bundle(model_path)
        source = f"{bundle.manifest['model']} in MLModel.zip '{model_path}'"
        session = create_session(
            bundle.model_bytes, source=source, threads=threads or physical_cores(), optimize=True
        )
        check_signature(OnnxSignature.from_session(session), bundle.manifest, source=source)
        return cls(session, bundle.labels, bundle.preprocessing, bundle.manifest)

    @classmethod
    def _load_onnx(cls, path: Path, threads: int | None) -> PredictionEngine:
        source = f"ONNX model '{path}'"
        session = create_session(str(path), source=source, threads=threads or physical_cores(), optimize=True)
        metadata = decode_metadata_map(session.get_modelmeta().custom_metadata_map, source=source)
        map_path = path.with_name(LABEL_MAP_NAME)
        if map_path.is_file():
            labels = read_label_map(map_path)
            embedded = metadata.get(LABELS_KEY)
            if embedded is not None and embedded != labels:
                logger.warning(
                    "%s: using the labels of %s, which differ from the model's metadata.", path, map_path
                )
        elif LABELS_KEY in metadata:
            labels = list(metadata[LABELS_KEY])
        else:
            raise BundleError(
                f"{source} has no labels: there is no {LABEL_MAP_NAME} next to it "
                f"and no '{LABELS_KEY}' metadata.",
                hint=f"Copy the run's {LABEL_MAP_NAME} next to the model, or load MLModel.zip instead.",
            )
        if PREPROCESSING_KEY not in metadata:
            raise BundleError(
                f"{source} does not say how to preprocess images (no '{PREPROCESSING_KEY}' metadata).",
                hint="Load the run's MLModel.zip instead, which carries the preprocessing in its manifest.",
            )
        spec = PreprocessSpec.from_dict(metadata[PREPROCESSING_KEY])
        model_input, model_output = schema_from_signature(
            OnnxSignature.from_session(session), spec.crop_size, len(labels)
        )
        manifest = {
            "format_version": FORMAT_VERSION,
            "model": path.name,
            "label_map": LABEL_MAP_NAME,
            "labels": labels,
            "preprocessing": spec.to_dict(),
            "input": model_input,
            "output": model_output,
            "metadata": {
                key: value for key, value in metadata.items() if not key.startswith("modelbuilder.")
            },
        }
        return cls(session, labels, spec, manifest)

    # ------------------------------------------------------------------------------------ prediction
    def prepare(self, source: ImageSource) -> np.ndarray:
        """Decode and preprocess one image into the model's float32 ``[3, H, W]`` input.

        Raises:
            ImageError: the source is not a readable image or has an unsupported array shape.
        """
        try:
            return preprocess(source, self.preprocessing)
        except ImageDecodeError as exc:
            raise ImageError(str(exc), hint=ACCEPTED_IMAGES_HINT) from exc
        except (TypeError, ValueError) as exc:  # e.g. an array of objects or complex numbers
            raise ImageError(
                f"Cannot read an image from this {type(source).__name__}: {exc}", hint=ACCEPTED_IMAGES_HINT
            ) from exc

    def predict_logits(self, batch: np.ndarray) -> np.ndarray:
        """Run the model on a prepared float32 ``[N, 3, H, W]`` batch and return its raw ``[N, C]`` output.

        Raises:
            InvalidParameterError: the batch does not have the model's input shape.
        """
        size = self.preprocessing.crop_size
        if not isinstance(batch, np.ndarray) or batch.ndim != 4 or batch.shape[1:] != (3, size, size):
            shape = getattr(batch, "shape", type(batch).__name__)
            raise InvalidParameterError(
                f"The 'batch' parameter of predict_logits must be a float32 array [N, 3, {size}, {size}]. "
                f"Got {shape} instead.",
                hint="Build it with engine.prepare(image) per image and numpy.stack, or call predict().",
            )
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self._max_batch is None or len(batch) == self._max_batch:
            return self._run(batch)
        # A model exported with a fixed batch size runs chunk by chunk.
        step = self._max_batch
        return np.concatenate([self._run(batch[i : i + step]) for i in range(0, len(batch), step)])

    def predict(self, source: ImageSource) -> ModelOutput:
        """Predict the label of one image (a path, bytes, a PIL image or a numpy array).

        Raises:
            ImageError: the source is not a readable image.
        """
        batch = self.prepare(source)[np.newaxis]
        if self._runs_single:
            (logits,) = self._session.run(self._output_names, {self._input_name: batch})
        else:
            logits = self.predict_logits(batch)
        return self._output(logits)

    def predict_batch(self, sources: Iterable[ImageSource], batch_size: int = 16) -> list[ModelOutput]:
        """Predict many images, ``batch_size`` at a time, decoding the next chunk while the model runs.

        Raises:
            InvalidParameterError: batch_size < 1.
            ImageError: one source is not a readable image (its position is named).
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidParameterError(
                f"The 'batch_size' parameter of predict_batch must be an int >= 1. "
                f"Got {batch_size!r} instead.",
                hint="Use the default of 16, or a larger value for big models on many cores.",
            )
        if self._max_batch is not None:
            batch_size = self._max_batch
        results: list[ModelOutput] = []
        workers = max(1, min(4, physical_cores()))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mb-preprocess") as pool:
            chunks = _chunks(sources, batch_size)
            pending = self._submit(pool, next(chunks, []))
            while pending:
                ready = self._gather(pending, offset=len(results))
                # Submit the next chunk before running the model so decoding overlaps inference.
                pending = self._submit(pool, next(chunks, []))
                results.extend(self._outputs(self.predict_logits(np.stack(ready))))
        return results

    # ------------------------------------------------------------------------------------ internals
    def _output(self, logits: np.ndarray) -> ModelOutput:
        """The ModelOutput of a one-row batch, in plain Python floats.

        Right after a model run the CPU caches hold the model, and each numpy call costs 5-20 us
        instead of ~1 us; a handful of float operations on one row costs a third of that. The
        probabilities equal softmax() to float64 rounding (~1e-16); rows with NaN or infinite
        logits take the numpy path, so they come out exactly as predict_batch gives them.
        """
        row = logits[0].tolist()
        if self._outputs_probabilities:
            score = row
            total = sum(row)
        else:
            top = max(row)
            exps = [math.exp(value - top) for value in row]
            total = sum(exps)
            score = [value / total for value in exps]
        if not math.isfinite(total):
            return self._outputs(logits)[0]
        return ModelOutput(prediction=self.labels[score.index(max(score))], score=score)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        (logits,) = self._session.run(self._output_names, {self._input_name: batch})
        return np.asarray(logits)

    def _outputs(self, logits: np.ndarray) -> list[ModelOutput]:
        probabilities = logits.astype(np.float64) if self._outputs_probabilities else softmax(logits)
        # One argmax and one tolist for the whole batch (tolist gives the same Python floats as
        # float() per element) instead of a numpy call per row and per probability.
        best = probabilities.argmax(axis=-1).tolist()
        labels = self.labels
        return [
            ModelOutput(prediction=labels[index], score=row)
            for index, row in zip(best, probabilities.tolist(), strict=True)
        ]

    def _submit(self, pool: ThreadPoolExecutor, chunk: list[ImageSource]) -> list[Future[np.ndarray]]:
        return [pool.submit(self.prepare, source) for source in chunk]

    def _gather(self, futures: list[Future[np.ndarray]], offset: int) -> list[np.ndarray]:
        prepared = []
        for index, future in enumerate(futures):
            try:
                prepared.append(future.result())
            except ImageError as exc:
                for rest in futures[index + 1 :]:
                    rest.cancel()
                raise ImageError(f"Image #{offset + index} of the batch: {exc}", hint=exc.hint) from exc
        return prepared

    def __repr__(self) -> str:
        spec = self.preprocessing
        return f"PredictionEngine(labels={self.labels!r}, input={spec.crop_size}x{spec.crop_size})"


def load_model(path: str | os.PathLike[str], *, threads: int | None = None) -> PredictionEngine:
    """Load a prediction engine from MLModel.zip, bestModel.onnx, or a run's outputs folder.

    Raises:
        BundleError: the model is missing, corrupt, or its parts disagree.
    """
    return PredictionEngine.load(path, threads=threads)


def _model_in_folder(folder: Path) -> Path:
    for name in ("MLModel.zip", MODEL_NAME):
        if (folder / name).is_file():
            return folder / name
    raise BundleError(
        f"Folder '{folder}' holds neither MLModel.zip nor {MODEL_NAME}.",
        hint="Give the outputs folder of a completed run, or the path to the model file itself.",
    )


def _chunks(sources: Iterable[ImageSource], size: int) -> Iterator[list[ImageSource]]:
    iterator = iter(sources)
    while chunk := list(islice(iterator, size)):
        yield chunk
