"""The folder picker's view of this machine: only the roots the user allowed (``portal --data-root DIR``).

A path the browser sends is relative to one root (named by its index). It is refused when it is absolute,
has a ``..`` part, a backslash or a NUL, and its real path (links followed) must still lie inside the real
path of the root: a link that leads out is neither listed nor opened. Query strings are decoded once by
the framework, so ``%2e%2e`` arrives as ``..`` and is refused; ``%252e%252e`` arrives as the literal name
``%2e%2e``, which is simply not a folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..data.detect import is_hidden
from ..errors import InvalidParameterError, NotFoundError
from ..hints import command

#: Folders listed per request (a folder of 100,000 sub-folders is not browsed one by one).
MAX_ENTRIES = 2000


class DataRootError(InvalidParameterError):
    """A folder picker path that is not inside an allowed root."""


class FolderNotFoundError(NotFoundError):
    """No such folder inside the allowed root."""


@dataclass(frozen=True)
class FolderEntry:
    name: str
    path: str  # relative to the root, POSIX separators
    folders: int
    files: int


@dataclass(frozen=True)
class FolderListing:
    root: int
    root_path: str
    path: str
    parent: str | None
    folders: list[FolderEntry]
    files: int
    truncated: bool


def _refuse(path: str, why: str) -> DataRootError:
    return DataRootError(
        f"The folder {path!r} is refused: {why}.",
        hint="Pick a folder inside one of the allowed data roots; to allow another one, restart the "
        f"portal with {command('portal', data_root='DIR')}",
    )


class DataRoots:
    """The folders the portal may list and read training data from.

    Args:
        roots: the allowed folders (each must exist; links are resolved once, here).
    """

    def __init__(self, roots: Iterable[str | os.PathLike[str]] = ()) -> None:
        self.roots: list[Path] = []
        for root in roots:
            real = Path(root).expanduser().resolve()
            if not real.is_dir():
                raise FolderNotFoundError(
                    f"The data root {str(root)!r} is not a folder.",
                    hint="Give an existing folder to --data-root.",
                )
            if real not in self.roots:
                self.roots.append(real)

    def __bool__(self) -> bool:
        return bool(self.roots)

    def root(self, index: int) -> Path:
        if not 0 <= index < len(self.roots):
            raise FolderNotFoundError(
                f"There is no data root number {index} (the portal allows {len(self.roots)}).",
                hint="Start the portal with --data-root DIR (repeatable) to allow folders for training "
                "data." if not self.roots else "Pick one of the listed data roots.",
            )
        return self.roots[index]

    def resolve(self, index: int, relative: str = "") -> Path:
        """The real folder ``relative`` inside root ``index``.

        Raises:
            DataRootError: the path is absolute, climbs with ``..``, or leads out through a link.
            FolderNotFoundError: no such root or folder.
        """
        root = self.root(index)
        if "\x00" in relative or "\\" in relative:
            raise _refuse(relative, "it holds a backslash or a NUL character")
        pure = PurePosixPath(relative)
        if pure.is_absolute() or relative.startswith("~"):
            raise _refuse(relative, "paths are relative to the data root, never absolute")
        if any(part == ".." for part in pure.parts):
            raise _refuse(relative, "'..' is not allowed")
        real = (root / pure).resolve()
        if not real.is_relative_to(root):
            raise _refuse(relative, "it leads out of the data root (through a link)")
        if not real.is_dir():
            raise FolderNotFoundError(
                f"There is no folder {relative!r} in the data root {str(root)!r}.",
                hint="Pick a folder from the list.",
            )
        return real

    def relative(self, index: int, real: Path) -> str:
        rel = real.relative_to(self.root(index)).as_posix()
        return "" if rel == "." else rel

    def inside(self, index: int, path: Path) -> bool:
        """True when ``path``'s real path is inside root ``index`` (links followed)."""
        try:
            return path.resolve().is_relative_to(self.root(index))
        except OSError:
            return False

    def list(self, index: int, relative: str = "") -> FolderListing:
        """The sub-folders of a folder (hidden ones and links out of the root left out) and its file count.

        Raises:
            DataRootError, FolderNotFoundError: as ``resolve``.
        """
        folder = self.resolve(index, relative)
        rel = self.relative(index, folder)
        entries: list[FolderEntry] = []
        files = 0
        truncated = False
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if is_hidden(entry.name):
                continue
            path = Path(entry.path)
            if not self.inside(index, path):
                continue  # a link that leads out is not shown at all
            if path.is_dir():
                if len(entries) >= MAX_ENTRIES:
                    truncated = True
                    continue
                sub_folders, sub_files = _count(path)
                entries.append(FolderEntry(entry.name, _join(rel, entry.name), sub_folders, sub_files))
            elif path.is_file():
                files += 1
        parent = None if not rel else str(PurePosixPath(rel).parent).removeprefix(".")
        return FolderListing(index, str(self.root(index)), rel, parent, entries, files, truncated)


def _join(relative: str, name: str) -> str:
    return f"{relative.strip('/')}/{name}" if relative.strip("/") else name


def _count(folder: Path) -> tuple[int, int]:
    """(sub-folders, files) directly in ``folder``, hidden ones left out; (0, 0) when unreadable."""
    folders = files = 0
    try:
        with os.scandir(folder) as found:
            for entry in found:
                if is_hidden(entry.name):
                    continue
                if entry.is_dir():
                    folders += 1
                elif entry.is_file():
                    files += 1
    except OSError:
        pass
    return folders, files
