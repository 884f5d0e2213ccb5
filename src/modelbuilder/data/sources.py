"""List the (file, label) pairs of a data source: a folder of label folders, or a CSV/TSV file.

Nothing is opened here except directory listings and the CSV itself; the files are checked later
by ``probe``. Both listers return entries sorted by their display path, so scans are deterministic.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DatasetError
from .dataset import IGNORED, SKIPPED, DataIssue
from .detect import is_hidden

logger = logging.getLogger(__name__)

TABLE_SUFFIXES = frozenset({".csv", ".tsv", ".tab", ".txt"})
FORMAT_HINT = (
    "Give a folder with one sub-folder per label (data/cat/1.jpg, data/dog/2.jpg, ...), "
    "or a CSV/TSV file with ImagePath,Label columns."
)
# Missing or empty CSV values are bad rows (like bad images): skipped, or fatal with on_bad_image="fail".
MISSING_VALUE = "missing_value"
_LISTING_PROGRESS_EVERY = 1000


@dataclass
class Listing:
    """What a source lists before any file is opened.

    Attributes:
        entries: (absolute path, label, display path) for every candidate file, sorted by display path.
        labels: every label the source declares (label folders, or CSV labels), even without images.
        issues: hidden folders and files, files outside label folders, bad CSV rows.
        stray_files: how many files lie directly in the data folder (not in a label folder).
    """

    entries: list[tuple[Path, str, str]] = field(default_factory=list)
    labels: set[str] = field(default_factory=set)
    issues: list[DataIssue] = field(default_factory=list)
    stray_files: int = 0


def list_folder(root: Path, progress: Callable[[int, int | None], None] | None = None) -> Listing:
    """List ``root/<label>/**/<file>``; hidden entries are reported once and never descended into."""
    listing = Listing()
    seen_dirs: set[tuple[int, int]] = set()
    for entry in _sorted_entries(root):
        if is_hidden(entry.name):
            _report_hidden(listing, entry, entry.name)
            continue
        if _is_dir(entry):
            listing.labels.add(entry.name)
            _walk_label(listing, Path(entry.path), entry.name, entry.name, seen_dirs, progress)
        else:
            listing.stray_files += 1
            listing.issues.append(
                DataIssue(
                    entry.name,
                    "no_label",
                    f"{entry.name} is directly in the data folder, not in a label folder; ignored.",
                    IGNORED,
                )
            )
    listing.entries.sort(key=lambda e: e[2])
    listing.issues.sort(key=lambda issue: issue.path)
    return listing


def _walk_label(
    listing: Listing,
    folder: Path,
    label: str,
    display: str,
    seen_dirs: set[tuple[int, int]],
    progress: Callable[[int, int | None], None] | None,
) -> None:
    try:
        stat = folder.stat()
    except OSError as exc:
        listing.issues.append(DataIssue(display, "unreadable", f"{display} cannot be listed: {exc}", SKIPPED))
        return
    key = (stat.st_dev, stat.st_ino)
    if key in seen_dirs:  # a symlink loop, or two links to one folder
        listing.issues.append(
            DataIssue(
                display, "symlink_loop", f"{display} was already scanned (a folder link); ignored.", IGNORED
            )
        )
        return
    seen_dirs.add(key)
    try:
        entries = _sorted_entries(folder)
    except OSError as exc:
        listing.issues.append(DataIssue(display, "unreadable", f"{display} cannot be listed: {exc}", SKIPPED))
        return
    for entry in entries:
        child_display = f"{display}/{entry.name}"
        if is_hidden(entry.name):
            _report_hidden(listing, entry, child_display)
        elif _is_dir(entry):
            _walk_label(listing, Path(entry.path), label, child_display, seen_dirs, progress)
        else:
            listing.entries.append((Path(entry.path), label, child_display))
            if progress is not None and len(listing.entries) % _LISTING_PROGRESS_EVERY == 0:
                progress(len(listing.entries), None)


def _sorted_entries(folder: Path) -> list[os.DirEntry[str]]:
    with os.scandir(folder) as iterator:
        return sorted(iterator, key=lambda entry: entry.name)


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # follows symlinks: a linked label folder is a label folder
    except OSError:
        return False


def _report_hidden(listing: Listing, entry: os.DirEntry[str], display: str) -> None:
    what = "hidden folder" if _is_dir(entry) else "hidden file"
    listing.issues.append(DataIssue(display, "hidden", f"{display} is a {what}; ignored.", IGNORED))


# --------------------------------------------------------------------------------------------- CSV


def _column_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _pick_delimiter(header_line: str, suffix: str) -> str:
    if suffix in (".tsv", ".tab"):
        return "\t"
    candidates = ["\t", ",", ";"] if "\t" in header_line else [",", ";", "\t"]
    for delimiter in candidates:
        keys = {_column_key(cell) for cell in next(csv.reader([header_line], delimiter=delimiter), [])}
        if {"imagepath", "label"} <= keys:
            return delimiter
    return "\t" if "\t" in header_line and "," not in header_line else ","


def list_table(table: Path) -> Listing:
    """List the rows of a CSV/TSV file with ImagePath and Label columns (any case).

    Relative paths are relative to the file's folder; absolute paths are allowed.

    Raises:
        DatasetError: the file cannot be read, lacks a column, or has no rows.
    """
    try:
        text = table.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(
            f"Data file '{table}' cannot be read as UTF-8 text: {exc}.",
            hint="Save it as a UTF-8 CSV (or TSV) file with ImagePath,Label columns.",
        ) from exc
    lines = text.splitlines()
    header_line = next((line for line in lines if line.strip()), "")
    delimiter = _pick_delimiter(header_line, table.suffix.lower())
    reader = csv.reader(lines, delimiter=delimiter)
    header: list[str] = []
    for row in reader:
        if any(cell.strip() for cell in row):
            header = row
            break
    keys = [_column_key(cell) for cell in header]
    missing = [name for name, key in (("ImagePath", "imagepath"), ("Label", "label")) if key not in keys]
    if missing:
        found = ", ".join(repr(cell.strip()) for cell in header) or "nothing"
        raise DatasetError(
            f"Data file '{table}' has no {' and no '.join(missing)} column. "
            f"Expected a header with ImagePath and Label (any case); found {found}.",
            hint="Make the first line 'ImagePath,Label' (or tab-separated), then one image path and "
            "label per line; paths may be relative to the file's folder.",
        )
    path_col, label_col = keys.index("imagepath"), keys.index("label")
    base = table.parent
    listing = Listing()
    rows = 0
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        rows += 1
        line = reader.line_num
        raw_path = row[path_col].strip() if path_col < len(row) else ""
        label = row[label_col].strip() if label_col < len(row) else ""
        if not raw_path or not label:
            what = "ImagePath" if not raw_path else "Label"
            display = raw_path or f"{table.name}:{line}"
            listing.issues.append(
                DataIssue(
                    display, MISSING_VALUE, f"{table.name} line {line} has no {what}; row skipped.", SKIPPED
                )
            )
            continue
        path, display = _resolve(raw_path, base)
        listing.labels.add(label)
        listing.entries.append((path, label, display))
    if rows == 0:
        raise DatasetError(
            f"Data file '{table}' has a header but no rows.",
            hint="Add one line per image: <path to image><separator><label>.",
        )
    listing.entries.sort(key=lambda e: e[2])
    return listing


def _resolve(raw: str, base: Path) -> tuple[Path, str]:
    candidate = Path(raw).expanduser()
    if not candidate.is_absolute() and "\\" in raw and os.sep == "/" and not (base / candidate).exists():
        candidate = Path(raw.replace("\\", "/"))  # a CSV written on Windows
    path = Path(os.path.normpath(base / candidate))  # base / absolute = absolute
    try:
        display = path.relative_to(base).as_posix()
    except ValueError:
        display = str(path) if candidate.is_absolute() else Path(os.path.relpath(path, base)).as_posix()
    return path, display
