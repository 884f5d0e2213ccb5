"""Provisioning: local fit checks, GPU detection, and the errored-compute scenario end to end."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modelbuilder.compute import ComputeSpec, Fit, LocalBackend, provisioning, register_backend
from modelbuilder.compute.backend import unregister_backend
from modelbuilder.compute.provisioning import (
    MachineCapacity,
    check_local_fit,
    delete_compute,
    ensure_local_compute,
    provision_compute,
)
from modelbuilder.compute.sizes import get_size
from modelbuilder.compute.spec import is_loopback_address
from modelbuilder.entities import Compute, ProvisioningState
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
    opened = SqlAlchemyStore(sqlite_file_url(tmp_path / "ws" / "workspace.db"), workspace="ws1")
    yield opened
    opened.close()


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


def _provision(
    store: SqlAlchemyStore, name: str, size: str, capacity: MachineCapacity | None = LAPTOP, **options: object
) -> Compute:
    spec = ComputeSpec.create(name, size, **options)  # type: ignore[arg-type]
    return provision_compute(store, spec, backend=LocalBackend(capacity=capacity))


def test_errored_compute_end_to_end(store: SqlAlchemyStore) -> None:
    failed = _provision(store, "gpu-1", "Standard_NC12")
    assert failed.state is P.FAILED and failed.error and "needs 2 GPUs, this machine has 0" in failed.error
    assert store.get_compute("gpu-1") == failed  # kept, with its error

    with pytest.raises(ComputeExistsError) as info:
        _provision(store, "gpu-1", "Standard_D2s_v3")
    assert "state Failed" in str(info.value) and "needs 2 GPUs, this machine has 0" in str(info.value)
    hint = info.value.hint or ""
    assert "Create it with another name" in hint and "modelbuilder compute delete gpu-1" in hint

    assert delete_compute(store, "gpu-1") == failed
    assert store.find_compute("gpu-1") is None

    fitted = _provision(store, "gpu-1", "Standard_D2s_v3")
    assert (fitted.state, fitted.error, fitted.size) == (P.SUCCEEDED, None, "Standard_D2s_v3")
    assert _provision(store, "cpu-2", "LOCAL").state is P.SUCCEEDED


def test_errored_compute_on_this_machine(store: SqlAlchemyStore) -> None:
    here = MachineCapacity.detect()
    if here.gpus >= 2 and here.cores >= 12:
        pytest.skip("this machine can host Standard_NC12")
    failed = provision_compute(store, ComputeSpec.create("nc12", "standard_nc12"))  # the registered backend
    assert failed.state is P.FAILED and failed.size == "Standard_NC12" and failed.error
    assert ("GPU" in failed.error) == (here.gpus < 2)
    with pytest.raises(ComputeExistsError, match="state Failed"):
        provision_compute(store, ComputeSpec.create("nc12", "local"))
    delete_compute(store, "nc12")
    assert provision_compute(store, ComputeSpec.create("nc12", "local")).state is P.SUCCEEDED


class ScriptedBackend(LocalBackend):
    """A local backend whose check is a test's function."""

    name = "scripted"
    max_nodes = None
    accepts_local_size = False

    def __init__(
        self, check: Callable[[ComputeSpec], Fit], teardown: Callable[[ComputeSpec], None] | None = None
    ) -> None:
        super().__init__()
        self._check, self._teardown = check, teardown

    def validate(self, spec: ComputeSpec) -> None:
        pass  # an address is optional here: the generic address rules are what is tested

    def check(self, spec: ComputeSpec) -> Fit:
        return self._check(spec)

    def teardown(self, spec: ComputeSpec) -> None:
        if self._teardown is not None:
            self._teardown(spec)


@pytest.fixture
def scripted() -> Iterator[Callable[..., None]]:
    """Registers the ``scripted`` backend with the given check and teardown."""

    def register(
        check: Callable[[ComputeSpec], Fit], teardown: Callable[[ComputeSpec], None] | None = None
    ) -> None:
        register_backend("scripted", lambda: ScriptedBackend(check, teardown))

    yield register
    unregister_backend("scripted")


def test_provisioning_goes_through_creating(store: SqlAlchemyStore, scripted: Callable[..., None]) -> None:
    seen: list[Compute] = []

    def spy(spec: ComputeSpec) -> Fit:
        seen.append(store.get_compute(spec.name))
        return Fit.ok()

    scripted(spy)
    done = provision_compute(store, ComputeSpec.create("spied", "Standard_NC24", backend="scripted"))
    assert [c.state for c in seen] == [P.CREATING] and done.state is P.SUCCEEDED


def test_fit_check_errors_become_the_reason(store: SqlAlchemyStore, scripted: Callable[..., None]) -> None:
    def unreachable(spec: ComputeSpec) -> Fit:
        raise BackendUnavailableError("Ray cluster at http://10.0.0.1:8265 is not reachable.")

    scripted(unreachable)
    failed = provision_compute(store, ComputeSpec.create("ray-1", "Standard_NC12", backend="scripted"))
    assert failed.state is P.FAILED and "not reachable" in (failed.error or "")

    def broken(spec: ComputeSpec) -> Fit:
        raise RuntimeError("bug")

    scripted(broken)
    with pytest.raises(RuntimeError, match="bug"):
        provision_compute(store, ComputeSpec.create("ray-2", "Standard_NC12", backend="scripted"))
    assert store.get_compute("ray-2").state is P.FAILED  # never left in Creating
    assert "bug" in (store.get_compute("ray-2").error or "")


def test_bad_specs_are_refused_before_anything_is_created(store: SqlAlchemyStore) -> None:
    cases: list[tuple[dict[str, object], type[Exception], str]] = [
        ({"name": "g"}, InvalidNameError, "2 to 16"),
        ({"name": "a" * 17}, InvalidNameError, "2 to 16"),
        ({"size": "Standard_NC13"}, NotFoundError, "not in the catalog"),
        ({"backend": "quantum"}, InvalidParameterError, "must be one of"),
        ({"max_nodes": 4}, InvalidParameterError, "at most 1 on the local backend"),
        ({"min_nodes": 2, "max_nodes": 1}, InvalidParameterError, "at most max_nodes"),
        ({"min_nodes": -1}, InvalidParameterError, "at least 0"),
        ({"idle_seconds_before_scaledown": 1.5}, InvalidParameterError, "integer"),
        ({"address": "http://127.0.0.1:8265"}, InvalidParameterError, "has no address"),
        ({"token_ref": "s3cr3t-t0ken!"}, InvalidParameterError, "environment variable"),
    ]
    for overrides, error, text in cases:
        arguments: dict[str, object] = {"name": "ok-name", "size": "Standard_D2s_v3", **overrides}
        with pytest.raises(error, match=text) as info:
            ComputeSpec.create(**arguments)  # type: ignore[arg-type]
        assert info.value.hint  # type: ignore[attr-defined]
    assert store.list_computes() == []


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1:8265", "HOST:PORT"),
        ("ftp://host:21", "HOST:PORT"),
        ("http://", "HOST:PORT"),
        ("http://host:99999", "out of range"),
        ("http://user:secret@host:8265", "credentials"),
        ("http://host:8265/?token=abc", "credentials"),
        ("http://" + "a" * 600, "longer than"),
    ],
)
def test_address_rules(address: str, problem: str, scripted: Callable[..., None]) -> None:
    scripted(lambda spec: Fit.ok())
    with pytest.raises(InvalidParameterError, match=problem) as info:
        ComputeSpec.create("ray-1", "Standard_NC12", backend="scripted", address=address)
    assert "secret" not in str(info.value) and "abc" not in str(info.value)  # never print a credential


def test_a_spec_is_made_once_and_rebuilt_from_the_store(
    store: SqlAlchemyStore, scripted: Callable[..., None]
) -> None:
    scripted(lambda spec: Fit.ok())
    spec = ComputeSpec.create(
        "cluster",
        "standard_nc24",
        backend="scripted",
        address=" http://127.0.0.1:8265 ",
        min_nodes=1,
        max_nodes=8,
        idle_seconds_before_scaledown=60,
    )
    assert (spec.size.name, spec.address, spec.size.gpus) == ("Standard_NC24", "http://127.0.0.1:8265", 4)
    created = provision_compute(store, spec)
    assert ComputeSpec.from_compute(created) == spec
    assert spec.describe() == "cluster (Standard_NC24 on scripted at http://127.0.0.1:8265)"
    with pytest.raises(InvalidParameterError, match="this machine"):
        ComputeSpec.create("bad-local", "local", backend="scripted")


def _store_text(url: str) -> str:
    """Every row of every table of a store, as text (what "in the store" means, on any database)."""
    import sqlalchemy as sa

    from modelbuilder.store.engine import create_store_engine

    engine = create_store_engine(url)
    try:
        with engine.connect() as conn:
            tables = sa.inspect(conn).get_table_names()
            return "\n".join(
                repr(row) for table in tables for row in conn.execute(sa.text(f"SELECT * FROM {table}"))
            )
    finally:
        engine.dispose()


def test_a_token_reference_is_stored_and_restored_but_never_the_token(
    store_url: str | None, tmp_path: Path, scripted: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "tok-8f3a-never-stored"
    monkeypatch.setenv("MB_TEST_CLUSTER_TOKEN", secret)
    scripted(lambda spec: Fit.ok())
    url = store_url or sqlite_file_url(tmp_path / "ws" / "workspace.db")
    spec = ComputeSpec.create(
        "tokened", "Standard_F2s_v2", backend="scripted", address="http://10.0.0.5:8265",
        token_ref="MB_TEST_CLUSTER_TOKEN",
    )  # fmt: skip
    with SqlAlchemyStore(url, workspace="ws1") as store:
        created = provision_compute(store, spec)
        assert created.state is P.SUCCEEDED and created.token_ref == "MB_TEST_CLUSTER_TOKEN"
    with SqlAlchemyStore(url, workspace="ws1") as reopened:  # as another process sees it
        restored = ComputeSpec.from_compute(reopened.get_compute("tokened"))
    assert restored == spec and restored.token_ref == "MB_TEST_CLUSTER_TOKEN"
    stored = _store_text(url)
    assert "MB_TEST_CLUSTER_TOKEN" in stored and secret not in stored
    if store_url is None:  # the SQLite file itself, write-ahead log included
        files = (tmp_path / "ws").glob("workspace.db*")
        assert not any(secret.encode() in path.read_bytes() for path in files)


def test_a_token_reference_longer_than_its_column_is_refused() -> None:
    with pytest.raises(InvalidParameterError, match="1-64 letters") as info:
        ComputeSpec.create("long-ref", "local", token_ref="T" * 65)
    assert "--token-env" in (info.value.hint or "")


def test_loopback_addresses() -> None:
    assert all(map(is_loopback_address, ["http://127.0.0.1:8265", "http://localhost:1", "http://[::1]:8265"]))
    assert not any(map(is_loopback_address, ["http://10.0.0.1:8265", "http://ray.example.com:80", None]))


def test_a_registered_backend_tears_its_computes_down(
    store: SqlAlchemyStore, scripted: Callable[..., None]
) -> None:
    torn_down: list[str] = []

    def teardown(spec: ComputeSpec) -> None:
        if spec.name == "stuck":
            raise OSError("cluster refused")
        torn_down.append(spec.name)

    scripted(lambda spec: Fit.ok() if spec.size.gpus <= 8 else Fit.unfit("too big"), teardown)
    provision_compute(store, ComputeSpec.create("cluster", "Standard_NC24", backend="scripted", max_nodes=8))
    delete_compute(store, "cluster")
    assert torn_down == ["cluster"]
    provision_compute(store, ComputeSpec.create("stuck", "Standard_D2s_v3", backend="scripted"))
    with pytest.raises(ComputeError, match="cluster refused"):
        delete_compute(store, "stuck")
    stuck = store.get_compute("stuck")
    assert stuck.state is P.FAILED and "delete failed" in (stuck.error or "")


def test_a_compute_whose_backend_is_gone_can_still_be_deleted(store: SqlAlchemyStore) -> None:
    store.create_compute("orphan", size="Standard_D2s_v3", backend="uninstalled", state=P.FAILED, error="x")
    assert delete_compute(store, "orphan").name == "orphan"
    assert store.find_compute("orphan") is None


def test_local_compute_always_exists(store: SqlAlchemyStore) -> None:
    local = ensure_local_compute(store)
    assert (local.name, local.size, local.backend, local.state) == ("local", "local", "local", P.SUCCEEDED)
    assert ensure_local_compute(store) == local
    with pytest.raises(InvalidStateError, match="always exists"):
        delete_compute(store, "local")
    with pytest.raises(ComputeExistsError):
        _provision(store, "local", "Standard_D2s_v3")
    with pytest.raises(ComputeNotFoundError):
        delete_compute(store, "missing")
