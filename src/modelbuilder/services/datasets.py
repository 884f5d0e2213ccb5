"""Uploaded datasets: a zip, or the files of a dropped folder, stored as a content-addressed folder of the
workspace (``<workspace folder>/datasets/<id>/``, one sub-folder per label).

The id is a hash over every stored file's relative path and content, so the same upload twice is the same
dataset (stored once). Uploads are untrusted: a zip member whose path is absolute or climbs out (``..``,
zip-slip), a link member, too many files, too many bytes in all, or a member that inflates far more than
images do (a zip bomb) refuses the whole upload before anything is kept. Sizes are counted as bytes are
actually inflated, never taken from the zip's headers, which a crafted zip can fake.

Nothing here decodes images: the data checks (``data.scan_dataset``) run on the stored folder, as on any
folder, before training starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO

from .. import hints
from ..data.detect import is_hidden
from ..errors import DatasetError, InvalidParameterError, NotFoundError
from .workspaces import WorkspaceSession

DATASETS_FOLDER = "datasets"
#: Each dataset's manifest lies beside its folder (``<id>.json``), so the data folder holds only data.
MANIFEST_SUFFIX = ".json"
MANIFEST_VERSION = 1
DATASET_ID_LENGTH = 16
_ID_PATTERN = re.compile(r"[0-9a-f]{16}")
_CHUNK = 1 << 16
#: Folders that zip tools add and that are never data (macOS resource forks).
_JUNK_FOLDERS = frozenset({"__MACOSX"})


class UploadRefusedError(InvalidParameterError):
    """An upload breaks a limit or is unsafe (zip bomb, zip-slip path, link member, too many files)."""


class DatasetNotFoundError(NotFoundError):
    """No uploaded dataset has this id in the workspace."""


@dataclass(frozen=True)
class UploadLimits:
    """What one upload may hold.

    Attributes:
        max_upload_bytes: the uploaded bytes (the zip, or all dropped files together).
        max_files: files in the dataset.
        max_total_bytes: bytes of all files once extracted.
        max_file_bytes: bytes of one extracted file.
        max_ratio: how much one zip member may inflate (images barely compress: 100x is a bomb).
    """

    max_upload_bytes: int = 512 * 1024 * 1024
    max_files: int = 20_000
    max_total_bytes: int = 2 * 1024 * 1024 * 1024
    max_file_bytes: int = 50 * 1024 * 1024
    max_ratio: float = 100.0

    def describe(self) -> str:
        return (
            f"at most {self.max_upload_bytes // (1024 * 1024)} MB uploaded, {self.max_files} files, "
            f"{self.max_total_bytes // (1024 * 1024)} MB once extracted, "
            f"{self.max_file_bytes // (1024 * 1024)} MB per file"
        )


DEFAULT_LIMITS = UploadLimits()


@dataclass(frozen=True)
class StoredDataset:
    """An uploaded dataset of a workspace.

    Attributes:
        id: the content address (16 hex digits).
        path: its folder (one sub-folder per label).
        files: how many files it holds.
        total_bytes: their size in all.
        labels: the label folders.
        created: False when the same content was stored already.
        name: what the upload called the data (its top folder, else the zip's file name), as first
            stored; names the run's experiment and generated projects. None when unknown.
    """

    id: str
    path: Path
    files: int
    total_bytes: int
    labels: list[str]
    created: bool = True
    name: str | None = None


def _refuse(message: str, limits: UploadLimits) -> UploadRefusedError:
    return UploadRefusedError(
        message,
        hint=f"Upload a zip of a folder with one sub-folder per label ({limits.describe()}), or put the "
        f"data in a folder the portal may read ({hints.command('portal', data_root='DIR')}) and pick it "
        "there.",
    )


def safe_relative_path(name: str, limits: UploadLimits = DEFAULT_LIMITS) -> PurePosixPath:
    """The upload path ``name`` as a relative path that stays inside the dataset folder.

    Raises:
        UploadRefusedError: the path is absolute, has a drive, ``..``, a NUL, or a backslash.
    """
    if not name or "\x00" in name or "\\" in name:
        raise _refuse(f"The upload holds a file named {name!r}, which is not a safe relative path.", limits)
    path = PurePosixPath(name)
    if path.is_absolute() or re.match(r"^[A-Za-z]:", name) or any(part == ".." for part in path.parts):
        raise _refuse(
            f"The upload holds the path {name!r}, which leads out of the dataset folder (absolute or "
            "with '..'); nothing was stored.",
            limits,
        )
    parts = [part for part in path.parts if part not in ("", ".")]
    if not parts:
        raise _refuse(f"The upload holds a file named {name!r}, which is not a file path.", limits)
    return PurePosixPath(*parts)


def _kept(path: PurePosixPath) -> bool:
    """Hidden files and zip tools' junk are not data; they are left out (not refused)."""
    return not any(is_hidden(part) or part in _JUNK_FOLDERS for part in path.parts)


class _Staging:
    """A temporary folder beside the datasets, filled file by file under the limits."""

    def __init__(self, datasets: Path, limits: UploadLimits) -> None:
        datasets.mkdir(parents=True, exist_ok=True)
        self.limits = limits
        self.root = Path(tempfile.mkdtemp(prefix=".upload-", dir=datasets))
        self.files: dict[PurePosixPath, str] = {}
        self.total = 0

    def add(self, relative: PurePosixPath, source: IO[bytes], compressed: int | None = None) -> None:
        limits = self.limits
        if relative in self.files:
            raise _refuse(f"The upload holds '{relative}' twice.", limits)
        if len(self.files) >= limits.max_files:
            raise _refuse(f"The upload holds more than {limits.max_files} files.", limits)
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        written = 0
        with open(target, "xb") as out:
            while chunk := source.read(_CHUNK):
                written += len(chunk)
                self.total += len(chunk)
                if written > limits.max_file_bytes:
                    raise _refuse(
                        f"The file '{relative}' is larger than {limits.max_file_bytes // (1024 * 1024)} MB.",
                        limits,
                    )
                if self.total > limits.max_total_bytes:
                    raise _refuse(
                        f"The upload inflates to more than {limits.max_total_bytes // (1024 * 1024)} MB "
                        "(a zip bomb, or simply too much data).",
                        limits,
                    )
                inflated = compressed is not None and written > compressed * limits.max_ratio
                if inflated and written > 1024 * 1024:
                    raise _refuse(
                        f"The zip member '{relative}' inflates more than {limits.max_ratio:.0f} times its "
                        "compressed size: this is a zip bomb, not images.",
                        limits,
                    )
                digest.update(chunk)
                out.write(chunk)
        self.files[relative] = digest.hexdigest()

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def datasets_folder(session: WorkspaceSession) -> Path:
    return session.folder / DATASETS_FOLDER


def _manifest_path(session: WorkspaceSession, dataset_id: str) -> Path:
    return datasets_folder(session) / f"{dataset_id}{MANIFEST_SUFFIX}"


def content_id(files: dict[PurePosixPath, str]) -> str:
    """The dataset id: sha256 over the sorted (relative path, content sha256) pairs, 16 hex digits."""
    digest = hashlib.sha256(b"modelbuilder-upload-v1\n")
    for path, sha in sorted((str(p), s) for p, s in files.items()):
        digest.update(path.encode("utf-8", "surrogateescape") + b"\x00" + sha.encode("ascii") + b"\n")
    return digest.hexdigest()[:DATASET_ID_LENGTH]


def _strip_common_top(files: dict[PurePosixPath, str]) -> PurePosixPath | None:
    """The one folder every file is in, when the labels are below it (a zip of ``flowers/`` holds
    ``flowers/daisy/1.jpg``): it is dropped so the dataset's sub-folders are the labels."""
    tops = {path.parts[0] for path in files}
    if len(tops) != 1 or any(len(path.parts) < 3 for path in files):
        return None
    return PurePosixPath(tops.pop())


def _name_from(top: PurePosixPath | None, filename: str | None) -> str | None:
    if top is not None:
        return top.name
    if filename:
        stem = PurePosixPath(filename.replace("\\", "/")).name.rsplit(".", 1)[0]
        return stem or None
    return None


def _finish(session: WorkspaceSession, staging: _Staging, filename: str | None = None) -> StoredDataset:
    limits = staging.limits
    if not staging.files:
        raise _refuse("The upload holds no files (hidden files and __MACOSX folders are left out).", limits)
    top = _strip_common_top(staging.files)
    root = staging.root / top if top is not None else staging.root
    files = {p.relative_to(top) if top is not None else p: s for p, s in staging.files.items()}
    loose = sorted(str(p) for p in files if len(p.parts) < 2)
    if loose:
        raise DatasetError(
            f"The upload has files outside any label folder: {', '.join(loose[:5])}.",
            hint="Put the images in one sub-folder per label (daisy/1.jpg, tulip/2.jpg) and upload again.",
        )
    dataset_id = content_id(files)
    total = staging.total
    manifest = {
        "format_version": MANIFEST_VERSION,
        "id": dataset_id,
        "files": {str(p): s for p, s in sorted(files.items(), key=lambda kv: str(kv[0]))},
        "total_bytes": total,
        "name": _name_from(top, filename),
    }
    final = datasets_folder(session) / dataset_id
    created = True
    try:
        os.rename(root, final)  # atomic: a dataset folder is complete or absent
    except OSError:
        if not final.is_dir():
            raise
        created = False  # the same content was stored already (or concurrently)
    finally:
        staging.remove()
    manifest_path = _manifest_path(session, dataset_id)
    if not manifest_path.is_file():  # written last: a dataset without it is not listed
        temp = manifest_path.with_suffix(".tmp")
        temp.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        os.replace(temp, manifest_path)
    return get_dataset(session, dataset_id, created=created)


def store_zip(
    session: WorkspaceSession, upload: BinaryIO, limits: UploadLimits = DEFAULT_LIMITS,
    filename: str | None = None,
) -> StoredDataset:
    """Extract an uploaded zip into a content-addressed dataset of the workspace (``filename``: the
    zip's name on the user's machine, which names the data when the zip has no top folder).

    Raises:
        UploadRefusedError: not a zip, or unsafe or over a limit (nothing is kept).
        DatasetError: files outside any label folder.
    """
    upload.seek(0, os.SEEK_END)
    upload_bytes = upload.tell()
    upload.seek(0)
    if upload_bytes > limits.max_upload_bytes:
        raise _refuse(f"The upload has {upload_bytes} bytes; at most {limits.max_upload_bytes} are accepted.",
                      limits)
    try:
        archive = zipfile.ZipFile(upload)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _refuse(f"The upload is not a zip file ({exc}).", limits) from exc
    staging = _Staging(datasets_folder(session), limits)
    try:
        with archive:
            members = archive.infolist()
            if len(members) > limits.max_files * 2:
                raise _refuse(f"The zip lists {len(members)} entries; at most {limits.max_files} files fit.",
                              limits)
            for member in members:
                relative = safe_relative_path(member.filename, limits)
                mode = member.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise _refuse(f"The zip member '{member.filename}' is a link; links are refused.", limits)
                if member.is_dir() or not _kept(relative):
                    continue
                if member.flag_bits & 0x1:
                    raise _refuse(f"The zip member '{member.filename}' is encrypted.", limits)
                with archive.open(member) as source:
                    staging.add(relative, source, compressed=max(member.compress_size, 1))
                if staging.total > 1024 * 1024 and staging.total > upload_bytes * limits.max_ratio:
                    raise _refuse(
                        f"The zip inflates more than {limits.max_ratio:.0f} times its size: this is a zip "
                        "bomb, not images.",
                        limits,
                    )
        return _finish(session, staging, filename)
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError) as exc:
        staging.remove()
        raise _refuse(f"The zip cannot be read: {exc}.", limits) from exc
    except BaseException:
        staging.remove()
        raise


def store_files(
    session: WorkspaceSession, files: Iterable[tuple[str, BinaryIO]], limits: UploadLimits = DEFAULT_LIMITS
) -> StoredDataset:
    """Store the files of a dropped folder (relative path, content) as a content-addressed dataset.

    Raises:
        UploadRefusedError: an unsafe path, or over a limit (nothing is kept).
        DatasetError: files outside any label folder.
    """
    staging = _Staging(datasets_folder(session), limits)
    try:
        for name, source in files:
            relative = safe_relative_path(name, limits)
            if _kept(relative):
                staging.add(relative, source)
        return _finish(session, staging)
    except BaseException:
        staging.remove()
        raise


def check_dataset_id(dataset_id: str) -> str:
    """Raises: DatasetNotFoundError: not the form of a dataset id (so never a path)."""
    if not _ID_PATTERN.fullmatch(dataset_id):
        raise DatasetNotFoundError(
            f"'{dataset_id}' is not a dataset id (16 hex digits).",
            hint="Upload the data again; its id is in the answer.",
        )
    return dataset_id


def get_dataset(session: WorkspaceSession, dataset_id: str, *, created: bool = False) -> StoredDataset:
    """An uploaded dataset by id.

    Raises:
        DatasetNotFoundError: none has this id.
    """
    folder = datasets_folder(session) / check_dataset_id(dataset_id)
    try:
        manifest = json.loads(_manifest_path(session, dataset_id).read_text(encoding="utf-8"))
        if not folder.is_dir():
            raise OSError("the folder is gone")
    except (OSError, ValueError) as exc:
        raise DatasetNotFoundError(
            f"Workspace '{session.name}' has no uploaded dataset '{dataset_id}'.",
            hint="Upload the data again on the Data step of the portal's new-run page.",
        ) from exc
    files = manifest.get("files", {})
    labels = sorted({name.split("/", 1)[0] for name in files})
    name = manifest.get("name")
    return StoredDataset(dataset_id, folder, len(files), int(manifest.get("total_bytes", 0)), labels, created,
                         name if isinstance(name, str) else None)


def list_datasets(session: WorkspaceSession) -> Iterator[StoredDataset]:
    """The workspace's uploaded datasets, by id."""
    folder = datasets_folder(session)
    if not folder.is_dir():
        return
    for entry in sorted(folder.iterdir()):
        if _ID_PATTERN.fullmatch(entry.name) and _manifest_path(session, entry.name).is_file():
            yield get_dataset(session, entry.name)


__all__ = [
    "DEFAULT_LIMITS", "DatasetNotFoundError", "StoredDataset", "UploadLimits", "UploadRefusedError",
    "check_dataset_id", "content_id", "get_dataset", "list_datasets", "safe_relative_path", "store_files",
    "store_zip",
]
