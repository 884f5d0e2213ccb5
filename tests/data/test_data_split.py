"""split_dataset: stratified, seeded, content-based, at least one image per label on each side."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest

from modelbuilder.data import Dataset, ImageItem, split_dataset
from modelbuilder.errors import DatasetError, InvalidParameterError


def make_dataset(sizes: dict[str, int], root: str = "/data", prefix: str = "") -> Dataset:
    items = [
        ImageItem(
            Path(root) / label / f"{prefix}{i:04d}.png",
            label,
            hashlib.sha256(f"{label}/{i}".encode()).hexdigest(),
            32,
            32,
            "RGB",
            "PNG",
        )
        for label, count in sizes.items()
        for i in range(count)
    ]
    return Dataset(source=Path(root), labels=sorted(sizes), items=items, issues=[])


@pytest.mark.parametrize(
    ("count", "fraction", "expected_validation"),
    [
        pytest.param(2, 0.2, 1, id="2-images-keep-one-each-side"),
        pytest.param(3, 0.9, 2, id="never-all-to-validation"),
        pytest.param(10, 0.2, 2, id="10-at-20pct"),
        pytest.param(11, 0.2, 2, id="11-at-20pct-rounds-down"),
        pytest.param(13, 0.2, 3, id="13-at-20pct-rounds-up"),
        pytest.param(100, 0.05, 5, id="100-at-5pct"),
        pytest.param(4, 0.01, 1, id="at-least-one"),
    ],
)
def test_validation_count_per_label(count: int, fraction: float, expected_validation: int) -> None:
    dataset = make_dataset({"a": count, "b": 7})
    train, validation = split_dataset(dataset, fraction=fraction)
    assert Counter(item.label for item in validation)["a"] == expected_validation
    assert Counter(item.label for item in train)["a"] == count - expected_validation
    assert Counter(item.label for item in validation)["b"] == min(max(1, round(7 * fraction)), 6)


def test_split_partitions_the_items_and_is_sorted() -> None:
    dataset = make_dataset({"cat": 20, "dog": 9, "fox": 2})
    train, validation = split_dataset(dataset, 0.25, seed=3)
    assert not set(train) & set(validation)
    assert sorted(train + validation, key=lambda i: (i.label, str(i.path))) == sorted(
        dataset.items, key=lambda i: (i.label, str(i.path))
    )
    assert train == sorted(train, key=lambda i: (i.label, str(i.path)))
    assert validation == sorted(validation, key=lambda i: (i.label, str(i.path)))
    assert {i.label for i in validation} == {i.label for i in train} == {"cat", "dog", "fox"}


def test_same_seed_same_split_other_seed_other_split() -> None:
    dataset = make_dataset({"cat": 50, "dog": 50})
    first = split_dataset(dataset, 0.2, seed=1)
    assert split_dataset(dataset, 0.2, seed=1) == first
    reversed_input = Dataset(dataset.source, dataset.labels, list(reversed(dataset.items)), [])
    assert split_dataset(reversed_input, 0.2, seed=1) == first
    assert split_dataset(dataset, 0.2, seed=2)[1] != first[1]


def test_split_follows_content_not_paths() -> None:
    here = make_dataset({"cat": 30, "dog": 30}, root="/a")
    there = make_dataset({"cat": 30, "dog": 30}, root="/elsewhere/b", prefix="renamed_")
    assert [i.sha256 for i in split_dataset(here)[1]] == [i.sha256 for i in split_dataset(there)[1]]


def test_adding_a_label_keeps_the_other_labels_split() -> None:
    before = split_dataset(make_dataset({"cat": 30, "dog": 30}))[1]
    after = split_dataset(make_dataset({"cat": 30, "dog": 30, "ant": 10}))[1]
    assert [i for i in after if i.label != "ant"] == before


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, True, "0.2"], ids=str)
def test_fraction_must_be_between_0_and_1(fraction: object) -> None:
    with pytest.raises(InvalidParameterError, match=r"'fraction' parameter of split_dataset must be a float"):
        split_dataset(make_dataset({"a": 5, "b": 5}), fraction=fraction)  # type: ignore[arg-type]


def test_a_label_with_one_image_cannot_be_split() -> None:
    with pytest.raises(DatasetError, match="'b' has 1") as caught:
        split_dataset(make_dataset({"a": 5, "b": 1}))
    assert caught.value.hint is not None and "separate validation data" in caught.value.hint
