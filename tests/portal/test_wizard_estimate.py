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
from portal_fixtures import BASE_URL, PortalWorld, csrf_headers
from wizard_fixtures import API, image_files, wizard_app, zip_bytes

from modelbuilder import settings
from modelbuilder.portal import estimate as estimate_module
from modelbuilder.training import feature_pass
from modelbuilder.training.feature_pass import PassTiming

OVERHEAD_S, RATE = 1.5, 100.0


@pytest.fixture
def wclient(world: PortalWorld) -> Iterator[TestClient]:
    with TestClient(wizard_app([]), base_url=BASE_URL) as client:
        yield client


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, tuple[str, ...], int]]:
    """Every probe made (backbone, size, outputs, paths given); each measures OVERHEAD_S and RATE."""
    made: list[tuple[str, int, tuple[str, ...], int]] = []

    def fake(backbone: str, size: int, pool: int | None, outputs: tuple[str, ...],
             paths: list[Path]) -> PassTiming:
        assert all(p.is_file() for p in paths)  # the data's own images
        made.append((backbone, size, outputs, len(paths)))
        return PassTiming(overhead_s=OVERHEAD_S, rate=RATE, images=32)

    monkeypatch.setattr(estimate_module, "_run_probe", fake)
    return made


def _estimate(client: TestClient, per_class: int = 6, architecture: str = "test_tiny") -> dict:  # type: ignore[type-arg]
    response = client.post(f"{API}/datasets", headers=csrf_headers(client.app),
                           files={"archive": ("d.zip", zip_bytes(image_files(per_class=per_class)), "x")})
    assert response.status_code == 201, response.text
    params = {"source": response.json()["source"], "time_budget": 60, "architecture": architecture}
    body = client.get(f"{API}/train/estimate", params=params)
    assert body.status_code == 200, body.text
    return body.json()  # type: ignore[no-any-return]


def test_without_an_earlier_run_a_probe_measures_overhead_and_rate(wclient: TestClient, probes: list) -> None:  # type: ignore[type-arg]
    body = _estimate(wclient)
    assert len(probes) == 1 and probes[0][0] == "test_tiny" and probes[0][1] == body["resolution"]
    assert "features" in probes[0][2] and probes[0][3] == 12
    assert body["speed_source"] == "probe"
    assert body["overhead_seconds"] == OVERHEAD_S and body["feature_rate"] == pytest.approx(RATE)
    assert body["feature_seconds"] == pytest.approx(OVERHEAD_S + body["images"] / RATE)
    # The page shows this sentence under the estimate (wizard.js: e.feature_method).
    method = body["feature_method"]
    assert "measured by a probe that featurized 32 of these images" in method
    assert "plus 1.5s fixed (ONNX export" in method and "just now" in method


def test_the_probe_is_cached_per_machine_and_resolution_with_its_time(wclient: TestClient,
                                                                      probes: list) -> None:  # type: ignore[type-arg]
    first = _estimate(wclient)
    again = _estimate(wclient, per_class=7)  # other images, same backbone and resolution: no new probe
    assert len(probes) == 1
    assert again["speed_source"] == "probe_cached" and again["overhead_seconds"] == OVERHEAD_S
    assert again["feature_seconds"] == pytest.approx(OVERHEAD_S + again["images"] / RATE)
    assert first["images"] == 12 and again["images"] == 14
    entries = json.loads((settings.cache_dir() / estimate_module.PROBE_CACHE_FILE).read_text())
    (key, entry), = entries.items()
    assert f"|test_tiny|{first['resolution']}|" in key
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
    run_id = world.completed_run()
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
    def failing(*args: object, **kwargs: object) -> PassTiming:
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
    timed = feature_pass.time_feature_pass("test_tiny", 32, 1, ("features", "stem", "small"), paths,
                                           tmp_path)
    assert timed.overhead_s > 0 and timed.rate > 0
    assert timed.images % 16 == 0 and 16 <= timed.images <= feature_pass.PROBE_TIMED_IMAGES  # cycles 6 images
    spec = get_backbone_spec("test_tiny").preprocessing(32)
    assert len(feature_cache_for("test_tiny", "random", spec, "features")) == 0


def test_the_probe_runs_in_a_fresh_process_and_reports_its_failures(tmp_path: Path) -> None:
    """A fresh interpreter, as the trainer's worker: its first ONNX export is the one the trainer pays."""
    from factories import make_image_folder

    paths = sorted(make_image_folder(tmp_path / "data", classes=2, per_class=2, size=24).rglob("*.png"))
    timed = estimate_module._run_probe("test_tiny", 32, None, ("features",), paths)
    assert timed.overhead_s > 0 and timed.rate > 0 and timed.images >= 16
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
                        lambda *args: PassTiming(overhead_s=OVERHEAD_S, rate=1.0, images=16))
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
