"""Provisioning: local fit checks, GPU detection, and the errored-compute scenario end to end."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelbuilder.compute import provisioning
from modelbuilder.compute.provisioning import (
    BackendRules,
    MachineCapacity,
    check_local_fit,
    delete_compute,
    ensure_local_compute,
    get_backend_rules,
    provision_compute,
    register_backend,
)
from modelbuilder.compute.sizes import get_size
from modelbuilder.entities import Compute, ComputeSize, ProvisioningState
from modelbuilder.errors import (
    BackendUnavailableError,
    ComputeError,
    ComputeExistsError,
    ComputeNotFoundError,
    InvalidNameError,
    InvalidParameterError,
    InvalidStateError,
    NotFoundError,
)
from modelbuilder.store import SqlAlchemyStore, sqlite_file_url

P = ProvisioningState
LAPTOP = MachineCapacity(cores=2, memory_gib=7.6, gpus=0)
GPU_BOX = MachineCapacity(cores=32, memory_gib=256, gpus=4, gpu_names=("A",) * 4)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlAlchemyStore]:
    with SqlAlchemyStore(sqlite_file_url(tmp_path / "ws" / "workspace.db"), workspace="ws1") as opened:
        yield opened


@pytest.fixture
def fresh_detection() -> Iterator[None]:
    provisioning._detect_capacity.cache_clear()
    yield
    provisioning._detect_capacity.cache_clear()


# --- fit checks -----------------------------------------------------------------------------------


def test_local_fit_reasons() -> None:
    assert check_local_fit(get_size("Standard_NC12"), LAPTOP) == (
        "needs 2 GPUs, this machine has 0; needs 12 vCPUs, this machine has 2; "
        "needs 112 GiB of memory, this machine has 7.6 GiB"
    )
    assert check_local_fit(get_size("Standard_NC4as_T4_v3"), MachineCapacity(8, 64, 0)) == (
        "needs 1 GPU, this machine has 0"
    )
    assert check_local_fit(get_size("Standard_D4s_v3"), LAPTOP) == (
        "needs 4 vCPUs, this machine has 2; needs 16 GiB of memory, this machine has 7.6 GiB"
    )
    for fits in ("local", "Standard_D2s_v3", "Standard_F2s_v2"):  # 8 GiB nominal on a 7.6 GiB machine
        assert check_local_fit(get_size(fits), LAPTOP) is None
    assert check_local_fit(get_size("Standard_NC24"), GPU_BOX) is None
    assert check_local_fit(get_size("local"), MachineCapacity(1, 0.5, 0)) is None


def _fake_nvidia_smi(folder: Path, output: str, code: int = 0) -> None:
    script = folder / "nvidia-smi"
    lines = "".join(f"echo '{line}'\n" for line in output.splitlines())  # builtins only: PATH may be bare
    script.write_text(f"#!/bin/sh\n{lines}exit {code}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


@pytest.mark.usefixtures("fresh_detection")
def test_detection_counts_gpus_from_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listing = (
        "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1111)\n"
        "  MIG 1g.10gb     Device  0: (UUID: MIG-2222)\n"
        "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-3333)"
    )
    _fake_nvidia_smi(tmp_path, listing)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    found = MachineCapacity.detect()
    assert found.gpus == 2 and found.gpu_names == ("NVIDIA H100 80GB HBM3",) * 2
    assert found.cores == os.cpu_count() and found.memory_gib > 0.1
    provisioning._detect_capacity.cache_clear()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert MachineCapacity.detect().gpus == 1
    provisioning._detect_capacity.cache_clear()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert MachineCapacity.detect().gpus == 0


@pytest.mark.usefixtures("fresh_detection")
def test_a_failing_or_missing_nvidia_smi_means_no_gpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_nvidia_smi(tmp_path, "NVIDIA-SMI has failed", code=9)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert MachineCapacity.detect().gpus == 0
    provisioning._detect_capacity.cache_clear()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert MachineCapacity.detect().gpus == 0


# --- the errored-compute scenario -----------------------------------------------------------------


def test_errored_compute_end_to_end(store: SqlAlchemyStore) -> None:
    failed = provision_compute(store, "gpu-1", "Standard_NC12", capacity=LAPTOP)
    assert failed.state is P.FAILED and failed.error and "needs 2 GPUs, this machine has 0" in failed.error
    assert store.get_compute("gpu-1") == failed  # kept, with its error

    with pytest.raises(ComputeExistsError) as info:
        provision_compute(store, "gpu-1", "Standard_D2s_v3", capacity=LAPTOP)
    assert "state Failed" in str(info.value) and "needs 2 GPUs, this machine has 0" in str(info.value)
    hint = info.value.hint or ""
    assert "Create it with another name" in hint and "modelbuilder compute delete gpu-1" in hint

    assert delete_compute(store, "gpu-1") == failed
    assert store.find_compute("gpu-1") is None

    fitted = provision_compute(store, "gpu-1", "Standard_D2s_v3", capacity=LAPTOP)
    assert (fitted.state, fitted.error, fitted.size) == (P.SUCCEEDED, None, "Standard_D2s_v3")
    assert provision_compute(store, "cpu-2", "LOCAL", capacity=LAPTOP).state is P.SUCCEEDED


def test_errored_compute_on_this_machine(store: SqlAlchemyStore) -> None:
    here = MachineCapacity.detect()
    if here.gpus >= 2 and here.cores >= 12:
        pytest.skip("this machine can host Standard_NC12")
    failed = provision_compute(store, "nc12", "standard_nc12")
    assert failed.state is P.FAILED and failed.size == "Standard_NC12" and failed.error
    assert ("GPU" in failed.error) == (here.gpus < 2)
    with pytest.raises(ComputeExistsError, match="state Failed"):
        provision_compute(store, "nc12", "local")
    delete_compute(store, "nc12")
    assert provision_compute(store, "nc12", "local").state is P.SUCCEEDED


def test_provisioning_goes_through_creating(store: SqlAlchemyStore) -> None:
    seen: list[Compute] = []

    def spy(compute: Compute, size: ComputeSize) -> str | None:
        seen.append(store.get_compute(compute.name))
        return None

    done = provision_compute(store, "spied", "Standard_NC24", fit_check=spy, min_nodes=0, max_nodes=1)
    assert [c.state for c in seen] == [P.CREATING] and done.state is P.SUCCEEDED


def test_fit_check_errors_become_the_reason(store: SqlAlchemyStore) -> None:
    def unreachable(compute: Compute, size: ComputeSize) -> str | None:
        raise BackendUnavailableError("Ray cluster at ray://10.0.0.1:10001 is not reachable.")

    failed = provision_compute(store, "ray-1", "Standard_NC12", fit_check=unreachable)
    assert failed.state is P.FAILED and "not reachable" in (failed.error or "")

    def broken(compute: Compute, size: ComputeSize) -> str | None:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError, match="bug"):
        provision_compute(store, "ray-2", "Standard_NC12", fit_check=broken)
    assert store.get_compute("ray-2").state is P.FAILED  # never left in Creating
    assert "bug" in (store.get_compute("ray-2").error or "")


def test_bad_requests_create_nothing(store: SqlAlchemyStore) -> None:
    cases: list[tuple[dict[str, object], type[Exception]]] = [
        ({"name": "g"}, InvalidNameError),
        ({"name": "a" * 17}, InvalidNameError),
        ({"size": "Standard_NC13"}, NotFoundError),
        ({"backend": "ray"}, InvalidParameterError),
        ({"backend": "quantum"}, InvalidParameterError),
        ({"max_nodes": 4}, InvalidParameterError),
        ({"min_nodes": 2, "max_nodes": 1}, InvalidParameterError),
    ]
    for overrides, error in cases:
        arguments: dict[str, object] = {"name": "ok-name", "size": "Standard_D2s_v3", **overrides}
        with pytest.raises(error):
            provision_compute(store, capacity=LAPTOP, **arguments)  # type: ignore[arg-type]
    assert store.list_computes() == []
    with pytest.raises(InvalidParameterError) as info:
        get_backend_rules("ray")
    assert 'pip install "modelbuilder[ray]"' in (info.value.hint or "")


def test_a_registered_backend_brings_its_own_rules(store: SqlAlchemyStore) -> None:
    torn_down: list[str] = []

    def cluster_fit(compute: Compute, size: ComputeSize) -> str | None:
        return None if size.gpus <= 8 else f"needs {size.gpus} GPUs, the cluster has 8"

    def teardown(compute: Compute) -> None:
        if compute.name == "stuck":
            raise OSError("cluster refused")
        torn_down.append(compute.name)

    register_backend(BackendRules("fake-ray", cluster_fit, max_nodes=None, teardown=teardown))
    try:
        scaled = provision_compute(
            store, "cluster", "Standard_NC24", backend="fake-ray", min_nodes=1, max_nodes=8
        )
        assert scaled.state is P.SUCCEEDED and (scaled.min_nodes, scaled.max_nodes) == (1, 8)
        with pytest.raises(InvalidParameterError, match="this machine"):
            provision_compute(store, "bad-local", "local", backend="fake-ray")
        delete_compute(store, "cluster")
        assert torn_down == ["cluster"]
        provision_compute(store, "stuck", "Standard_D2s_v3", backend="fake-ray")
        with pytest.raises(ComputeError, match="cluster refused"):
            delete_compute(store, "stuck")
        stuck = store.get_compute("stuck")
        assert stuck.state is P.FAILED and "delete failed" in (stuck.error or "")
    finally:
        provisioning._BACKENDS.pop("fake-ray")


def test_local_compute_always_exists(store: SqlAlchemyStore) -> None:
    local = ensure_local_compute(store)
    assert (local.name, local.size, local.backend, local.state) == ("local", "local", "local", P.SUCCEEDED)
    assert ensure_local_compute(store) == local
    with pytest.raises(InvalidStateError, match="always exists"):
        delete_compute(store, "local")
    with pytest.raises(ComputeExistsError):
        provision_compute(store, "local", "Standard_D2s_v3", capacity=LAPTOP)
    with pytest.raises(ComputeNotFoundError):
        delete_compute(store, "missing")
