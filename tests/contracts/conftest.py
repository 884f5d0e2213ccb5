"""Fixtures of the metadata store contract suite: one store per implementation, with a controllable clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modelbuilder.store import MetadataStore, SqlAlchemyStore, sqlite_file_url


class FakeClock:
    """Seconds since the epoch that only move when a test says so."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def _sqlite_file(tmp_path: Path, clock: FakeClock) -> MetadataStore:
    return SqlAlchemyStore(sqlite_file_url(tmp_path / "ws" / "workspace.db"), workspace="ws1", clock=clock)


def _sqlite_memory(tmp_path: Path, clock: FakeClock) -> MetadataStore:
    return SqlAlchemyStore("sqlite://", workspace="ws1", clock=clock)


#: Every implementation of MetadataStore that must pass the contract.
IMPLEMENTATIONS: dict[str, Callable[[Path, FakeClock], MetadataStore]] = {
    "sqlite-file": _sqlite_file,
    "sqlite-memory": _sqlite_memory,
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=[*sorted(IMPLEMENTATIONS), "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[MetadataStore]:
    if request.param == "postgresql":  # a new database on the session's server (tests/conftest.py)
        opened: MetadataStore = SqlAlchemyStore(
            request.getfixturevalue("postgres_url"), workspace="ws1", clock=clock
        )
    else:
        opened = IMPLEMENTATIONS[request.param](tmp_path, clock)
    yield opened
    opened.close()
