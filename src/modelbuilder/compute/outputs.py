"""A run's outputs as artifacts: recording them (worker side) and materialising them again (caller side).

The trainer writes its outputs into its work dir; ``OutputRecorder`` copies each finished one into the
artifact store (``put_file``: temp file, fsync, rename, sha256 while copying) and only then records it in
the metadata store, so a killed worker never leaves a half-written artifact on record. Folders
(``<Name>.Model/``, ``<Name>.ConsoleApp/``, ``<Name>.WebApi/``) are stored as one zip each
(``<Name>.Model.zip``, with the folder as its top-level entry), which is also what the portal offers
for download.

Two small JSON artifacts describe the outputs (both versioned):

- ``outputs.json``: every output name with its kind (``file`` / ``folder``) and artifact name, so
  ``materialize_outputs`` can recreate the trainer's layout (folders unzipped) in any folder;
- ``result.json``: the ``TrainingResult`` without local paths, to rebuild it in the caller's process.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..artifacts.local import ArtifactStore
from ..artifacts.paths import check_artifact_name
from ..entities import Artifact
from ..errors import ArtifactNotFoundError, InvalidParameterError
from ..fileio import atomic_open
from ..store.base import MetadataStore
from ..training.config import TrainingResult, TrialSummary

logger = logging.getLogger(__name__)

OUTPUTS_FORMAT_VERSION = 1
RESULT_FORMAT_VERSION = 1
OUTPUTS_NAME = "outputs.json"
RESULT_NAME = "result.json"
LOG_NAME = "logs/run.log"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)

_Signature = tuple[tuple[str, int, int], ...]


def _signature(path: Path) -> _Signature:
    """What a file or folder looks like now (names, sizes, mtimes): unchanged outputs are not re-copied."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return tuple((p.relative_to(path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    stat = path.stat()
    return (("", stat.st_size, stat.st_mtime_ns),)


def zip_folder(folder: Path, target: Path) -> Path:
    """Zip ``folder`` into ``target`` deterministically, entries under ``<folder name>/``, atomically."""
    with atomic_open(target, "wb") as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            entry = zipfile.ZipInfo(f"{folder.name}/{path.relative_to(folder).as_posix()}", _ZIP_DATE)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = (0o644 if not os.access(path, os.X_OK) else 0o755) << 16
            with open(path, "rb") as source, archive.open(entry, "w") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
    return target


class OutputRecorder:
    """Copies a run's finished outputs into the artifact store and records them (worker side).

    Args:
        store: the workspace's metadata store.
        artifacts: the workspace's artifact store.
        run_id: the run.
        staging_dir: where folder zips are built before they are copied in.
    """

    def __init__(
        self, store: MetadataStore, artifacts: ArtifactStore, run_id: str, staging_dir: Path
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.run_id = run_id
        self.staging_dir = staging_dir
        self.outputs: dict[str, dict[str, str]] = {}
        self._signatures: dict[str, _Signature] = {}

    def record(self, path: Path, name: str) -> Artifact | None:
        """Record output ``name`` from ``path`` (a file, or a folder stored as ``<name>.zip``).

        Returns the recorded artifact, or None when the same content was recorded already.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            InvalidParameterError: the name is not a safe artifact name.
            InvalidStateError: the run is terminal.
        """
        path = Path(path)
        check_artifact_name(name)
        if not path.exists():
            raise FileNotFoundError(f"Output '{name}' of run {self.run_id} is missing: {path}")
        signature = _signature(path)
        if self._signatures.get(name) == signature:
            return None
        if path.is_dir():
            artifact_name = f"{name}.zip"
            source = zip_folder(path, self.staging_dir / artifact_name)
            kind = "folder"
        else:
            artifact_name, source, kind = name, path, "file"
        artifact = self.artifacts.put_file(self.run_id, source, artifact_name)
        recorded = self.store.log_artifact(self.run_id, artifact.path, artifact.size, artifact.sha256)
        self._signatures[name] = signature
        self.outputs[name] = {"kind": kind, "artifact": artifact_name}
        logger.info("Recorded %s (%d bytes) for run %s", artifact_name, artifact.size, self.run_id)
        return recorded

    def record_bytes(self, name: str, data: bytes) -> Artifact:
        """Write and record a small artifact of the worker's own (manifest, result, log)."""
        artifact = self.artifacts.put_bytes(self.run_id, data, name)
        return self.store.log_artifact(self.run_id, artifact.path, artifact.size, artifact.sha256)

    def record_manifest(self) -> Artifact:
        """Record ``outputs.json`` for the outputs recorded so far."""
        body = {"format_version": OUTPUTS_FORMAT_VERSION, "outputs": dict(sorted(self.outputs.items()))}
        return self.record_bytes(OUTPUTS_NAME, json.dumps(body, indent=2).encode("utf-8"))


def result_to_dict(result: TrainingResult) -> dict[str, Any]:
    """A TrainingResult as JSON-ready data, without the worker's local paths."""
    return {
        "format_version": RESULT_FORMAT_VERSION,
        "accuracy": result.accuracy,
        "macro_accuracy": result.macro_accuracy,
        "backbone": result.backbone,
        "strategy": result.strategy,
        "labels": list(result.labels),
        "seconds": result.seconds,
        "files": sorted(result.files),
        "trials": [asdict(trial) for trial in result.trials],
        "skipped_images": list(result.skipped_images),
        "evaluation": result.evaluation,
        "canceled": result.canceled,
    }


def result_from_dict(data: dict[str, Any], output_dir: Path) -> TrainingResult:
    """Rebuild a TrainingResult whose files lie in ``output_dir``.

    Raises:
        InvalidParameterError: the data has another format version.
    """
    if data.get("format_version") != RESULT_FORMAT_VERSION:
        raise InvalidParameterError(
            f"The run result has format version {data.get('format_version')!r}; this modelbuilder "
            f"reads version {RESULT_FORMAT_VERSION}.",
            hint="Read it with the modelbuilder version that trained the run.",
        )
    return TrainingResult(
        accuracy=float(data["accuracy"]),
        macro_accuracy=float(data["macro_accuracy"]),
        backbone=str(data["backbone"]),
        strategy=str(data["strategy"]),
        labels=list(data["labels"]),
        seconds=float(data["seconds"]),
        output_dir=output_dir,
        files={name: output_dir / name for name in data["files"]},
        trials=[TrialSummary(**trial) for trial in data["trials"]],
        skipped_images=list(data["skipped_images"]),
        evaluation=dict(data["evaluation"]),
        canceled=bool(data["canceled"]),
    )


def read_outputs_manifest(artifacts: ArtifactStore, run_id: str) -> dict[str, dict[str, str]]:
    """Output name -> {kind, artifact} from ``outputs.json`` ({} when the run recorded none)."""
    try:
        body = json.loads(artifacts.read(run_id, OUTPUTS_NAME))
    except ArtifactNotFoundError:
        return {}
    if body.get("format_version") != OUTPUTS_FORMAT_VERSION:
        raise InvalidParameterError(
            f"outputs.json of run '{run_id}' has format version {body.get('format_version')!r}; this "
            f"modelbuilder reads version {OUTPUTS_FORMAT_VERSION}.",
            hint="Download it with the modelbuilder version that trained the run.",
        )
    return dict(body["outputs"])


def _extract_folder_zip(archive_path: Path, destination: Path, name: str) -> Path:
    """Unzip a folder output into ``destination/<name>``, replacing an older copy, refusing unsafe entries."""
    final = destination / name
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=destination))
    try:
        with zipfile.ZipFile(archive_path) as archive:
            for entry in archive.infolist():
                check_artifact_name(entry.filename.rstrip("/"))
                if not entry.filename.startswith(f"{name}/"):
                    raise InvalidParameterError(
                        f"The zip of output '{name}' holds {entry.filename!r}, outside '{name}/'.",
                        hint="The artifact was not written by modelbuilder; download it as it is.",
                    )
            archive.extractall(staging)
            for entry in archive.infolist():
                mode = (entry.external_attr >> 16) & 0o777
                if mode and not entry.is_dir():
                    os.chmod(staging / entry.filename, mode)
        if final.exists():
            shutil.rmtree(final) if final.is_dir() else final.unlink()
        os.replace(staging / name, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def materialize_outputs(artifacts: ArtifactStore, run_id: str, destination: Path) -> dict[str, Path]:
    """Recreate a run's outputs in ``destination`` as the trainer wrote them (folders unzipped).

    Returns output name -> path. Runs without ``outputs.json`` get every artifact copied as it is.

    Raises:
        ArtifactNotFoundError: an artifact named in outputs.json is missing.
        InvalidParameterError: outputs.json is of another version, or a zip holds unsafe entries.
    """
    destination.mkdir(parents=True, exist_ok=True)
    manifest = read_outputs_manifest(artifacts, run_id)
    if not manifest:
        names = artifacts.list_files(run_id)
        return dict(zip(names, artifacts.download(run_id, destination, names), strict=True))
    found: dict[str, Path] = {}
    for name, entry in sorted(manifest.items()):
        if entry["kind"] == "folder":
            with tempfile.TemporaryDirectory(dir=destination, prefix=".mb-download-") as scratch:
                (archive,) = artifacts.download(run_id, scratch, [entry["artifact"]])
                found[name] = _extract_folder_zip(archive, destination, name)
        else:
            (found[name],) = artifacts.download(run_id, destination, [entry["artifact"]])
    return found
