"""The two torch baselines, written the way a user following the timm/torchvision tutorials would.

- ``linear_head``: frozen EfficientNet-Lite0 features (224 px, onnxruntime) + scikit-learn's
  LogisticRegression: ML.NET's image-classification trainer in Python.
- ``finetune``: timm EfficientNet-Lite0 with a new 10-way classifier, torchvision transforms
  (Resize(224), ToTensor, Normalize(ImageNet)), AdamW, batch 64, trained until the budget ends.

Both use the same pretrained weights as modelbuilder (the offline package weights; a tutorial's
``pretrained=True`` would download them, which this offline machine cannot do).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("benchmarks")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _Images:
    """A map-style dataset over (path, label) pairs, as in the torchvision tutorials."""

    def __init__(self, paths: list[Path], labels: np.ndarray, transform: Any) -> None:
        self.paths, self.labels, self.transform = paths, labels, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        with Image.open(self.paths[index]) as img:
            return self.transform(img.convert("RGB")), int(self.labels[index])


def _lite0(num_classes: int) -> Any:
    """timm's efficientnet_lite0 with the offline pretrained weights and a fresh classifier."""
    from modelbuilder.training.backbones import create_backbone

    model = create_backbone("efficientnet_lite0", pretrained=True)  # timm model, num_classes=0
    model.reset_classifier(num_classes)  # type: ignore[operator]
    return model


def _loader(paths: list[Path], labels: np.ndarray, transform: Any, *, shuffle: bool, batch_size: int,
            seed: int) -> Any:
    import torch
    from torch.utils.data import DataLoader

    dataset: Any = _Images(paths, labels, transform)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                      num_workers=min(2, os.cpu_count() or 1), generator=torch.Generator().manual_seed(seed))


def linear_head(train: tuple[list[Path], np.ndarray], test: tuple[list[Path], np.ndarray], budget_s: float,
                seed: int, size: int = 224) -> dict[str, Any]:
    """Features at the backbone's native 224 px (until the budget runs out), then a logistic regression.

    Features run through onnxruntime with the trainer's decode-ahead loop (an optimised runtime, as
    ML.NET uses TensorFlow's), so this baseline differs from modelbuilder only in its strategy.
    """
    import tempfile

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from modelbuilder.training.backbones import get_backbone_spec
    from modelbuilder.training.features import run_onnx_outputs
    from modelbuilder.training.onnx_export import export_onnx, ort_session

    started = time.monotonic()
    spec = get_backbone_spec("efficientnet_lite0")
    preprocessing = spec.preprocessing(size)
    with tempfile.TemporaryDirectory() as tmp:
        session = ort_session(export_onnx(_lite0(0).eval(), size, Path(tmp) / "features.onnx"))

    def features(paths: list[Path], deadline: float | None, chunk: int = 128) -> np.ndarray:
        parts: list[np.ndarray] = []
        for start in range(0, len(paths), chunk):
            if parts and deadline is not None and time.monotonic() > deadline:
                break  # at least one chunk, so there is always something to fit
            parts += run_onnx_outputs(session, paths[start:start + chunk], preprocessing, ["output1"])
        return np.concatenate(parts) if parts else np.zeros((0, spec.feature_dim), np.float32)

    # Shuffled (seeded), so that an extraction cut short by the budget still covers every label.
    order = np.random.default_rng(seed).permutation(len(train[0]))
    train = ([train[0][i] for i in order], train[1][order])
    # Leave ~15% of the budget for the regression; stop extracting when time is up.
    train_x = features(train[0], started + 0.85 * budget_s)
    used = len(train_x)
    extract_seconds = time.monotonic() - started
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    clf.fit(train_x, train[1][:used])
    train_seconds = time.monotonic() - started
    predicted = clf.predict(features(test[0], None))
    return {"predicted": predicted, "train_seconds": train_seconds, "trained_on": used,
            "extract_seconds": round(extract_seconds, 1),
            "extract_images_per_second": round(used / max(extract_seconds, 1e-9), 1)}


def finetune(train: tuple[list[Path], np.ndarray], test: tuple[list[Path], np.ndarray], budget_s: float,
             seed: int, num_classes: int, size: int = 224, lr: float = 3e-4) -> dict[str, Any]:
    """Full fine-tuning, tutorial style, stopped when the budget is spent."""
    import torch
    import torch.nn as nn
    from torchvision import transforms

    torch.manual_seed(seed)
    started = time.monotonic()
    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = transforms.Compose([transforms.Resize((size, size)), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), normalize])
    test_tf = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(), normalize])
    model = _lite0(num_classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    criterion = nn.CrossEntropyLoss()
    seen, steps, epochs, out_of_time = 0, 0, 0, False
    while not out_of_time:
        model.train()
        for images, targets in _loader(train[0], train[1], train_tf, shuffle=True, batch_size=64, seed=seed
                                       + epochs):
            if time.monotonic() - started >= budget_s:
                out_of_time = True
                break
            optimizer.zero_grad()
            loss = criterion(model(images), targets)
            loss.backward()
            optimizer.step()
            seen += len(targets)
            steps += 1
        else:
            epochs += 1
    train_seconds = time.monotonic() - started
    model.eval()
    predictions = []
    with torch.no_grad():
        for images, _ in _loader(test[0], test[1], test_tf, shuffle=False, batch_size=64, seed=seed):
            predictions.append(model(images).argmax(1).numpy())
    return {"predicted": np.concatenate(predictions), "train_seconds": train_seconds, "steps": steps,
            "epochs_completed": epochs, "images_seen": seen,
            "train_images_per_second": round(seen / max(train_seconds, 1e-9), 1), "lr": lr}
