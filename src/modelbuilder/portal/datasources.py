"""Training data as the new-run page names it, and its preview.

A *source* is a string the page sends back: ``dataset:<id>`` (an upload of the workspace) or
``folder:<root index>:<relative path>`` (a folder inside an allowed data root). ``resolve_source`` turns it
into a real folder through the same checks as the folder picker, so a source can never name a path the
picker would not show.

The preview is the data doctor's own scan (``data.scan_dataset``), run with ``on_bad_image="skip"`` so that
every problem is listed instead of the first one raised: bad files (corrupt, not an image, too large),
duplicates (also across labels), and labels with too few images. A problem of the data as a whole (one
label, a label without any usable image) is reported as ``blocking``, with the scan's own message.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from ..data.dataset import DataIssue, Dataset, ImageItem
from ..data.probe import probe_files
from ..data.scan import check_label_count, list_source, scan_dataset
from ..data.sources import Listing
from ..errors import DatasetError, InvalidParameterError
from ..services import datasets as dataset_service
from ..services.workspaces import WorkspaceSession
from .charts import PALETTE
from .folders import DataRoots

#: A label with fewer usable images than this cannot be trained on (the scan's own rule).
MIN_IMAGES_PER_LABEL = 2
#: Below this, training works but the accuracy estimate is weak: reported as a warning.
FEW_IMAGES_PER_LABEL = 5
THUMBNAILS_PER_LABEL = 8
PROBLEM_KINDS_BLOCKING = ("too_few_images",)
#: Notes about kept images beyond this many are shown as one row per kind.
MAX_NOTES_LISTED = 5


@dataclass
class Problem:
    kind: str
    message: str
    path: str | None = None
    label: str | None = None
    action: str = "skipped"


@dataclass
class Preview:
    """What the Data step shows before training."""

    source: str
    path: Path
    labels: list[str]
    counts: dict[str, int]
    thumbnails: dict[str, list[str]]  # label -> relative paths of its first images
    problems: list[Problem] = field(default_factory=list)
    blocking: str | None = None  # the scan's error when the data cannot be trained on as it is
    blocking_hint: str | None = None
    skipped: int = 0
    typical_size: tuple[int, int] = (0, 0)
    usable: set[str] = field(default_factory=set)  # relative paths a thumbnail may be made of
    hashes: list[str] = field(default_factory=list)  # sha256 of each usable image (feature-cache keys)
    items: list[ImageItem] = field(default_factory=list)  # the usable images (the estimate's data facts)

    @property
    def images(self) -> int:
        return sum(self.counts.values())


def _bad_source(source: str) -> InvalidParameterError:
    return InvalidParameterError(
        f"The data source {source!r} is not 'dataset:<id>' or 'folder:<root>:<path>'.",
        hint="Upload the data or pick a folder on the Data step; the page sends the source it shows.",
    )


def resolve_source(session: WorkspaceSession, roots: DataRoots, source: str) -> Path:
    """The real folder a source names.

    Raises:
        InvalidParameterError / DataRootError: not a source, or a path outside the allowed roots.
        DatasetNotFoundError / FolderNotFoundError: no such upload or folder.
    """
    kind, _, rest = source.partition(":")
    if kind == "dataset":
        return dataset_service.get_dataset(session, rest).path
    if kind == "folder":
        index, sep, relative = rest.partition(":")
        if not sep or not index.isdigit():
            raise _bad_source(source)
        return roots.resolve(int(index), relative)
    raise _bad_source(source)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def source_boundary(roots: DataRoots, source: str, folder: Path) -> Path:
    """What the files of a source must stay inside (links followed): its data root, or the upload's folder."""
    kind, _, rest = source.partition(":")
    index = rest.partition(":")[0]
    return roots.root(int(index)) if kind == "folder" and index.isdigit() else folder


def _links_out(listing: Listing, boundary: Path) -> list[str]:
    outside = []
    for path, _, display in listing.entries:
        try:
            if not Path(path).resolve().is_relative_to(boundary):
                outside.append(display)
        except OSError:
            continue  # unreadable: the scan reports it
    return outside


def build_preview(source: str, folder: Path, boundary: Path | None = None) -> Preview:
    """Scan ``folder`` as training would, and gather what the Data step shows. With ``boundary``, data
    with a file whose real path lies outside it (a link out of the data root) is refused before any file
    is opened."""
    try:
        listing, what = list_source(folder)
        labels = sorted(listing.labels)
    except DatasetError as exc:  # no such folder, no label folders: nothing to preview
        return Preview(source, folder, [], {}, {}, blocking=exc.message, blocking_hint=exc.hint)
    outside = _links_out(listing, boundary.resolve()) if boundary is not None else []
    if outside:
        problems = [Problem("link_out_of_root", f"{name} is a link that leads out of the data root; the "
                            "portal does not read it.", name, action="blocks training") for name in outside]
        return Preview(source, folder, labels, {}, {}, problems,
                       blocking=f"{len(outside)} file(s) lead out of the data root through links "
                       f"({', '.join(outside[:3])}{', ...' if len(outside) > 3 else ''}).",
                       blocking_hint="Replace the links by the files themselves, or allow the folder they "
                       "lead to with another --data-root.")
    try:
        # require_labels: every label needs one usable image instead of two, so a label with one image is
        # listed here as a problem instead of ending the scan.
        dataset = scan_dataset(folder, on_bad_image="skip", require_labels=labels)
    except DatasetError as exc:
        # A label left without any usable image (or a single label): the scan stops there, but the page
        # must still list every file's problem, so the files are checked once more without the label rule.
        dataset = _unchecked_scan(folder, listing, labels)
        preview = _preview_of(source, folder, dataset)
        preview.blocking, preview.blocking_hint = exc.message, exc.hint
        return preview
    preview = _preview_of(source, folder, dataset)
    try:
        check_label_count(what, folder, labels, preview.counts)
    except DatasetError as exc:
        preview.blocking, preview.blocking_hint = exc.message, exc.hint
    return preview


def _unchecked_scan(folder: Path, listing: Listing, labels: list[str]) -> Dataset:
    # The scan's own steps (private to data.scan), without its label-count checks.
    from ..data.scan import _collect  # noqa: PLC2701

    probes = probe_files([str(path) for path, _, _ in listing.entries])
    items, issues, _ = _collect(listing, probes)
    return Dataset(source=folder, labels=labels, items=items, issues=sorted(issues, key=lambda i: i.path))


def _problems_of(issues: Sequence[DataIssue]) -> list[Problem]:
    """One row per problem file; notes about files that were kept (converted to RGB, rotated: the data
    package's ``DataIssue.is_note``, the rule the CLI's summary uses too) are folded into one row per kind
    when there are many, so 500 greyscale images read as one line, not 500."""
    problems: list[Problem] = []
    notes: dict[tuple[str, str], list[DataIssue]] = {}
    for issue in issues:
        if issue.is_note:
            notes.setdefault((issue.kind, issue.action), []).append(issue)
        else:
            problems.append(Problem(issue.kind, issue.message, issue.path, None, issue.action))
    for (kind, action), group in notes.items():
        if len(group) <= MAX_NOTES_LISTED:
            problems.extend(Problem(kind, note.message, note.path, None, action) for note in group)
        else:
            message = f"{len(group)} images were {action}; for example: {group[0].message}"
            problems.append(Problem(kind, message, None, None, action))
    return problems


def _preview_of(source: str, folder: Path, dataset: Dataset) -> Preview:
    counts = dataset.counts()
    thumbnails: dict[str, list[str]] = {label: [] for label in dataset.labels}
    usable = set()
    for item in dataset.items:
        relative = _relative(item.path, folder)
        usable.add(relative)
        if len(thumbnails[item.label]) < THUMBNAILS_PER_LABEL:
            thumbnails[item.label].append(relative)
    problems = _problems_of(dataset.issues)
    for label, count in counts.items():
        if count < MIN_IMAGES_PER_LABEL:
            problems.append(Problem(
                "too_few_images",
                f"Label '{label}' has {count} usable image{'s' if count != 1 else ''}; training needs at "
                f"least {MIN_IMAGES_PER_LABEL} per label.",
                label=label, action="blocks training",
            ))
        elif count < FEW_IMAGES_PER_LABEL:
            problems.append(Problem(
                "few_images",
                f"Label '{label}' has only {count} usable images; {FEW_IMAGES_PER_LABEL} or more per label "
                "give a more reliable model.",
                label=label, action="warning",
            ))
    preview = Preview(source, folder, list(dataset.labels), counts, thumbnails, problems,
                      skipped=len(dataset.skipped()), typical_size=dataset.typical_size(), usable=usable,
                      hashes=[item.sha256 for item in dataset.items], items=list(dataset.items))
    blocking = [p for p in problems if p.kind in PROBLEM_KINDS_BLOCKING]
    if blocking:
        preview.blocking = " ".join(p.message for p in blocking)
        preview.blocking_hint = "Add images to these labels, or remove their folders."
    return preview


class PreviewCache:
    """The latest previews by source and folder state, so thumbnails and the train step reuse the scan.

    A folder's state is the cheap listing fingerprint (paths, sizes, mtimes): changed data is scanned again.
    Listing a big folder still takes a while, so requests that only need the current scan (thumbnails) may
    reuse a fingerprint taken in the last ``max_age_s`` seconds.
    """

    def __init__(self, max_entries: int = 8) -> None:
        self._items: OrderedDict[tuple[str, str], Preview] = OrderedDict()
        self._fingerprints: dict[str, tuple[float, str]] = {}
        self._max = max_entries
        self._lock = threading.Lock()

    def _fingerprint(self, source: str, folder: Path, max_age_s: float) -> str:
        from ..services.training_run import dataset_fingerprint

        now = time.monotonic()
        with self._lock:
            taken = self._fingerprints.get(source)
        if taken is not None and now - taken[0] <= max_age_s:
            return taken[1]
        fingerprint = dataset_fingerprint(folder)
        with self._lock:
            self._fingerprints[source] = (now, fingerprint)
            if len(self._fingerprints) > 4 * self._max:
                self._fingerprints.pop(next(iter(self._fingerprints)))
        return fingerprint

    def get(self, source: str, folder: Path, boundary: Path | None = None, max_age_s: float = 0.0) -> Preview:
        key = (source, self._fingerprint(source, folder, max_age_s))
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                return found
        preview = build_preview(source, folder, boundary)
        with self._lock:
            self._items[key] = preview
            while len(self._items) > self._max:
                self._items.popitem(last=False)
        return preview


_BAR_W, _ROW_H, _LEFT = 560, 26, 150


def counts_chart(counts: dict[str, int], title: str = "Images per label") -> str:
    """A horizontal bar chart of images per label as inline SVG (every text escaped)."""
    height = 36 + _ROW_H * max(1, len(counts))
    top = max(counts.values(), default=0) or 1
    parts = [
        f'<svg class="chart" viewBox="0 0 {_BAR_W} {height}" role="img" aria-label="{escape(title)}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<text class="chart-title" x="8" y="18">{escape(title)}</text>',
    ]
    span = _BAR_W - _LEFT - 60
    for row, (label, count) in enumerate(counts.items()):
        y = 30 + row * _ROW_H
        width = max(1.0, span * count / top) if count else 0.0
        colour = PALETTE[row % len(PALETTE)] if count >= MIN_IMAGES_PER_LABEL else "#dc2626"
        shown = label if len(label) <= 20 else label[:19] + "…"
        parts.append(f'<text class="chart-label" x="{_LEFT - 6}" y="{y + 15}" text-anchor="end">'
                     f"{escape(shown)}</text>")
        parts.append(f'<rect x="{_LEFT}" y="{y + 3}" width="{width:.1f}" height="{_ROW_H - 8}" '
                     f'fill="{colour}"><title>{escape(label)}: {count}</title></rect>')
        parts.append(f'<text class="chart-value" x="{_LEFT + width + 6:.1f}" y="{y + 15}">{count}</text>')
    parts.append("</svg>")
    return "".join(parts)


@dataclass
class WizardState:
    """What the new-run flow keeps for the server's life: the allowed data roots, the upload limits and
    the latest previews."""

    roots: DataRoots
    limits: dataset_service.UploadLimits = dataset_service.DEFAULT_LIMITS
    previews: PreviewCache = field(default_factory=PreviewCache)

    def preview(self, source: str, folder: Path, max_age_s: float = 0.0) -> Preview:
        """The (cached) preview of a resolved source, confined to its data root (``max_age_s``: see
        ``PreviewCache``)."""
        return self.previews.get(source, folder, source_boundary(self.roots, source, folder), max_age_s)


__all__ = ["Preview", "PreviewCache", "Problem", "WizardState", "build_preview", "counts_chart",
           "resolve_source"]
