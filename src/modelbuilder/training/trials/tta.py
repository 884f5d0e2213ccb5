"""Test-time flip averaging: the mean of a model's probabilities on an image and its mirror image,
kept only when it scores better on the validation split (it doubles the prediction cost).

It pays only for a model trained on mirrored images: on 48k 28x28 images a CNN trained with flips
went from 88.9% to 89.3% test accuracy with it, one trained without from 92.0% down to 90.4%."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

#: The flip-averaged model is kept only when it beats the plain one by at least this share of the
#: validation images, and by at least ``MIN_IMAGES`` of them (one image either way is noise).
MIN_GAIN = 0.001
MIN_IMAGES = 2


class FlipAverage(nn.Module):
    """log of the mean softmax of ``model`` on ``x`` and on ``x`` mirrored left-right (valid logits)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(self.model(x), dim=1) + torch.softmax(self.model(x.flip(-1)), dim=1)
        return torch.log((probs / 2).clamp_min(1e-7))


def flip_pays(probs: np.ndarray, flipped: np.ndarray, y: np.ndarray,
              accuracy: float) -> tuple[bool, np.ndarray, float]:
    """(keep the flip average?, the validation probabilities to keep, their accuracy)."""
    averaged = (probs + flipped) / 2
    averaged_accuracy = float((averaged.argmax(1) == y).mean()) if len(y) else 0.0
    if len(y) and averaged_accuracy >= accuracy + max(MIN_GAIN, MIN_IMAGES / len(y)):
        return True, averaged, averaged_accuracy
    return False, probs, accuracy
