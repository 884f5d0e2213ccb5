"""``scan_dataset``: the data doctor. List, check and decode every file once; report every problem.

Bad files are never dropped silently: each one becomes a ``DataIssue``. With ``on_bad_image="skip"``
they are left out; with ``"fail"`` the scan raises a ``DatasetError`` that lists them. Problems
with the dataset as a whole (missing folder, one label, a label with one image) always raise, with
a hint that says how to fix the data.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from ..errors import DatasetError, InvalidParameterError
from .dataset import SKIPPED, DataIssue, Dataset, ImageItem, summarize_issues
from .detect import DOCUMENT_SUFFIXES
from .probe import MISSING_FILE, NOT_AN_IMAGE, Probe, probe_file, probe_files
from .sources import FORMAT_HINT, TABLE_SUFFIXES, Listing, list_folder, list_table

logger = logging.getLogger(__name__)

ON_BAD_IMAGE = ("skip", "fail")
# Below this many files one process is faster than starting workers.
PARALLEL_MIN_FILES = 2000
MAX_WORKERS = 2
CHUNK_SIZE = 512
_MAX_LISTED = 10
_BAD_HINT = (
    "Fix or remove these files, or use --on-bad-image skip (on_bad_image='skip' in Python) "
    "to leave them out; every skipped file is listed in the scan report."
)


def scan_dataset(
    source: str | Path,
    *,
    on_bad_image: str = "skip",
    progress: Callable[[int, int | None], None] | None = None,
    require_labels: Sequence[str] | None = None,
) -> Dataset:
    """Scan a labelled image folder or CSV/TSV file, decode every image once, and validate the result.

    Args:
        source: a folder with one sub-folder per label (images may be nested deeper), or a CSV/TSV
            file with ImagePath and Label columns (paths relative to the file's folder, or absolute).
        on_bad_image: "skip" leaves bad files out (each is reported in ``Dataset.issues``);
            "fail" raises if there is any.
        progress: called as ``progress(done, total)`` while checking files; ``total`` is None
            while files are still being listed.
        require_labels: for validation data: the training labels, which this data must match.
            Each label then needs one usable image instead of two.

    Returns:
        The usable images with their labels and every issue found.

    Raises:
        InvalidParameterError: ``on_bad_image`` is not "skip" or "fail".
        DatasetError: the source is missing, empty or of an unknown type; it has fewer than 2 labels or
            a label with too few usable images; bad images with ``on_bad_image="fail"``; labels that do
            not match ``require_labels``.
    """
    if on_bad_image not in ON_BAD_IMAGE:
        raise InvalidParameterError(
            "The 'on_bad_image' parameter of scan_dataset must be 'skip' or 'fail'. "
            f"Got {on_bad_image!r} instead.",
            hint="Use on_bad_image='skip' to leave bad images out, or 'fail' to stop when there is any.",
        )
    root = Path(source).expanduser().absolute()
    listing, what = _list_source(root, source, progress)
    probes = _probe_all([str(path) for path, _, _ in listing.entries], progress)
    items, issues, bad = _collect(listing, probes)
    if on_bad_image == "fail" and bad:
        raise _bad_images_error(what, bad)
    labels = sorted(listing.labels)
    if require_labels is None:
        _check_labels(what, root, labels, items, len(bad))
    else:
        labels = check_required_labels(what, labels, {item.label for item in items}, list(require_labels))
    issues.sort(key=lambda issue: (issue.path, issue.kind))
    dataset = Dataset(source=root, labels=labels, items=items, issues=issues)
    # Problems apart from notes: 500 greyscale images converted to RGB are not "500 issues".
    logger.info("Scanned %s: %d images, %d labels, %s", root, len(items), len(labels),
                summarize_issues(issues))
    return dataset


# ------------------------------------------------------------------------------------------ listing


def list_source(source: str | Path) -> tuple[Listing, str]:
    """The cheap first step of a scan: list the files and labels of a source without opening any image.

    Used to refuse bad input before a run exists; the checks that need every file's content (corrupt
    images, duplicates) stay in ``scan_dataset``.

    Returns:
        The listing, and how messages name the source (``Data folder '<source>'``).

    Raises:
        DatasetError: as ``scan_dataset`` for a source that is missing, empty, of an unknown type, without
            label folders, or an unreadable CSV/TSV.
    """
    return _list_source(Path(source).expanduser().absolute(), source, None)


def _list_source(
    root: Path, given: str | Path, progress: Callable[[int, int | None], None] | None
) -> tuple[Listing, str]:
    if not root.exists():
        noun = "file" if root.suffix.lower() in TABLE_SUFFIXES else "folder"
        raise DatasetError(
            f"Data {noun} '{given}' does not exist (looked for {root}).",
            hint=f"Check the path for typos. {FORMAT_HINT}",
        )
    if root.is_file():
        if root.suffix.lower() not in TABLE_SUFFIXES:
            kind = f"'{root.suffix}'" if root.suffix else "no extension"
            extra = (
                " Extract the archive first and give the extracted folder."
                if root.suffix.lower() in (".zip", ".tar", ".gz", ".tgz", ".7z")
                else ""
            )
            raise DatasetError(
                f"Data source '{given}' is a file of an unknown type ({kind}); expected a folder or a "
                ".csv/.tsv file.",
                hint=f"{FORMAT_HINT}{extra}",
            )
        return list_table(root), f"Data file '{given}'"
    if not root.is_dir():
        raise DatasetError(f"Data source '{given}' is neither a folder nor a file.", hint=FORMAT_HINT)
    what = f"Data folder '{given}'"
    try:
        listing = list_folder(root, progress)
    except OSError as exc:
        raise DatasetError(f"{what} cannot be listed: {exc}.", hint="Check its permissions.") from exc
    if not listing.labels:
        if listing.stray_files == 0:
            hidden = [issue.path for issue in listing.issues if issue.kind == "hidden"]
            only = f"; it holds only hidden entries ({', '.join(hidden[:5])})" if hidden else ""
            raise DatasetError(
                f"{what} is empty (no label folders, no images){only}.",
                hint=f"Put the images in one sub-folder per label: {given}/<label>/<image>. {FORMAT_HINT}",
            )
        raise DatasetError(
            f"{what} has no label sub-folders; it holds {listing.stray_files} file(s) directly.",
            hint=f"Move the images into one sub-folder per label, named after the label: "
            f"{given}/<label>/<image>.",
        )
    return listing, what


# ------------------------------------------------------------------------------------------ probing


def _probe_all(paths: list[str], progress: Callable[[int, int | None], None] | None) -> list[Probe]:
    total = len(paths)
    workers = min(MAX_WORKERS, os.cpu_count() or 1)
    if total >= PARALLEL_MIN_FILES and workers >= 2 and not multiprocessing.current_process().daemon:
        try:
            return _probe_parallel(paths, workers, progress)
        except (BrokenProcessPool, OSError) as exc:  # a worker killed, a script without a main guard
            logger.warning("Parallel image check failed (%s); checking in this process instead.", exc)
    results: list[Probe] = []
    for index, path in enumerate(paths, 1):
        results.append(probe_file(path))
        if progress is not None and (index % 256 == 0 or index == total):
            progress(index, total)
    if progress is not None and total == 0:
        progress(0, 0)
    return results


def _probe_parallel(
    paths: list[str], workers: int, progress: Callable[[int, int | None], None] | None
) -> list[Probe]:
    total = len(paths)
    chunk = max(1, min(CHUNK_SIZE, -(-total // (workers * 8))))
    starts = list(range(0, total, chunk))
    context = multiprocessing.get_context(_start_method())
    results: dict[int, list[Probe]] = {}
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    try:
        futures: dict[Future[list[Probe]], int] = {
            pool.submit(probe_files, paths[start : start + chunk]): start for start in starts
        }
        done = 0
        for future in as_completed(futures):
            batch = future.result()
            results[futures[future]] = batch
            done += len(batch)
            if progress is not None:
                progress(done, total)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return [probe for start in starts for probe in results[start]]


def _start_method() -> str:
    """The worker start method: "fork" only when this process runs no other thread.

    Fork is fast and does not re-import ``__main__``, but with other threads alive (progress bars,
    torch) it would copy locks they hold; then "forkserver" (or "spawn") is used.
    """
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


# ----------------------------------------------------------------------------------------- results


def _is_bad(issue: DataIssue) -> bool:
    """Is this issue a bad image (fatal with on_bad_image="fail")? A stray README is not."""
    if issue.action != SKIPPED or issue.kind == "duplicate":
        return False
    if issue.kind == NOT_AN_IMAGE:
        return Path(issue.path).suffix.lower() not in DOCUMENT_SUFFIXES
    return True


def _collect(
    listing: Listing, probes: list[Probe]
) -> tuple[list[ImageItem], list[DataIssue], list[DataIssue]]:
    issues = list(listing.issues)
    usable: list[tuple[Probe, str, str]] = []
    for probe, (_, label, display) in zip(probes, listing.entries, strict=True):
        if probe.problem is not None:
            message = f"{display} {probe.message.rstrip('.')}."
            if probe.problem == MISSING_FILE:
                message = f"{display} (label '{label}') is listed but {probe.message}."
            issues.append(DataIssue(display, probe.problem, message, SKIPPED))
            continue
        for note in probe.notes:
            issues.append(DataIssue(display, note.kind, f"{display} {note.message}.", note.action))
        usable.append((probe, label, display))
    kept, duplicate_issues = _resolve_duplicates(usable)
    issues.extend(duplicate_issues)
    items = [
        ImageItem(Path(p.path), label, p.sha256, p.width, p.height, p.mode, p.format) for p, label, _ in kept
    ]
    items.sort(key=lambda item: (item.label, str(item.path)))
    bad = sorted((issue for issue in issues if _is_bad(issue)), key=lambda issue: issue.path)
    return items, issues, bad


def _resolve_duplicates(
    usable: list[tuple[Probe, str, str]],
) -> tuple[list[tuple[Probe, str, str]], list[DataIssue]]:
    by_hash: dict[str, list[tuple[Probe, str, str]]] = defaultdict(list)
    for entry in usable:
        by_hash[entry[0].sha256].append(entry)
    kept: list[tuple[Probe, str, str]] = []
    issues: list[DataIssue] = []
    for copies in by_hash.values():
        if len(copies) == 1:
            kept.append(copies[0])
            continue
        copies.sort(key=lambda entry: entry[2])
        labels = sorted({label for _, label, _ in copies})
        if len(labels) == 1:
            first = copies[0][2]
            kept.append(copies[0])
            for _, label, display in copies[1:]:
                reason = "is listed more than once" if display == first else f"is a copy of {first}"
                issues.append(
                    DataIssue(
                        display,
                        "duplicate",
                        f"{display} {reason} (label '{label}'); only one is used.",
                        SKIPPED,
                    )
                )
            continue
        names = ", ".join(f"{display} ('{label}')" for _, label, display in copies)
        for _, _, display in copies:
            issues.append(
                DataIssue(
                    display,
                    "duplicate_across_labels",
                    f"{display} has the same content as images of other labels ({names}); the labels "
                    "contradict each other, so no copy is used.",
                    SKIPPED,
                )
            )
    return kept, issues


def _listed(issues: Sequence[DataIssue]) -> str:
    lines = [f"  {issue.path}: {issue.kind}: {issue.message}" for issue in issues[:_MAX_LISTED]]
    if len(issues) > _MAX_LISTED:
        lines.append(f"  ... and {len(issues) - _MAX_LISTED} more")
    return "\n".join(lines)


def _bad_images_error(what: str, bad: list[DataIssue]) -> DatasetError:
    noun = "file" if len(bad) == 1 else "files"
    return DatasetError(
        f"{what} has {len(bad)} bad {noun} and on_bad_image is 'fail':\n{_listed(bad)}",
        hint=_BAD_HINT,
    )


# -------------------------------------------------------------------------------------- validation


def check_label_count(
    what: str, root: Path, labels: Sequence[str], counts: dict[str, int] | None = None
) -> None:
    """Raise when there are fewer than 2 labels (``counts``: usable images per label, when known).

    Raises:
        DatasetError: one label or none.
    """
    if len(labels) >= 2:
        return
    unit = "label folder" if root.is_dir() else "label"
    found = "no labels"
    if labels:
        found = f"only one label, '{labels[0]}'"
        if counts is not None:
            found += f" ({counts[labels[0]]} usable images)"
    raise DatasetError(
        f"{what} has {found}; image classification needs at least 2 labels.",
        hint=f"Add a {unit} with images for each other class, e.g. <data>/<other-label>/<image>.",
    )


def _check_labels(what: str, root: Path, labels: list[str], items: list[ImageItem], bad_count: int) -> None:
    counts = {label: 0 for label in labels}
    for item in items:
        counts[item.label] += 1
    unit = "label folder" if root.is_dir() else "label"
    check_label_count(what, root, labels, counts)
    too_few = {label: count for label, count in counts.items() if count < 2}
    if too_few:
        listed = ", ".join(f"'{label}' has {count}" for label, count in too_few.items())
        plural = "s" if bad_count != 1 else ""
        skipped = f" ({bad_count} bad file{plural} skipped; see the scan report)" if bad_count else ""
        raise DatasetError(
            f"{what}: every label needs at least 2 usable images; {listed}{skipped}.",
            hint=f"Add images to {'this label' if len(too_few) == 1 else 'these labels'}, or remove the "
            f"{unit}{'' if len(too_few) == 1 else 's'} if the class is not needed.",
        )


def check_required_labels(what: str, labels: list[str], present: set[str], required: list[str]) -> list[str]:
    """Validation data must have exactly the training labels, each with an image (``present``).

    Returns:
        The required labels, sorted.

    Raises:
        DatasetError: a label not in the training data, or a training label without images here.
    """
    unknown = sorted(set(labels) - set(required))
    missing = sorted(set(required) - present)
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"not in the training data: {', '.join(repr(x) for x in unknown)}")
        if missing:
            parts.append(f"without usable images here: {', '.join(repr(x) for x in missing)}")
        raise DatasetError(
            f"{what} does not match the training labels ({', '.join(sorted(required))}); labels "
            + "; labels ".join(parts)
            + ".",
            hint="Use validation data with the same labels as the training data, at least one image each, "
            "or leave the validation data out to hold out part of the training data instead.",
        )
    return sorted(required)
