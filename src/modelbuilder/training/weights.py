"""Pretrained weights: explicit file -> local cache -> weights shipped in a package -> download.

Weights files are always loaded with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import settings
from ..errors import OfflineModeError, WeightsError
from .backbone_spec import BackboneSpec, offline_backbones

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightsSource:
    kind: str  # "file" | "cache" | "package" | "download" | "none"
    path: Path | None

    def describe(self) -> str:
        return f"{self.kind}: {self.path}" if self.path else self.kind


def cache_path(spec: BackboneSpec) -> Path:
    return settings.weights_cache_dir() / f"{spec.name}.pth"


def find_weights(spec: BackboneSpec, explicit: str | None = None) -> WeightsSource | None:
    """Where the weights would come from without downloading, or None if only a download would do."""
    if not spec.needs_weights:
        return WeightsSource("none", None)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"Weights file '{path}' for backbone '{spec.name}' does not exist.",
                hint="Check the --weights path, or leave --weights out to use cached or packaged weights.",
            )
        return WeightsSource("file", path)
    cached = cache_path(spec)
    if cached.is_file():
        return WeightsSource("cache", cached)
    if spec.package_weights is not None:
        packaged = spec.package_weights()
        if packaged and Path(packaged).is_file():
            return WeightsSource("package", Path(packaged))
    return None


def weights_available(spec: BackboneSpec) -> bool:
    """True if the weights can be had offline (no download)."""
    try:
        return find_weights(spec) is not None
    except WeightsError:
        return False


def _missing_weights_error(spec: BackboneSpec, reason: str) -> WeightsError:
    offline = [n for n in offline_backbones() if n != spec.name]
    alternative = (f", or use a backbone whose weights ship with a package: --architecture "
                   f"{' / '.join(offline)}" if offline else "")
    return WeightsError(
        f"No pretrained weights for backbone '{spec.name}' are available offline ({reason}).",
        hint=f"Give a weights file with --weights FILE (a state dict for timm's '{spec.timm_name}')"
        f"{alternative}.",
    )


def _download(spec: BackboneSpec) -> Path:
    if settings.offline():
        raise _missing_weights_error(spec, "running offline, MODELBUILDER_OFFLINE=1")
    if not spec.download:
        raise _missing_weights_error(spec, "no download location is known")
    import timm
    import torch

    try:
        model = timm.create_model(spec.timm_name or spec.name, pretrained=True, num_classes=0,
                                  pretrained_cfg_overlay={"hf_hub_id": spec.download})
    except Exception as exc:  # network errors come in many types; all mean "not downloadable now"
        raise _missing_weights_error(spec, f"download failed: {type(exc).__name__}: {exc}") from exc
    target = cache_path(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    from ..fileio import atomic_open

    with atomic_open(target, "wb") as handle:
        torch.save(model.state_dict(), handle)
    return target


def resolve_weights(spec: BackboneSpec, explicit: str | None = None) -> WeightsSource:
    """Find (or download) the weights for ``spec``.

    Raises:
        WeightsError: nothing found offline and no download possible; the hint names --weights and the
            offline backbone.
    """
    found = find_weights(spec, explicit)
    if found is not None:
        return found
    try:
        return WeightsSource("download", _download(spec))
    except OfflineModeError as exc:
        raise _missing_weights_error(spec, str(exc)) from exc


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"Weights file '{path}' cannot be loaded safely: {type(exc).__name__}: {exc}",
            hint="Give a plain PyTorch state dict (saved with torch.save(model.state_dict(), path)).",
        ) from exc
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise WeightsError(f"Weights file '{path}' does not hold a state dict.",
                           hint="Save the weights with torch.save(model.state_dict(), path).")
    return {k.removeprefix("module."): v for k, v in data.items() if hasattr(v, "shape")}


def map_state_dict(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                   origin: str) -> dict[str, torch.Tensor]:
    """Match ``source`` onto ``target``'s keys: by name when names agree, else by position.

    The positional mapping is what the packaged Lite0 weights need (``_conv_stem/_blocks/_fc`` keys,
    the same tensors in the same order as timm's model). Classifier tensors beyond the target's end are
    dropped. Every shape must match.
    """
    if set(target) <= set(source):
        mapped = {k: source[k] for k in target}
    else:
        src_items = list(source.items())
        if len(src_items) < len(target):
            raise WeightsError(
                f"Weights from {origin} have {len(src_items)} tensors; the model needs {len(target)}.",
                hint="The weights belong to another architecture; pick the matching --architecture.",
            )
        mapped = {}
        for (key, shape_ref), (src_key, tensor) in zip(target.items(), src_items, strict=False):
            mapped[key] = tensor
            if tuple(tensor.shape) != tuple(shape_ref.shape):
                raise WeightsError(
                    f"Weights from {origin} do not fit: '{src_key}' has shape {tuple(tensor.shape)} "
                    f"but '{key}' needs {tuple(shape_ref.shape)}.",
                    hint="The weights belong to another architecture; pick the matching --architecture.",
                )
    for key, tensor in mapped.items():
        if tuple(tensor.shape) != tuple(target[key].shape):
            raise WeightsError(f"Weights from {origin}: '{key}' has shape {tuple(tensor.shape)}, "
                               f"expected {tuple(target[key].shape)}.",
                               hint="Pick the --architecture these weights were trained for.")
    return mapped


def load_backbone_weights(model: nn.Module, spec: BackboneSpec, explicit: str | None = None) -> WeightsSource:
    """Resolve and load pretrained weights into ``model`` (a timm model built with num_classes=0)."""
    source = resolve_weights(spec, explicit)
    if source.path is None:
        return source
    state = _read_state_dict(source.path)
    mapped = map_state_dict(state, model.state_dict(), f"{source.kind} '{source.path}'")
    model.load_state_dict(mapped, strict=True)
    logger.info("Loaded %s weights from %s", spec.name, source.describe())
    return source
