"""Backbone registry and weight resolution (explicit file -> cache -> package -> download)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from modelbuilder.errors import BackboneNotFoundError, WeightsError  # noqa: E402
from modelbuilder.training.backbones import (  # noqa: E402
    create_backbone,
    get_backbone_spec,
    list_backbones,
    split_backbone,
)
from modelbuilder.training.plan import choose_backbone  # noqa: E402
from modelbuilder.training.weights import cache_path, find_weights, resolve_weights  # noqa: E402


def test_registry_lists_the_required_backbones() -> None:
    assert {"resnet50", "efficientnet_lite0", "test_tiny"} <= set(list_backbones())
    assert list_backbones("eff*") == ["efficientnet_lite0"]
    lite0 = get_backbone_spec("efficientnet_lite0")
    spec = lite0.preprocessing(112)
    assert spec.crop_size == 112
    # (x - 127) / 128 on 0..255 pixels, expressed on the 0..1 scale.
    assert spec.mean[0] * 255 == pytest.approx(127) and spec.std[0] * 255 == pytest.approx(128)
    assert get_backbone_spec("resnet50").mean == (0.485, 0.456, 0.406)


def test_unknown_backbone_names_the_known_ones() -> None:
    with pytest.raises(BackboneNotFoundError, match="'vit_huge' is not registered") as info:
        get_backbone_spec("vit_huge")
    assert "efficientnet_lite0" in (info.value.hint or "")


def test_test_tiny_is_a_feature_extractor() -> None:
    model = create_backbone("test_tiny").eval()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 16)
    stem, tail, _ = split_backbone("test_tiny", model, 32)
    assert tail(stem(torch.zeros(1, 3, 32, 32))).shape == (1, 16)


def test_resnet50_offline_without_weights_names_both_fixes() -> None:
    with pytest.raises(WeightsError) as info:
        resolve_weights(get_backbone_spec("resnet50"))
    assert "resnet50" in str(info.value) and "offline" in str(info.value)
    assert "--weights" in (info.value.hint or "") and "efficientnet_lite0" in (info.value.hint or "")
    with pytest.raises(WeightsError):
        choose_backbone("resnet50", None)


def test_lite0_weights_come_from_the_package_and_auto_picks_lite0() -> None:
    source = find_weights(get_backbone_spec("efficientnet_lite0"))
    assert source is not None and source.kind == "package"
    assert choose_backbone("auto", None) == "efficientnet_lite0"


def test_explicit_file_wins_then_cache(tmp_path: Path) -> None:
    spec = get_backbone_spec("efficientnet_lite0")
    packaged = find_weights(spec)
    assert packaged is not None and packaged.path is not None
    cached = cache_path(spec)
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(packaged.path.read_bytes())
    assert find_weights(spec).kind == "cache"  # type: ignore[union-attr]
    assert find_weights(spec, str(cached)).kind == "file"  # type: ignore[union-attr]
    with pytest.raises(WeightsError, match="does not exist"):
        find_weights(spec, str(tmp_path / "missing.pth"))


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "tiny.pth"
    torch.save(create_backbone("test_tiny").state_dict(), path)
    with pytest.raises(WeightsError, match="tensors|do not fit") as info:
        create_backbone("efficientnet_lite0", weights=str(path))
    assert "--architecture" in (info.value.hint or "")


def test_weights_files_load_with_weights_only(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"state_dict": Payload()}))
    with pytest.raises(WeightsError, match="cannot be loaded safely"):
        create_backbone("efficientnet_lite0", weights=str(path))
