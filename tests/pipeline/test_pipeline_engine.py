"""PredictionEngine: loading, prediction on every accepted source type, batching and errors."""

from __future__ import annotations

import dataclasses
import io
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from onnx_factory import LABELS, PURE, SPEC, WEIGHTS, default_metadata, make_classifier
from PIL import Image

import modelbuilder.pipeline as pipeline
from factories import write_exif_rotated_jpeg
from modelbuilder.errors import BundleError, ImageError, InvalidParameterError
from modelbuilder.pipeline import ModelOutput, PredictionEngine, load_model
from modelbuilder.pipeline.engine import physical_cores, softmax
from modelbuilder.pipeline.onnx_metadata import LABELS_KEY, PREPROCESSING_KEY
from modelbuilder.pipeline.preprocess import ImageDecodeError, open_image, preprocess


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> PredictionEngine:
    return load_model(model_dir / "MLModel.zip")


def expected_logits(source: object) -> np.ndarray:
    """What the tiny model computes, from preprocess() and its known weights."""
    return preprocess(source, SPEC).mean(axis=(1, 2)) @ WEIGHTS  # type: ignore[arg-type]


def test_public_names_are_sorted_and_exist() -> None:
    assert pipeline.__all__ == sorted(pipeline.__all__)
    for name in pipeline.__all__:
        assert hasattr(pipeline, name), name


def test_load_bundle_exposes_labels_preprocessing_and_manifest(engine: PredictionEngine) -> None:
    assert engine.labels == LABELS
    assert engine.preprocessing == SPEC
    assert engine.manifest["metadata"]["backbone"] == "tiny"
    assert "red" in repr(engine)


@pytest.mark.parametrize("label", LABELS)
def test_predict_path_gives_the_colour(
    engine: PredictionEngine, colour_images: dict[str, Path], label: str
) -> None:
    output = engine.predict(colour_images[label])
    assert isinstance(output, ModelOutput)
    assert output.prediction == label
    assert len(output.score) == len(LABELS)
    assert sum(output.score) == pytest.approx(1.0)
    assert output.score == pytest.approx(list(softmax(expected_logits(colour_images[label]))))
    assert max(output.score) == output.score[LABELS.index(label)] > 0.99


def test_predict_accepts_bytes_pil_and_str(engine: PredictionEngine, colour_images: dict[str, Path]) -> None:
    path = colour_images["green"]
    reference = engine.predict(path)
    assert engine.predict(str(path)) == reference
    assert engine.predict(path.read_bytes()) == reference
    assert engine.predict(bytearray(path.read_bytes())) == reference
    with Image.open(path) as img:
        assert engine.predict(img) == reference


def test_predict_jpeg_bytes(engine: PredictionEngine) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), PURE["blue"]).save(buffer, "JPEG", quality=95)
    assert engine.predict(buffer.getvalue()).prediction == "blue"


def test_predict_numpy_arrays(engine: PredictionEngine) -> None:
    rgb = np.zeros((40, 50, 3), dtype=np.uint8)
    rgb[..., 2] = 255
    assert engine.predict(rgb).prediction == "blue"
    assert engine.predict(rgb.astype(np.float32) / 255.0).prediction == "blue"
    grey = np.full((40, 50), 128, dtype=np.uint8)
    assert engine.predict(grey).score == pytest.approx([1 / 3] * 3)
    rgba = np.zeros((40, 50, 4), dtype=np.uint8)
    rgba[..., 1] = 255
    rgba[..., 3] = 255
    assert engine.predict(rgba).prediction == "green"
    rgba[..., 3] = 0  # fully transparent: composited onto white, so every colour scores the same
    assert engine.predict(rgba).score == pytest.approx([1 / 3] * 3)


def test_predict_greyscale_and_rgba_images(engine: PredictionEngine) -> None:
    assert engine.predict(Image.new("L", (40, 40), 30)).score == pytest.approx([1 / 3] * 3)
    assert engine.predict(Image.new("RGBA", (40, 40), (255, 0, 0, 255))).prediction == "red"


def test_prepare_equals_preprocess(engine: PredictionEngine, colour_images: dict[str, Path]) -> None:
    photo = np.random.default_rng(0).integers(0, 256, (45, 61, 3), dtype=np.uint8)
    for source in (colour_images["red"], photo):
        prepared = engine.prepare(source)
        assert prepared.dtype == np.float32 and prepared.shape == (3, 32, 32)
        np.testing.assert_array_equal(prepared, preprocess(source, SPEC))
        np.testing.assert_allclose(
            engine.predict_logits(prepared[None])[0], expected_logits(source), rtol=1e-5
        )


def test_predict_batch_equals_predict(engine: PredictionEngine, colour_images: dict[str, Path]) -> None:
    rng = np.random.default_rng(1)
    sources: list[object] = [colour_images[label] for label in LABELS]
    sources += [rng.integers(0, 256, (33, 40, 3), dtype=np.uint8) for _ in range(4)]
    single = [engine.predict(source) for source in sources]  # type: ignore[arg-type]
    for batch_size in (1, 2, 16):
        batched = engine.predict_batch(iter(sources), batch_size=batch_size)  # type: ignore[arg-type]
        assert [out.prediction for out in batched] == [out.prediction for out in single]
        for a, b in zip(batched, single, strict=True):
            assert a.score == pytest.approx(b.score, abs=1e-6)
    assert engine.predict_batch([]) == []


def test_predict_batch_names_the_bad_image(
    engine: PredictionEngine, tmp_path: Path, colour_images: dict
) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_text("not an image")
    with pytest.raises(ImageError, match=r"Image #3 of the batch: .*broken.jpg"):
        engine.predict_batch([colour_images["red"]] * 3 + [broken], batch_size=2)
    with pytest.raises(InvalidParameterError, match="batch_size"):
        engine.predict_batch([colour_images["red"]], batch_size=0)


def test_unreadable_image_errors_name_the_file_and_what_is_accepted(
    engine: PredictionEngine, tmp_path: Path
) -> None:
    text = tmp_path / "notes.png"
    text.write_text("hello")
    with pytest.raises(ImageError, match="notes.png") as info:
        engine.predict(text)
    assert "JPEG, PNG" in (info.value.hint or "")
    with pytest.raises(ImageError, match="does not exist"):
        engine.predict(tmp_path / "missing.png")
    with pytest.raises(ImageError, match=r"Got \(3, 32, 32\) instead"):
        engine.predict(np.zeros((3, 32, 32, 5), dtype=np.uint8)[..., 0])
    with pytest.raises(ImageError, match="int"):
        engine.predict(42)  # type: ignore[arg-type]
    assert issubclass(ImageError, ValueError)


def test_predict_logits_checks_the_batch_shape(engine: PredictionEngine) -> None:
    with pytest.raises(InvalidParameterError, match=r"\[N, 3, 32, 32\]"):
        engine.predict_logits(np.zeros((3, 32, 32), dtype=np.float32))
    logits = engine.predict_logits(np.zeros((2, 3, 32, 32), dtype=np.float64))
    assert logits.shape == (2, 3) and logits.dtype == np.float32


def test_session_uses_physical_cores_unless_told(model_dir: Path) -> None:
    default = load_model(model_dir / "MLModel.zip")
    assert default._session.get_session_options().intra_op_num_threads == physical_cores()
    one = PredictionEngine.load(model_dir / "MLModel.zip", threads=1)
    assert one._session.get_session_options().intra_op_num_threads == 1


def test_model_output_is_frozen() -> None:
    output = ModelOutput("a", [1.0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        output.prediction = "b"  # type: ignore[misc]


def test_softmax_is_stable() -> None:
    probabilities = softmax(np.array([[1000.0, 1000.0], [0.0, np.log(3.0)]]))
    np.testing.assert_allclose(probabilities, [[0.5, 0.5], [0.25, 0.75]])


# ---------------------------------------------------------------------------------------------- loading
def test_load_from_outputs_folder_prefers_the_bundle(model_dir: Path) -> None:
    engine = load_model(model_dir)
    assert engine.manifest["metadata"] == {"backbone": "tiny", "accuracy": 1.0}


def test_load_bare_onnx_from_metadata(tmp_path: Path, colour_images: dict[str, Path]) -> None:
    onnx_path = make_classifier(tmp_path / "bestModel.onnx", metadata={**default_metadata(), "author": "me"})
    engine = load_model(onnx_path)
    assert engine.labels == LABELS and engine.preprocessing == SPEC
    assert engine.manifest["metadata"] == {"author": "me"}
    assert engine.predict(colour_images["blue"]).prediction == "blue"
    assert load_model(tmp_path).labels == LABELS  # a folder with only bestModel.onnx


def test_label_map_next_to_onnx_wins_over_metadata(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, colour_images: dict[str, Path]
) -> None:
    onnx_path = make_classifier(tmp_path / "bestModel.onnx", metadata=default_metadata())
    pipeline.write_label_map(tmp_path / "bestModelMap.json", ["rot", "grün", "blau"])
    with caplog.at_level(logging.WARNING, logger="modelbuilder.pipeline.engine"):
        engine = load_model(onnx_path)
    assert engine.predict(colour_images["green"]).prediction == "grün"
    assert "differ from the model's metadata" in caplog.text


def test_bare_onnx_without_labels_or_preprocessing(tmp_path: Path) -> None:
    plain = make_classifier(tmp_path / "a" / "bestModel.onnx")
    with pytest.raises(BundleError, match="has no labels") as info:
        load_model(plain)
    assert "bestModelMap.json" in (info.value.hint or "")
    pipeline.write_label_map(tmp_path / "a" / "bestModelMap.json", LABELS)
    with pytest.raises(BundleError, match="does not say how to preprocess"):
        load_model(plain)
    wrong = make_classifier(tmp_path / "b" / "m.onnx", num_classes=2, metadata=default_metadata())
    with pytest.raises(BundleError, match=r"Got \[N, 2\]"):
        load_model(wrong)


def test_fixed_batch_model_predicts_in_batches(tmp_path: Path, colour_images: dict[str, Path]) -> None:
    onnx_path = make_classifier(tmp_path / "m.onnx", batch=1)
    bundle = pipeline.write_bundle(tmp_path / "MLModel.zip", onnx_path, LABELS, SPEC)
    assert pipeline.read_manifest(bundle)["input"]["shape"] == [1, 3, 32, 32]
    engine = load_model(bundle)
    outputs = engine.predict_batch([colour_images[label] for label in LABELS], batch_size=8)
    assert [out.prediction for out in outputs] == LABELS


def test_missing_or_bad_models_raise_bundle_errors(tmp_path: Path, bundle_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist") as info:
        load_model(tmp_path / "nothing" / "MLModel.zip")
    assert info.value.hint
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BundleError, match="holds neither"):
        load_model(empty)
    renamed = tmp_path / "model.bin"
    shutil.copy(bundle_path, renamed)
    assert load_model(renamed).labels == LABELS  # any non-.onnx file is read as a bundle
    (tmp_path / "garbage.onnx").write_bytes(b"\x00" * 10)
    with pytest.raises(BundleError, match="cannot be loaded|not a loadable"):
        load_model(tmp_path / "garbage.onnx")


def test_onnx_metadata_round_trip(tmp_path: Path) -> None:
    onnx_path = make_classifier(tmp_path / "m.onnx", metadata=default_metadata())
    metadata = pipeline.read_onnx_metadata(onnx_path)
    assert metadata[LABELS_KEY] == LABELS
    assert metadata[PREPROCESSING_KEY] == SPEC.to_dict()
    assert metadata[pipeline.MODEL_METADATA_KEYS["format_version"]] == 1
    bad = make_classifier(tmp_path / "bad.onnx", metadata={LABELS_KEY: "[not json"})
    with pytest.raises(BundleError, match="modelbuilder.labels"):
        pipeline.read_onnx_metadata(bad)
    with pytest.raises(BundleError, match="does not exist"):
        pipeline.read_onnx_metadata(tmp_path / "none.onnx")


def test_preprocess_submodule_is_not_shadowed() -> None:
    import modelbuilder.pipeline.preprocess as module

    assert module.__name__ == "modelbuilder.pipeline.preprocess"


@pytest.mark.parametrize("shape", [(32, 32, 3), (2, 17, 9, 3)])
def test_normalize_is_bit_identical_to_the_reference_formula(shape: tuple[int, ...]) -> None:
    from modelbuilder.pipeline.preprocess import normalize

    spec = dataclasses.replace(SPEC, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    pixels = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    mean, std = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
    reference = np.moveaxis((pixels.astype(np.float32) * np.float32(1 / 255) - mean) / std, -1, -3)
    result = normalize(pixels, spec)
    assert result.dtype == np.float32 and result.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(result, reference)


# ---------------------------------------------------------------------------------------------- fast paths
def _varied_sources(folder: Path) -> dict[str, object]:
    """Images of every kind that preprocess() converts differently, one of them a large photo."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:1200, 0:1600] / 1600
    photo = np.stack([np.sin(9 * x), np.cos(7 * y), np.sin(5 * (x + y))], axis=-1) * 90 + 128
    photo = (photo + rng.normal(0, 10, photo.shape)).clip(0, 255).astype(np.uint8)
    Image.fromarray(photo).save(folder / "large.jpg", "JPEG", quality=90)
    rotated = Image.fromarray(photo[:300, :500])
    exif = rotated.getexif()
    exif[0x0112] = 6  # EXIF orientation: rotate 90 degrees clockwise on display
    rotated.save(folder / "rotated.jpg", "JPEG", exif=exif.tobytes())
    Image.fromarray(photo[:90, :50]).convert("CMYK").save(folder / "cmyk.jpg", "JPEG")
    rgba = np.dstack([photo[:45, :61], rng.integers(0, 256, (45, 61), dtype=np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "alpha.png")
    palette = Image.fromarray(photo[:40, :40]).convert("P")
    palette.save(folder / "palette.png", transparency=0)
    Image.fromarray((rng.integers(0, 65536, (33, 47))).astype(np.uint16)).save(folder / "grey16.png")
    return {
        "large jpeg": folder / "large.jpg",
        "large jpeg as str": str(folder / "large.jpg"),
        "exif-rotated jpeg": folder / "rotated.jpg",
        "cmyk jpeg": folder / "cmyk.jpg",
        "rgba png bytes": (folder / "alpha.png").read_bytes(),
        "palette png": folder / "palette.png",
        "16-bit png": folder / "grey16.png",
        "greyscale PIL image": Image.fromarray(photo[:30, :70, 0], "L"),
        "float array": photo[:50, :41].astype(np.float32) / 255.0,
    }


def test_preprocess_is_bit_identical_to_the_training_path(tmp_path: Path) -> None:
    # Prediction takes the pixels channel-first from Pillow; training caches HxWx3 uint8 (to_uint8)
    # and normalises batches of them. Both must give the model exactly the same tensor.
    from modelbuilder.pipeline.preprocess import normalize, to_uint8

    imagenet = dataclasses.replace(
        SPEC, resize_size=40, crop_size=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
    )
    for name, source in _varied_sources(tmp_path).items():
        for spec in (SPEC, imagenet, dataclasses.replace(imagenet, interpolation="bicubic")):
            result = preprocess(source, spec)  # type: ignore[arg-type]
            assert result.dtype == np.float32 and result.flags["C_CONTIGUOUS"], name
            assert result.shape == (3, spec.crop_size, spec.crop_size), name
            training = normalize(to_uint8(source, spec)[None], spec)[0]  # type: ignore[arg-type]
            np.testing.assert_array_equal(result, training, err_msg=name)


def test_preprocess_leaves_a_given_pil_image_unchanged(tmp_path: Path) -> None:
    img = Image.new("RGBA", (50, 40), (10, 20, 30, 128))
    before = img.tobytes()
    preprocess(img, SPEC)
    assert img.mode == "RGBA" and img.size == (50, 40) and img.tobytes() == before
    path = write_exif_rotated_jpeg(tmp_path / "turned.jpg", width=40, height=20, orientation=6)
    with Image.open(path) as turned:
        preprocess(turned, SPEC)
        assert turned.size == (40, 20) and turned.getexif()[0x0112] == 6


def test_open_image_applies_the_exif_orientation(tmp_path: Path) -> None:
    path = write_exif_rotated_jpeg(tmp_path / "turned.jpg", width=40, height=20, orientation=6)
    with Image.open(path) as stored:
        expected = np.asarray(stored.convert("RGB").transpose(Image.Transpose.ROTATE_270))
    for source in (path, path.read_bytes()):
        upright = open_image(source)
        assert upright.size == (20, 40) and upright.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(upright), expected)
        assert np.asarray(upright.resize((10, 20))).shape == (20, 10, 3)  # pixels usable after close


class _FixedLogits:
    """A stand-in onnxruntime session that answers the same output row for every image."""

    def __init__(self, row: list[float]) -> None:
        self.row = np.asarray(row, dtype=np.float32)

    def get_inputs(self) -> list[object]:
        return [dataclasses.make_dataclass("Input", [("shape", list)])(["N", 3, 32, 32])]

    def run(self, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        assert names == ["output1"] and list(feed) == ["input1"]
        return [np.repeat(self.row[None], len(feed["input1"]), axis=0)]


@pytest.mark.parametrize(
    "row",
    [
        [0.3, -1.2, 2.5, 0.0, 7.25, -3.5, 1.0, 0.5, 2.5, -0.75],
        [1000.0, 999.0, -1000.0],
        [2.0, 2.0, 1.0],  # a tie: the first label wins, as numpy's argmax decides
        [-np.inf, 0.5, -np.inf],
        [np.inf, 0.0, 1.0],
        [0.0, np.nan, 1.0],
        [-np.inf, -np.inf, -np.inf],
    ],
)
@pytest.mark.parametrize("kind", ["logits", "probabilities"])
def test_single_prediction_agrees_with_the_batch_path(row: list[float], kind: str) -> None:
    # predict() formats one row in plain Python; predict_batch() and softmax() use numpy.
    labels = [f"label{i}" for i in range(len(row))]
    manifest = {"input": {"name": "input1"}, "output": {"name": "output1", "kind": kind}}
    engine = PredictionEngine(_FixedLogits(row), labels, SPEC, manifest)
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    with np.errstate(invalid="ignore"):  # inf - inf in softmax, as before this fast path
        single = engine.predict(image)
        (batched,) = engine.predict_batch([image])
    assert single.prediction == batched.prediction
    assert all(type(value) is float for value in single.score)
    if np.all(np.isfinite(row)):
        np.testing.assert_allclose(single.score, batched.score, rtol=1e-15, atol=0)
    else:  # NaN and infinities take the numpy path: identical, NaN included
        np.testing.assert_array_equal(single.score, batched.score)
    if kind == "logits":
        with np.errstate(invalid="ignore"):
            reference = softmax(np.asarray([row], dtype=np.float32))[0]
        np.testing.assert_array_equal(batched.score, reference)


def test_a_bomb_is_refused_even_while_another_thread_has_reset_the_warnings_filter(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``warnings.catch_warnings`` is process-wide: predict_batch's threads and the scan's change the
    filter under each other, so a bomb Pillow only warns about (1-2x the limit) must not depend on it."""
    import warnings

    import modelbuilder.pipeline.preprocess as preprocess_module
    from factories import write_png_bomb

    bomb = write_png_bomb(tmp_path / "big.png", 10_000, 10_000)  # 100 MP: Pillow warns, does not raise
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # what another thread's filter may say at that moment
        monkeypatch.setattr(preprocess_module.warnings, "simplefilter", lambda *args, **kwargs: None)
        with pytest.raises(ImageDecodeError, match="too large to decode safely.*100000000 pixels"):
            open_image(bomb)
