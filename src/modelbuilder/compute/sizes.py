"""The catalog of compute sizes: the source's GPU sizes, CPU sizes, current GPU sizes, and ``local``.

Numbers are the public Azure specifications of each size (vCPUs, memory in GiB, temporary SSD in GiB,
GPUs, total GPU memory in GiB, max data disks, max NICs). ``Standard_NC12`` and ``Standard_NC24`` are
exactly the source document's. A size is a resource request: a backend decides whether it can ever
satisfy it (see ``provisioning.py``). The special size ``local`` means "this machine as it is".
"""

from __future__ import annotations

import difflib

from .. import hints
from ..entities import ComputeSize
from ..errors import NotFoundError

LOCAL_SIZE_NAME = "local"

_K80 = "NVIDIA Tesla K80"
_T4 = "NVIDIA Tesla T4"
_A100 = "NVIDIA A100 80GB PCIe"
_H100 = "NVIDIA H100 NVL"

_SIZES: tuple[ComputeSize, ...] = (
    ComputeSize(
        LOCAL_SIZE_NAME, 0, 0.0, 0, 0, 0, 0, 0, None, "This machine as it is (its cores, memory, GPUs)"
    ),
    # General purpose and compute-optimised CPU sizes.
    ComputeSize("Standard_F2s_v2", 2, 4, 16, 0, 0, 4, 2, None, "Compute optimised, 2 vCPU"),
    ComputeSize("Standard_F4s_v2", 4, 8, 32, 0, 0, 8, 2, None, "Compute optimised, 4 vCPU"),
    ComputeSize("Standard_F8s_v2", 8, 16, 64, 0, 0, 16, 4, None, "Compute optimised, 8 vCPU"),
    ComputeSize("Standard_D2s_v3", 2, 8, 16, 0, 0, 4, 2, None, "General purpose, 2 vCPU"),
    ComputeSize("Standard_D4s_v3", 4, 16, 32, 0, 0, 8, 2, None, "General purpose, 4 vCPU"),
    ComputeSize("Standard_D8s_v3", 8, 32, 64, 0, 0, 16, 4, None, "General purpose, 8 vCPU"),
    ComputeSize("Standard_D16s_v3", 16, 64, 128, 0, 0, 32, 8, None, "General purpose, 16 vCPU"),
    ComputeSize(
        "Standard_DS3_v2", 4, 14, 28, 0, 0, 16, 4, None, "General purpose, 4 vCPU (Azure ML default)"
    ),
    # The source document's sizes (NC-series, NVIDIA Tesla K80).
    ComputeSize("Standard_NC12", 12, 112, 680, 2, 24, 48, 2, _K80, "The source's GPU size: 2x K80 GPUs"),
    ComputeSize("Standard_NC24", 24, 224, 1440, 4, 48, 64, 4, _K80, "The source's GPU size: 4x K80 GPUs"),
    # Current GPU sizes.
    ComputeSize("Standard_NC4as_T4_v3", 4, 28, 180, 1, 16, 8, 2, _T4, "1x T4 GPU"),
    ComputeSize("Standard_NC8as_T4_v3", 8, 56, 360, 1, 16, 16, 4, _T4, "1x T4 GPU"),
    ComputeSize("Standard_NC64as_T4_v3", 64, 440, 2880, 4, 64, 32, 8, _T4, "4x T4 GPUs"),
    ComputeSize("Standard_NC24ads_A100_v4", 24, 220, 64, 1, 80, 12, 2, _A100, "1x A100 80GB GPU"),
    ComputeSize("Standard_NC48ads_A100_v4", 48, 440, 128, 2, 160, 24, 4, _A100, "2x A100 80GB GPUs"),
    ComputeSize("Standard_NC96ads_A100_v4", 96, 880, 256, 4, 320, 32, 8, _A100, "4x A100 80GB GPUs"),
    ComputeSize("Standard_NC40ads_H100_v5", 40, 320, 128, 1, 94, 12, 2, _H100, "1x H100 NVL GPU"),
    ComputeSize("Standard_NC80adis_H100_v5", 80, 640, 256, 2, 188, 24, 4, _H100, "2x H100 NVL GPUs"),
)

_BY_KEY = {size.name.lower(): size for size in _SIZES}


def list_sizes() -> list[ComputeSize]:
    """Every size of the catalog: ``local``, CPU sizes, the source's GPU sizes, current GPU sizes."""
    return list(_SIZES)


def find_size(name: str) -> ComputeSize | None:
    """The size with this name (case-insensitive), or None."""
    return _BY_KEY.get(name.strip().lower()) if isinstance(name, str) else None


def get_size(name: str) -> ComputeSize:
    """The size with this name (case-insensitive).

    Raises:
        NotFoundError: no size has this name; the hint names the closest one and how to list them all.
    """
    found = find_size(name)
    if found is None:
        key = str(name).strip().lower()
        close = difflib.get_close_matches(key, list(_BY_KEY), n=1, cutoff=0.5)
        suggestion = f"Did you mean '{_BY_KEY[close[0]].name}'? " if close else ""
        raise NotFoundError(
            f"Compute size '{name}' is not in the catalog.",
            hint=f"{suggestion}List sizes with: {hints.command('compute', 'sizes')}",
        )
    return found


def is_local_size(size: ComputeSize | str) -> bool:
    return (size.name if isinstance(size, ComputeSize) else str(size)).lower() == LOCAL_SIZE_NAME
