"""Augmentations applied to training batches on the device (images or spatial feature maps)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def flip_augment(x: torch.Tensor) -> torch.Tensor:
    """Random horizontal flip of half the batch."""
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    if bool(flip.any()):
        x = x.clone()
        x[flip] = x[flip].flip(-1)
    return x


def shift_flip_augment(pad: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Flip, then shift the whole batch by up to ``pad`` pixels (edges replicated)."""

    def augment(x: torch.Tensor) -> torch.Tensor:
        x = flip_augment(x)
        size = x.shape[-1]
        padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
        i, j = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,)))
        return padded[:, :, i:i + size, j:j + size]

    return augment
