"""Artifact stores: the files of each run (models, evaluation, logs), written atomically, read path-safely.

``ArtifactStore`` is the interface (MLflow's ``ArtifactRepository``); ``LocalArtifactStore`` keeps each
run's files under ``<root>/<run_id>/``. A file appears under its final name complete or not at all (temp
file, fsync, rename), and its sha256 is computed while it is written, so the record a store keeps can be
checked later with ``verify``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from .. import hints
from ..entities import Artifact
from ..errors import ArtifactNotFoundError, InvalidParameterError
from ..fileio import atomic_open, sha256_file
from .paths import artifact_parts, check_artifact_name, check_run_id

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


class ArtifactStore(ABC):
    """Files of runs, by run id and relative name."""

    @abstractmethod
    def put_file(self, run_id: str, src: str | os.PathLike[str], name: str | None = None) -> Artifact:
        """Copy ``src`` in as ``name`` (default: its file name), atomically; return its record.

        Raises:
            InvalidParameterError: the run id or name is unsafe.
            FileNotFoundError: ``src`` does not exist.
        """

    @abstractmethod
    def put_bytes(self, run_id: str, data: bytes, name: str) -> Artifact:
        """Write ``data`` as ``name``, atomically; return its record.

        Raises:
            InvalidParameterError: the run id or name is unsafe.
        """

    @abstractmethod
    def open(self, run_id: str, name: str) -> BinaryIO:
        """Open an artifact for reading (binary).

        Raises:
            InvalidParameterError: the run id or name is unsafe.
            ArtifactNotFoundError: there is no such file in the run's folder.
        """

    def read(self, run_id: str, name: str) -> bytes:
        """The content of an artifact (see ``open``)."""
        with self.open(run_id, name) as handle:
            return handle.read()

    @abstractmethod
    def list_files(self, run_id: str) -> list[str]:
        """Relative names of the run's finished files, sorted (none for an unknown run)."""

    @abstractmethod
    def describe(self, run_id: str, name: str) -> Artifact:
        """Size and sha256 of an artifact as it is now (see ``open`` for errors)."""

    @abstractmethod
    def delete_run(self, run_id: str) -> bool:
        """Delete all files of a run; False when it had none."""

    def find_mismatches(self, run_id: str, artifacts: Iterable[Artifact]) -> list[str]:
        """Names of recorded artifacts that are missing or whose size or sha256 changed."""
        bad = []
        for artifact in artifacts:
            try:
                actual = self.describe(run_id, artifact.path)
            except (ArtifactNotFoundError, InvalidParameterError):
                bad.append(artifact.path)
                continue
            if (actual.size, actual.sha256) != (artifact.size, artifact.sha256):
                bad.append(artifact.path)
        return bad

    def verify(self, run_id: str, artifacts: Iterable[Artifact]) -> bool:
        """True when every recorded artifact exists with its recorded size and sha256."""
        return not self.find_mismatches(run_id, artifacts)

    def download(
        self, run_id: str, destination: str | os.PathLike[str], names: Iterable[str] | None = None
    ) -> list[Path]:
        """Copy artifacts (all by default) to ``destination/<name>``, atomically each; return the paths.

        Raises:
            InvalidParameterError: a name is unsafe.
            ArtifactNotFoundError: a name is not an artifact of the run.
        """
        written = []
        for name in self.list_files(run_id) if names is None else names:
            target = Path(destination).joinpath(*artifact_parts(name))
            with self.open(run_id, name) as source, atomic_open(target, "wb") as handle:
                shutil.copyfileobj(source, handle, _CHUNK)
            written.append(target)
        return written


class LocalArtifactStore(ArtifactStore):
    """Artifacts as files under ``root/<run_id>/``.

    Args:
        root: the workspace's artifact root (created on first write).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().absolute()

    def __repr__(self) -> str:
        return f"LocalArtifactStore({str(self.root)!r})"

    def run_dir(self, run_id: str) -> Path:
        """The folder of a run's files (it may not exist yet).

        Raises:
            InvalidParameterError: the run id cannot name a folder.
        """
        return self.root / check_run_id(run_id)

    def _target(self, run_id: str, name: str) -> Path:
        """Where ``name`` is written, after checking that no existing symlink leads out of the run folder."""
        run_dir = self.run_dir(run_id)
        target = run_dir.joinpath(*artifact_parts(name))
        if run_dir.is_symlink():
            raise self._escape(run_id, name, run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        real_run_dir = run_dir.resolve()
        existing = target.parent
        while not existing.exists() and not existing.is_symlink():
            existing = existing.parent
        # Check before creating folders, so a symlinked folder cannot make us create folders outside.
        if not existing.resolve().is_relative_to(real_run_dir):
            raise self._escape(run_id, name, run_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    @staticmethod
    def _escape(run_id: str, name: str, run_dir: Path) -> InvalidParameterError:
        return InvalidParameterError(
            f"The artifact name {name!r} of run '{run_id}' leads outside the run's folder through a "
            "symbolic link.",
            hint=f"Remove symbolic links from {run_dir}.",
        )

    def resolve(self, run_id: str, name: str) -> Path:
        """The real path of an existing artifact file, guaranteed inside the run's folder.

        Raises:
            InvalidParameterError: the run id or name is unsafe.
            ArtifactNotFoundError: no such file, or a symlink that leads outside the run's folder.
        """
        run_dir = self.run_dir(run_id)
        candidate = run_dir.joinpath(*artifact_parts(name))
        missing = ArtifactNotFoundError(
            f"Run '{run_id}' has no artifact '{name}'.",
            hint=f"List the run's artifacts with: {hints.command('run', 'show', run_id)}",
        )
        try:
            real = candidate.resolve(strict=True)
            real_run_dir = run_dir.resolve(strict=True)
        except (FileNotFoundError, NotADirectoryError, RuntimeError):  # RuntimeError: symlink loop
            raise missing from None
        if real_run_dir.parent != self.root.resolve() or not real.is_relative_to(real_run_dir):
            logger.warning("Refused artifact %r of run %s: it resolves outside the run folder", name, run_id)
            raise ArtifactNotFoundError(
                f"Run '{run_id}' has no artifact '{name}' (the path leads outside the run's folder).",
                hint="Artifacts are files inside the run's folder; symbolic links out of it are refused.",
            )
        if not real.is_file():
            raise missing
        return real

    def put_file(self, run_id: str, src: str | os.PathLike[str], name: str | None = None) -> Artifact:
        source = Path(src)
        name = check_artifact_name(source.name if name is None else name)
        target = self._target(run_id, name)
        digest = hashlib.sha256()
        size = 0
        with open(source, "rb") as reader, atomic_open(target, "wb") as writer:
            while block := reader.read(_CHUNK):
                digest.update(block)
                writer.write(block)
                size += len(block)
        return Artifact(name, size, digest.hexdigest())

    def put_bytes(self, run_id: str, data: bytes, name: str) -> Artifact:
        target = self._target(run_id, check_artifact_name(name))
        with atomic_open(target, "wb") as writer:
            writer.write(data)
        return Artifact(name, len(data), hashlib.sha256(data).hexdigest())

    def open(self, run_id: str, name: str) -> BinaryIO:
        real = self.resolve(run_id, name)
        # O_NOFOLLOW: refuse a symlink swapped in after resolve().
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        return os.fdopen(fd, "rb")

    def describe(self, run_id: str, name: str) -> Artifact:
        real = self.resolve(run_id, name)
        return Artifact(name, real.stat().st_size, sha256_file(real))

    def list_files(self, run_id: str) -> list[str]:
        run_dir = self.run_dir(run_id)
        if not run_dir.is_dir() or run_dir.is_symlink():
            return []
        names = []
        for folder, dirs, files in os.walk(run_dir):
            dirs[:] = [d for d in dirs if not (Path(folder) / d).is_symlink()]
            for file in files:
                path = Path(folder) / file
                if path.is_symlink() or (file.startswith(".") and file.endswith(".tmp")):
                    continue  # temp files of writes in progress, and links we never create
                names.append(path.relative_to(run_dir).as_posix())
        return sorted(names)

    def delete_run(self, run_id: str) -> bool:
        run_dir = self.run_dir(run_id)
        if run_dir.is_symlink():
            run_dir.unlink()
            return True
        if not run_dir.exists():
            return False
        shutil.rmtree(run_dir)
        return True
