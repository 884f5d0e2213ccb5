"""The Train step's feature-time estimate: overhead + images / rate, from a live probe (cached) when no
earlier run measured this machine, from the earlier run's speed (corrected for its overhead) when one did,
and the page says which. Probe timings are replaced by fixed ones where a test checks arithmetic, so
nothing here depends on how fast or loaded the machine is."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from portal_fixtures import BASE_URL, PortalWorld, csrf_headers
from wizard_fixtures import API, image_files, wizard_app, zip_bytes

from modelbuilder import settings
from modelbuilder.portal import estimate as estimate_module
from modelbuilder.portal import estimate_probe
from modelbuilder.portal.estimate_probe import ProbeTiming
from modelbuilder.training import feature_pass

OVERHEAD_S, RATE = 1.5, 100.0


def timing(overhead_s: float = OVERHEAD_S, rate: float = RATE, images: int = 32) -> ProbeTiming:
    """A probe's answer whose parts add up to ``overhead_s`` (export/session 2/3, warm-up and write 1/6)."""
    return ProbeTiming(setup_s=overhead_s * 4 / 6, warmup_s=overhead_s / 6, write_s=overhead_s / 6,
                       rate=rate, images=images)


@pytest.fixture
def wclient(world: PortalWorld) -> Iterator[TestClient]:
    with TestClient(wizard_app([]), base_url=BASE_URL) as client:
        yield client


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, tuple[str, ...], int]]:
    """Every probe made (backbone, size, outputs, paths given); each measures OVERHEAD_S and RATE."""
    made: list[tuple[str, int, tuple[str, ...], int]] = []

    def fake(backbone: str, size: int, pool: int | None, outputs: tuple[str, ...],
             paths: list[Path]) -> ProbeTiming:
        assert all(p.is_file() for p in paths)  # the data's own images
        made.append((backbone, size, outputs, len(paths)))
        return timing()

    monkeypatch.setattr(estimate_module, "_run_probe", fake)
    return made


def _upload(client: TestClient, per_class: int = 6) -> str:
    response = client.post(f"{API}/datasets", headers=csrf_headers(client.app),
                           files={"archive": ("d.zip", zip_bytes(image_files(per_class=per_class)), "x")})
    assert response.status_code == 201, response.text
    return str(response.json()["source"])


def _estimate(client: TestClient, per_class: int = 6, architecture: str = "test_tiny") -> dict:  # type: ignore[type-arg]
    params: dict[str, str | int] = {"source": _upload(client, per_class), "time_budget": 60,
                                    "architecture": architecture}
    body = client.get(f"{API}/train/estimate", params=params)
    assert body.status_code == 200, body.text
    return body.json()  # type: ignore[no-any-return]


def test_without_an_earlier_run_a_probe_measures_overhead_and_rate(wclient: TestClient, probes: list) -> None:  # type: ignore[type-arg]
    body = _estimate(wclient)
    assert len(probes) == 1 and probes[0][0] == "test_tiny" and probes[0][1] == body["resolution"]
    assert "features" in probes[0][2] and probes[0][3] == 12
    assert body["speed_source"] == "probe"
    assert body["overhead_seconds"] == pytest.approx(OVERHEAD_S)
    assert body["feature_rate"] == pytest.approx(RATE)
    assert body["feature_seconds"] == pytest.approx(OVERHEAD_S + body["images"] / RATE)
    # The page shows this sentence under the estimate (wizard.js: e.feature_method).
    method = body["feature_method"]
    assert "measured by a probe that featurized 32 of these images" in method
    assert "plus 1.5s fixed (ONNX export" in method and "just now" in method
    assert "start 1.0s, first-batch warm-up 0.2s, writing the feature cache 0.2s" in method


def test_the_probe_is_cached_per_machine_and_resolution_with_its_time(wclient: TestClient,
                                                                      probes: list) -> None:  # type: ignore[type-arg]
    first = _estimate(wclient)
    again = _estimate(wclient, per_class=7)  # other images, same backbone and resolution: no new probe
    assert len(probes) == 1
    assert again["speed_source"] == "probe_cached" and again["overhead_seconds"] == pytest.approx(OVERHEAD_S)
    assert again["feature_seconds"] == pytest.approx(OVERHEAD_S + again["images"] / RATE)
    assert first["images"] == 12 and again["images"] == 14
    entries = json.loads((settings.cache_dir() / estimate_module.PROBE_CACHE_FILE).read_text())
    (key, entry), = entries.items()
    assert f"|test_tiny|{first['resolution']}|" in key and key.endswith("|src9")  # 24x24 px sources
    assert entry["rate"] == RATE and time.time() - entry["measured_at"] < 60
    # An old probe is repeated: the machine's load may have changed since.
    entry["measured_at"] -= estimate_module.PROBE_MAX_AGE_S + 1
    (settings.cache_dir() / estimate_module.PROBE_CACHE_FILE).write_text(json.dumps({key: entry}))
    assert _estimate(wclient)["speed_source"] == "probe" and len(probes) == 2


def test_an_earlier_runs_speed_is_used_without_the_overhead_it_included(
        wclient: TestClient, world: PortalWorld, probes: list) -> None:  # type: ignore[type-arg]
    from modelbuilder.training.backbones import get_backbone_spec
    from modelbuilder.training.plan import feature_rate

    size = _estimate(wclient)["resolution"]
    other_data = world.completed_run()  # a faster machine, but other images: not used
    plan = {"format_version": 1, "backbone": "test_tiny", "speed": 5.0, "feature_size": size,
            "feature_seconds": 4.5}
    world.artifacts.put_bytes(other_data, json.dumps(plan).encode(), "plan.json")
    run_id = _completed_run_on(world, _upload(wclient))
    # The trainer's speed divides all of the pass's time, overhead included, by the images: 4.5s of
    # which 1.5s overhead means the pass itself ran 4.5 / 3.0 = 1.5x faster than that speed says.
    plan = {"format_version": 1, "backbone": "test_tiny", "speed": 0.2, "feature_size": size,
            "feature_seconds": 4.5}
    world.artifacts.put_bytes(run_id, json.dumps(plan).encode(), "plan.json")
    body = _estimate(wclient)
    rate = feature_rate(get_backbone_spec("test_tiny"), size, 0.2 * 1.5)
    assert body["speed_source"] == "run" and body["feature_rate"] == pytest.approx(rate, rel=1e-3)
    assert body["feature_seconds"] == pytest.approx(OVERHEAD_S + body["images"] / rate, rel=1e-3)
    assert f"measured by run {run_id[:8]}" in body["feature_method"]
    assert "plus 1.5s fixed" in body["feature_method"]


def test_when_nothing_can_be_measured_the_page_says_the_overhead_is_missing(
        wclient: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(*args: object, **kwargs: object) -> ProbeTiming:
        raise estimate_module.ProbeFailed("the probe failed: Exporting the model to ONNX failed: boom")

    monkeypatch.setattr(estimate_module, "_run_probe", failing)
    body = _estimate(wclient)
    assert body["speed_source"] == "reference" and body["overhead_seconds"] is None
    assert "reference rates" in body["feature_method"] and "the probe failed" in body["feature_method"]
    assert "not included" in body["feature_method"]
    assert not (settings.cache_dir() / estimate_module.PROBE_CACHE_FILE).exists()  # a failure is not cached


def test_the_real_probe_times_the_trainers_pass_without_filling_the_feature_cache(tmp_path: Path) -> None:
    """Through the real export and onnxruntime (test_tiny: well under a second)."""
    from factories import make_image_folder
    from modelbuilder.training.backbones import get_backbone_spec
    from modelbuilder.training.features import feature_cache_for

    folder = make_image_folder(tmp_path / "data", classes=2, per_class=3, size=24)
    paths = sorted(folder.rglob("*.png"))
    timed = estimate_probe.time_pass("test_tiny", 32, 1, ("features", "stem", "small"), paths, tmp_path)
    assert timed.setup_s > 0 and timed.warmup_s >= 0 and timed.write_s > 0 and timed.rate > 0
    assert timed.overhead_s == pytest.approx(timed.setup_s + timed.warmup_s + timed.write_s)
    # The timed call cycles the 6 images; its first batch is left out of the rate.
    assert timed.images % estimate_probe.BATCH == 0
    assert estimate_probe.MIN_TIMED <= timed.images <= estimate_probe.TIMED_CALLS * estimate_probe.MAX_TIMED
    spec = get_backbone_spec("test_tiny").preprocessing(32)
    assert len(feature_cache_for("test_tiny", "random", spec, "features")) == 0


@pytest.mark.parametrize("rate, calls", [(100.0, 1), (10_000.0, 3)])
def test_the_probe_times_about_target_seconds_of_steady_batches(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rate: float, calls: int) -> None:
    """A slow machine fills TARGET_SECONDS with one call; a fast one needs more (each call is capped), and
    the write is split into a fixed part and a part per row from the first call's and the last call's."""
    from factories import make_image_folder

    made: list[int] = []

    def fake(session: object, paths: list[Path], count: int, start: int, spec: object,
             caches: dict[str, object]) -> tuple[float, float, float, int]:
        made.append(count)
        write = 0.1 + 0.001 * count  # 0.1 s fixed, 1 ms a row
        return estimate_probe.BATCH / rate, rate, write, count - estimate_probe.BATCH

    monkeypatch.setattr(estimate_probe, "_timed_call", fake)
    paths = sorted(make_image_folder(tmp_path / "data", classes=2, per_class=2, size=24).rglob("*.png"))
    timed = estimate_probe.time_pass("test_tiny", 32, None, ("features",), paths, tmp_path)
    assert made[0] == estimate_probe.BATCH and len(made) == 1 + calls
    assert timed.images == sum(made[1:]) - calls * estimate_probe.BATCH
    if calls == 1:
        one_batch = estimate_probe.BATCH / rate
        assert timed.images / rate == pytest.approx(estimate_probe.TARGET_SECONDS, abs=one_batch)
    else:
        assert all(count == estimate_probe.MAX_TIMED + estimate_probe.BATCH for count in made[1:])
    assert timed.write_s == pytest.approx(0.1) and timed.warmup_s == pytest.approx(0.0)
    assert 1 / timed.rate == pytest.approx(1 / rate + 0.001)


def test_the_probe_decodes_a_sample_spread_over_the_file_sizes(tmp_path: Path) -> None:
    """Decoding grows with the source's pixels: the sample must hold small and large files in the data's
    proportions, not the first files by name (often one label, often alike)."""
    sizes = [100 * (i + 1) for i in range(200)]  # file i has (i + 1) * 100 bytes
    paths = []
    for i, size in enumerate(sizes):
        path = tmp_path / f"{i:03d}.bin"
        path.write_bytes(b"x" * size)
        paths.append(path)
    sample = estimate_probe.sample_paths(paths, count=20)
    assert len(sample) == len(set(sample)) == 20
    chosen = sorted(p.stat().st_size for p in sample)
    assert chosen[0] <= 1000 and chosen[-1] >= 19_100  # both ends of the size range
    assert sum(chosen) / 20 == pytest.approx(sum(sizes) / 200, rel=0.05)  # the data's mean size
    assert [p.stat().st_size for p in sample] != chosen  # shuffled: every batch mixes sizes
    assert estimate_probe.sample_paths(paths, count=20) == sample  # the same sample every time
    assert estimate_probe.sample_paths(paths[:5], count=20) == estimate_probe.sample_paths(paths[:5])
    assert sorted(estimate_probe.sample_paths(paths[:5])) == paths[:5]


def test_a_probe_is_not_reused_for_images_of_another_size_class(world: PortalWorld, probes: list) -> None:  # type: ignore[type-arg]
    """A probe of 24 px images says nothing about the decoding cost of photos: another size class probes."""
    from modelbuilder.portal.datasources import build_preview
    from modelbuilder.services.workspaces import open_session

    preview = build_preview("dataset:x", world.data_dir)
    with open_session(world.workspace) as session:
        estimate_module.estimate_training(session, preview, 60, "test_tiny")
        estimate_module.estimate_training(session, preview, 90, "test_tiny")  # another budget: cached
        assert len(probes) == 1
        preview.typical_size = (preview.typical_size[0] * 4, preview.typical_size[1] * 4)
        found = estimate_module.estimate_training(session, preview, 60, "test_tiny")
    assert len(probes) == 2 and found.speed_source == "probe"


def _completed_run_on(world: PortalWorld, source: str) -> str:
    """A completed run on the uploaded data ``source`` (its dataset fingerprint)."""
    from modelbuilder.entities import RunStatus
    from modelbuilder.services.datasets import get_dataset
    from modelbuilder.services.training_run import dataset_fingerprint
    from modelbuilder.services.workspaces import open_session

    with open_session(world.workspace) as session:
        folder = get_dataset(session, source.partition(":")[2]).path
    experiment = world.store.get_or_create_experiment("uploads")
    run = world.store.create_run(experiment.id, compute="local", params={"data": str(folder)},
                                 dataset_fingerprint=dataset_fingerprint(folder), status=RunStatus.QUEUED)
    for status in (RunStatus.PREPARING, RunStatus.RUNNING, RunStatus.FINALIZING, RunStatus.COMPLETED):
        world.store.set_run_status(run.id, status)
    return run.id


def test_the_probe_runs_in_a_fresh_process_and_reports_its_failures(tmp_path: Path) -> None:
    """A fresh interpreter, as the trainer's worker: its first ONNX export is the one the trainer pays."""
    from factories import make_image_folder

    paths = sorted(make_image_folder(tmp_path / "data", classes=2, per_class=2, size=24).rglob("*.png"))
    timed = estimate_module._run_probe("test_tiny", 32, None, ("features",), paths)
    assert timed.setup_s > 0 and timed.rate > 0 and timed.images >= estimate_probe.MIN_TIMED
    with pytest.raises(estimate_module.ProbeFailed, match="the probe failed: .*no_such_backbone"):
        estimate_module._run_probe("no_such_backbone", 32, None, ("features",), paths)


@pytest.mark.parametrize("images, calibrates", [(1000, False), (1600, True)])
def test_the_resolution_is_the_one_the_trainer_will_use(world: PortalWorld, monkeypatch: pytest.MonkeyPatch,
                                                        images: int, calibrates: bool) -> None:
    """The trainer re-plans with a measured rate only for PROBE_MIN_MISSING uncached images or more
    (feature_pass.calibrate), and then subsamples when even that is too slow (train_limit)."""
    from modelbuilder.portal.datasources import Preview
    from modelbuilder.services.workspaces import open_session
    from modelbuilder.training.plan import DataFacts, make_plan

    assert (images >= feature_pass.PROBE_MIN_MISSING) is calibrates
    monkeypatch.setattr(estimate_module, "_run_probe",  # a machine 100x slower than the reference
                        lambda *args: timing(rate=1.0, images=16))
    preview = Preview("dataset:x", world.data_dir, ["a", "b"], {"a": images // 2, "b": images // 2}, {},
                      typical_size=(200, 200), usable={p.relative_to(world.data_dir).as_posix()
                                                       for p in world.data_dir.rglob("*.png")})
    with open_session(world.workspace) as session:
        found = estimate_module.estimate_training(session, preview, 600, "efficientnet_lite0")
    val = round(images * 0.2)
    reference = make_plan("efficientnet_lite0", DataFacts(images - val, val, 200, 3, 2), images, 600)
    if calibrates:
        assert found.resolution < reference.feature_size  # re-planned with the measured (slow) rate
        # train_limit: the training images that fit 45% of the budget (at least 2 per label), all of val
        assert found.images == pytest.approx(max(4, 0.45 * 600 * found.feature_rate - val) + val, abs=2)
        assert found.images < images
    else:
        assert found.resolution == reference.feature_size and found.images == images
    assert found.feature_seconds == pytest.approx(OVERHEAD_S + found.images / found.feature_rate)


def test_the_plan_is_made_from_the_trainers_own_data_facts(tmp_path: Path) -> None:
    """``trainer.data_facts`` on the preview's images: greyscale data has 1 channel (the from-scratch CNN
    is cheaper then), as the trainer will measure; the counts are the split's."""
    from modelbuilder.portal.datasources import build_preview
    from modelbuilder.training.trainer import data_facts

    for number, label in enumerate(("a", "b")):
        (tmp_path / "grey" / label).mkdir(parents=True)
        for index in range(4):
            image = Image.new("L", (30 + index, 20), color=40 * number + index)
            image.save(tmp_path / "grey" / label / f"{index}.png")
    preview = build_preview("folder:0:grey", tmp_path / "grey")
    facts = estimate_module._data_facts(preview, num_train=6, num_val=2)
    assert facts.channels == 1 and facts.typical_side == 20 and (facts.num_train, facts.num_val) == (6, 2)
    assert facts.num_labels == 2
    assert facts.typical_side == data_facts(preview.items, [], preview.labels).typical_side


def test_with_every_feature_cached_only_the_export_and_session_remain(
        world: PortalWorld, probes: list, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[type-arg]
    """The trainer still exports the model and starts a session, but decodes nothing and writes nothing."""
    from modelbuilder.portal.datasources import build_preview
    from modelbuilder.services.workspaces import open_session

    monkeypatch.setattr(estimate_module, "_cached_features", lambda backbone, size, hashes: len(hashes))
    preview = build_preview("dataset:x", world.data_dir)
    with open_session(world.workspace) as session:
        found = estimate_module.estimate_training(session, preview, 60, "test_tiny")
    assert found.images == 0 and found.cached_images == preview.images
    assert found.overhead_seconds == pytest.approx(timing().setup_s, abs=1e-3)
    assert found.feature_seconds == pytest.approx(timing().setup_s, abs=1e-3)
