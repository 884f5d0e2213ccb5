"""A stratified, seeded, deterministic train/validation split."""

from __future__ import annotations

import random
from collections import defaultdict

from ..errors import DatasetError, InvalidParameterError
from .dataset import Dataset, ImageItem


def split_dataset(
    dataset: Dataset, fraction: float = 0.2, seed: int = 0
) -> tuple[list[ImageItem], list[ImageItem]]:
    """Hold out ``fraction`` of each label for validation.

    Each label gets ``max(1, round(n * fraction))`` validation images, but always keeps at least one
    for training. The split depends only on the images' content, labels, ``fraction`` and ``seed``:
    items are ordered by (sha256, path) before a per-label ``random.Random`` shuffles them, so the
    same data gives the same split wherever it lies, and adding a label does not reshuffle the others.

    Args:
        dataset: a scanned dataset.
        fraction: the share of each label to hold out, in (0, 1).
        seed: the shuffle seed.

    Returns:
        (train, validation), each sorted by label, then path.

    Raises:
        InvalidParameterError: ``fraction`` is not in (0, 1).
        DatasetError: a label has fewer than 2 images, so it cannot be in both parts.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise InvalidParameterError(
            "The 'fraction' parameter of split_dataset must be a float in the range (0, 1). "
            f"Got {fraction!r} instead.",
            hint="Use for example fraction=0.2 to hold out 20% of each label.",
        )
    by_label: dict[str, list[ImageItem]] = defaultdict(list)
    for item in dataset.items:
        by_label[item.label].append(item)
    too_small = {
        label: len(by_label.get(label, [])) for label in dataset.labels if len(by_label.get(label, [])) < 2
    }
    if too_small:
        listed = ", ".join(f"'{label}' has {count}" for label, count in too_small.items())
        raise DatasetError(
            f"Cannot split data '{dataset.source}' into training and validation: every label needs at least "
            f"2 images; {listed}.",
            hint="Add images to these labels, or give separate validation data.",
        )
    train: list[ImageItem] = []
    validation: list[ImageItem] = []
    for label in sorted(by_label):
        group = sorted(by_label[label], key=lambda item: (item.sha256, str(item.path)))
        random.Random(f"{seed}:{label}").shuffle(group)
        count = min(max(1, round(len(group) * fraction)), len(group) - 1)
        validation.extend(group[:count])
        train.extend(group[count:])
    order = lambda item: (item.label, str(item.path))  # noqa: E731
    return sorted(train, key=order), sorted(validation, key=order)
