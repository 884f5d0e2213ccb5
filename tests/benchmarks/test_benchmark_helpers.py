"""Fast checks of the benchmark helpers that decide what a benchmark measures (no torch, no training)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, ModuleType]]:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import _baselines_fastai
    import _photos

    yield {"fastai": _baselines_fastai, "photos": _photos}


def test_fastai_plan_fine_tunes_whole_epochs_when_they_fit(bench: dict[str, ModuleType]) -> None:
    # 1,000 training images, batch 50: 20 steps; validation of 250 images: 5 batches x 0.5 / 3 s.
    plan = bench["fastai"]._plan(100.0, 1000, 250, 50, frozen_step=0.5, full_step=0.5)
    valid = 5 * 0.5 / 3
    assert plan["freeze_epochs"] == 1 and plan["fraction"] == 1.0
    assert plan["epochs"] == int((100 - (10 + valid)) // (10 + valid))  # 8 whole-network epochs
    assert plan["estimated_seconds"] <= 100
    # Starting DataLoader workers twice an epoch costs fixed seconds: fewer epochs fit.
    slower = bench["fastai"]._plan(100.0, 1000, 250, 50, 0.5, 0.5, epoch_overhead=5.0)
    assert slower["epochs"] == int((100 - (15 + valid)) // (15 + valid)) < plan["epochs"]


def test_fastai_plan_takes_a_fraction_of_one_epoch_when_two_do_not_fit(bench: dict[str, ModuleType]) -> None:
    # The reference: less than one whole-network epoch fits, so one-cycle over part of it.
    plan = bench["fastai"]._plan(30.0, 1000, 250, 50, frozen_step=1.0, full_step=2.0)
    assert plan["freeze_epochs"] == 0 and plan["epochs"] == 1
    assert plan["fraction"] == pytest.approx((30 - 5 * 2.0 / 3) / 40, abs=1e-3)
    assert bench["fastai"]._plan(0.0, 1000, 250, 50, 1.0, 2.0)["fraction"] == 0.0  # budget spent


def test_fastai_install_never_replaces_torch(bench: dict[str, ModuleType]) -> None:
    command = bench["fastai"].install_command(Path("/tmp/x"))
    assert "--no-deps" in command and command[command.index("--target") + 1] == "/tmp/x"
    assert not any(p.split("<")[0].split(">")[0].split("=")[0] in {"torch", "torchvision", "spacy"}
                   for p in bench["fastai"].PACKAGES)


def test_photos_train_and_test_images_come_from_disjoint_quadrants(
        bench: dict[str, ModuleType], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photos = bench["photos"]
    # A source whose four quadrants have distinct colours: each image's hue tells where it was cut.
    colours = {(0, 0): (255, 0, 0), (0, 1): (0, 255, 0), (1, 0): (0, 0, 255), (1, 1): (255, 255, 0)}
    source = np.zeros((200, 300, 3), np.uint8)
    for (row, col), colour in colours.items():
        source[row * 100:(row + 1) * 100, col * 150:(col + 1) * 150] = colour
    Image.fromarray(source).save(tmp_path / "quadrants.png")
    monkeypatch.setitem(photos.SOURCES, "quadrants", lambda: tmp_path / "quadrants.png")
    monkeypatch.setitem(photos.SOURCES_INDEX, "quadrants", 99)

    train_dir, train, test = photos.build_photos(["quadrants"], 8, 6, 64, 0, tmp_path / "cache")
    assert train_dir == tmp_path / "cache" / "photos" / "v1-1x8+6-64px-seed0" / "train"
    assert len(train[0]) == 8 and len(test[0]) == 6 and set(train[1]) == set(test[1]) == {0}

    def region(path: Path) -> tuple[int, int]:
        # The nearest quadrant colour: jitter scales and greys the colour but keeps it closest to its own.
        mean = np.asarray(Image.open(path).convert("RGB"), np.float32).reshape(-1, 3).mean(0)
        return min(colours, key=lambda q: float(np.linalg.norm(mean / max(mean.max(), 1.0) * 255
                                                               - np.array(colours[q]))))

    assert {region(p) for p in train[0]} == {(0, 0), (1, 1)}
    assert {region(p) for p in test[0]} == {(0, 1), (1, 0)}
    # Cached: a second call with the same configuration writes nothing.
    stamp = train[0][0].stat().st_mtime_ns
    photos.build_photos(["quadrants"], 8, 6, 64, 0, tmp_path / "cache")
    assert train[0][0].stat().st_mtime_ns == stamp


def test_photos_unknown_label_is_refused_with_the_known_ones(bench: dict[str, ModuleType],
                                                             tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown photo labels.*astronaut"):
        bench["photos"].build_photos(["astronut"], 2, 2, 64, 0, tmp_path)


def test_fastai_that_cannot_be_installed_is_skipped_with_the_reason_and_the_command(
        bench: dict[str, ModuleType], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fastai = bench["fastai"]
    monkeypatch.setattr(fastai, "_importable", lambda extra: "ModuleNotFoundError: No module named 'fastai'")
    fail = "raise SystemExit('ERROR: no package index reachable')"
    monkeypatch.setattr(fastai, "install_command",
                        lambda target=tmp_path: [sys.executable, "-c", fail, "--target", str(target)])
    target = tmp_path / "fastai-packages"
    extra_path, reason = fastai.ensure_fastai(target)
    assert extra_path is None
    assert "installing it failed (ERROR: no package index reachable)" in reason and "--target" in reason
    assert not target.exists() and not list(tmp_path.glob("fastai-packages-*"))  # no half-installed folder
