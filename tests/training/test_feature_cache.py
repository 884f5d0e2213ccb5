"""The feature cache: memory-mapped chunks, reuse across runs, crash safety, and what training is given."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from modelbuilder.training import feature_cache
from modelbuilder.training.feature_cache import FeatureCache


def hashes(count: int, prefix: str = "h") -> list[str]:
    return [f"{prefix}{i:06d}" for i in range(count)]


def rows(count: int, width: int = 6, start: int = 0) -> np.ndarray:
    return (np.arange(count * width, dtype=np.float32).reshape(count, width) + start * width)


def files(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def rss_anon_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no RssAnon in /proc/self/status")


def test_a_cold_run_gets_its_own_chunk_mapped_without_a_copy(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "c")
    cache.add(hashes(50), rows(50))
    again = FeatureCache(tmp_path / "c")
    gathered = again.gather(hashes(50))
    assert isinstance(gathered, np.memmap) and Path(str(gathered.filename)).parent == tmp_path / "c"
    assert np.array_equal(gathered, rows(50))
    assert again.chunk_count() == 1 and len(files(tmp_path / "c")) == 2  # the .npy and its manifest


def test_new_images_are_assembled_once_in_run_order_and_covered_chunks_go(tmp_path: Path) -> None:
    root = tmp_path / "c"
    FeatureCache(root).add(hashes(40), rows(40))
    FeatureCache(root).add(hashes(10, "new"), rows(10, start=1000))
    run = hashes(10, "new")[::-1] + hashes(40)  # another order, as a run's split gives
    cache = FeatureCache(root)
    assert cache.chunk_count() == 2
    gathered = cache.gather(run)
    expected = np.concatenate([rows(10, start=1000)[::-1], rows(40)])
    assert isinstance(gathered, np.memmap) and np.array_equal(gathered, expected)
    # One chunk now holds every row in the run's order: the next run on these images maps it directly.
    assert cache.chunk_count() == 1 and len(files(root)) == 2
    later = FeatureCache(root)
    assert np.array_equal(later.gather(run), expected) and len(files(root)) == 2
    # A run on a part of the images copies that part, and keeps the larger chunk.
    part = FeatureCache(root).gather(hashes(40)[5:20])
    assert np.array_equal(part, rows(40)[5:20]) and len(files(root)) == 4


def test_a_batch_read_copies_only_the_batch(tmp_path: Path) -> None:
    """128 MiB of cached rows read batch by batch (as the training loop does, through torch) leave the
    process's own memory (RssAnon) near where it was (allocator pools keep a few batches' worth);
    holding them in RAM adds all 128 MiB."""
    torch = pytest.importorskip("torch")
    if not Path("/proc/self/status").is_file():
        pytest.skip("needs Linux /proc")
    count, width = 256, 131072  # 256 rows of 512 KiB
    with FeatureCache(tmp_path / "c").writer(hashes(count), (width,)) as chunk:
        for start in range(0, count, 32):
            chunk.values[start:start + 32] = np.float32(start)
    values = FeatureCache(tmp_path / "c").gather(hashes(count))
    tensor = torch.from_numpy(values)  # no copy, no warning (the map is copy-on-write)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(0))
    tensor[order[:4]].float().sum()  # the first batch sets up torch's threads and allocator pools
    before = rss_anon_mib()
    total = 0.0
    for start in range(0, count, 4):
        batch = tensor[order[start:start + 4]].float()  # copies 4 rows (2 MiB)
        total += float(batch[:, 0].sum())
        del batch
    grew = rss_anon_mib() - before
    assert total == float(sum((i // 32) * 32 for i in range(count)))
    assert grew < 32, f"reading batches grew RssAnon by {grew:.0f} MiB"
    held = np.array(values)  # what the cache used to hand out: the whole array in RAM
    assert isinstance(values, np.memmap) and rss_anon_mib() - before > 120
    del held


def test_a_crash_while_writing_leaves_no_entry_and_the_cache_still_works(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture
                                                                          ) -> None:
    root = tmp_path / "c"
    FeatureCache(root).add(hashes(5, "kept"), rows(5))
    script = textwrap.dedent(f"""
        import os, signal
        import numpy as np
        from modelbuilder.training.feature_cache import FeatureCache
        chunk = FeatureCache({str(root)!r}).writer([f"lost{{i}}" for i in range(100)], (6,))
        chunk.values[:50] = 1.0
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    leftover = [p for p in root.iterdir() if p.name.endswith(".tmp")]
    assert len(leftover) == 1  # the half-written chunk, under a name no reader looks at
    # A chunk whose data arrived but whose manifest did not, and a manifest with truncated data.
    np.save(root / "chunk-00000000000000000001-deadbeef.npy", rows(3))
    manifest = {"format_version": feature_cache.CHUNK_FORMAT_VERSION, "npy": "chunk-2-bad.npy",
                "hashes": hashes(9, "bad"), "dtype": "<f4"}
    (root / "chunk-2-bad.json").write_text(json.dumps(manifest))
    np.save(root / "chunk-2-bad.npy", rows(4))
    cache = FeatureCache(root)
    assert len(cache) == 5 and "lost0" not in cache and "bad0" not in cache
    assert np.array_equal(cache.gather(hashes(5, "kept")), rows(5))
    assert "chunk-2-bad.json" in caplog.text
    # Unnamed files are removed once old (a younger one may be another process's chunk in progress).
    old = time.time() - feature_cache.ORPHAN_AGE_S - 10
    for path in [*leftover, root / "chunk-00000000000000000001-deadbeef.npy"]:
        os.utime(path, (old, old))
    FeatureCache(root)
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp") or "deadbeef" in p.name]


def test_a_stopped_feature_pass_commits_no_chunk(tmp_path: Path) -> None:
    from factories import make_image_folder
    from modelbuilder.pipeline.preprocess import PreprocessSpec
    from modelbuilder.training.features import extract_cached

    folder = make_image_folder(tmp_path / "img", classes=2, per_class=4, size=16)
    paths = sorted(folder.rglob("*.png"))
    spec = PreprocessSpec(resize_size=16, crop_size=16, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))

    class Session:
        def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            batch = feeds["input1"]
            return [batch.mean(axis=(2, 3))]

    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 1  # after the first batch

    cache = FeatureCache(tmp_path / "c")
    with pytest.raises(InterruptedError):
        extract_cached(Session(), paths, hashes(len(paths)), spec, {"output1": cache}, batch_size=4,
                       should_stop=stop)
    assert not (tmp_path / "c").exists() or files(tmp_path / "c") == []
    arrays, computed = extract_cached(Session(), paths, hashes(len(paths)), spec, {"output1": cache},
                                      batch_size=4)
    assert computed == len(paths) and isinstance(arrays["output1"], np.memmap)
    assert arrays["output1"].shape == (len(paths), 3)
    again, computed = extract_cached(Session(), paths, hashes(len(paths)), spec,
                                     {"output1": FeatureCache(tmp_path / "c")})
    assert computed == 0 and np.array_equal(again["output1"], arrays["output1"])


def test_trials_are_given_memory_mapped_arrays_from_the_feature_cache(tmp_path: Path) -> None:
    """What a trial splits into training and validation rows are views of the cache's mapped files,
    on a cold run and on a warm rerun with new images."""
    pytest.importorskip("torch")
    from factories import make_image_folder
    from modelbuilder import settings
    from modelbuilder.training.config import TrainingConfig
    from modelbuilder.training.plan import Plan, TrialEstimate
    from modelbuilder.training.registry import register_trial, unregister_trial
    from modelbuilder.training.reporter import RecordingReporter
    from modelbuilder.training.trainer import run_training
    from modelbuilder.training.trials.base import TrialContext

    seen: list[dict[str, tuple[np.ndarray, np.ndarray]]] = []

    class Probe:
        name = "array_probe"
        needs = frozenset({"features", "stem", "small"})

        def estimate(self, plan: Plan, time_left: float) -> TrialEstimate:
            return TrialEstimate(weight=0.0, min_seconds=0.0, fixed_seconds=0.1)

        def run(self, ctx: TrialContext) -> None:
            seen.append({name: ctx.split(name) for name in sorted(self.needs)})
            return None

    data = make_image_folder(tmp_path / "img", classes=2, per_class=10, size=32)
    register_trial(Probe())  # type: ignore[arg-type]
    try:
        config = TrainingConfig(data=str(data), architecture="test_tiny", time_budget=6,
                                strategies=("array_probe",))
        run_training(config, RecordingReporter(), tmp_path / "run1")
        make_image_folder(tmp_path / "more", classes=2, per_class=3, size=32, seed=7)
        for label in (tmp_path / "more").iterdir():
            for image in label.iterdir():
                image.rename(data / label.name / f"new-{image.name}")
        run_training(config, RecordingReporter(), tmp_path / "run2")
    finally:
        unregister_trial("array_probe")
    cache_root = settings.features_cache_dir()
    assert len(seen) == 2
    for run, images in zip(seen, (20, 26), strict=True):
        for name, (train, val) in run.items():
            assert len(train) + len(val) == images, name
            for part in (train, val):
                assert isinstance(part, np.memmap), name
                assert Path(str(part.filename)).is_relative_to(cache_root)
