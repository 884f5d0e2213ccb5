"""The compute size catalog: the source's two sizes exactly, CPU and current GPU sizes, and ``local``."""

from __future__ import annotations

import pytest

from modelbuilder.compute.sizes import LOCAL_SIZE_NAME, find_size, get_size, is_local_size, list_sizes
from modelbuilder.entities import ComputeSize
from modelbuilder.errors import NotFoundError


def _spec(size: ComputeSize) -> tuple[object, ...]:
    return (
        size.vcpus,
        size.memory_gib,
        size.temp_storage_gib,
        size.gpus,
        size.gpu_memory_gib,
        size.max_data_disks,
        size.max_nics,
    )


def test_the_source_sizes_are_exact() -> None:
    assert _spec(get_size("Standard_NC12")) == (12, 112, 680, 2, 24, 48, 2)
    assert _spec(get_size("Standard_NC24")) == (24, 224, 1440, 4, 48, 64, 4)
    assert get_size("Standard_NC12").gpu_model == get_size("Standard_NC24").gpu_model == "NVIDIA Tesla K80"


@pytest.mark.parametrize(
    "name, spec",
    [
        ("Standard_D2s_v3", (2, 8, 16, 0, 0, 4, 2)),
        ("Standard_F2s_v2", (2, 4, 16, 0, 0, 4, 2)),
        ("Standard_D16s_v3", (16, 64, 128, 0, 0, 32, 8)),
        ("Standard_NC4as_T4_v3", (4, 28, 180, 1, 16, 8, 2)),
        ("Standard_NC24ads_A100_v4", (24, 220, 64, 1, 80, 12, 2)),
        ("Standard_NC40ads_H100_v5", (40, 320, 128, 1, 94, 12, 2)),
    ],
)
def test_current_sizes(name: str, spec: tuple[object, ...]) -> None:
    assert _spec(get_size(name)) == spec


def test_catalog_shape() -> None:
    sizes = list_sizes()
    names = [s.name for s in sizes]
    assert len(names) == len({n.lower() for n in names})
    assert sizes[0].name == LOCAL_SIZE_NAME and is_local_size(sizes[0]) and is_local_size("LOCAL")
    cpu = [s for s in sizes if s.gpus == 0 and not is_local_size(s)]
    gpu = [s for s in sizes if s.gpus > 0]
    assert len(cpu) >= 4 and len(gpu) >= 5
    assert all(s.gpu_model is None and s.gpu_memory_gib == 0 for s in cpu)
    assert all(s.gpu_model and s.gpu_memory_gib >= 12 * s.gpus for s in gpu)
    assert all(s.vcpus > 0 and s.memory_gib > 0 and s.max_nics > 0 for s in cpu + gpu)
    assert list_sizes() is not list_sizes()  # callers cannot mutate the catalog


@pytest.mark.parametrize("spelling", ["standard_nc12", "STANDARD_NC12", " Standard_NC12 "])
def test_lookup_is_case_insensitive(spelling: str) -> None:
    assert get_size(spelling).name == "Standard_NC12" and find_size(spelling) == get_size("Standard_NC12")


def test_unknown_size_names_the_closest_and_the_list_command() -> None:
    assert find_size("Standard_NC13") is None
    with pytest.raises(NotFoundError) as info:
        get_size("Standard_NC13")
    hint = info.value.hint or ""
    assert "Standard_NC13" in str(info.value)
    assert "modelbuilder compute sizes" in hint and "Did you mean 'Standard_NC12'" in hint
    with pytest.raises(NotFoundError) as far:
        get_size("quantum-computer-9000")
    assert "Did you mean" not in (far.value.hint or "") and "modelbuilder compute sizes" in (
        far.value.hint or ""
    )
