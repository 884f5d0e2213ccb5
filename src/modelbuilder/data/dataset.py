"""What a scan returns: the usable images, their labels, and every issue found on the way."""

from __future__ import annotations

import hashlib
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

# DataIssue.action values.
SKIPPED = "skipped"
CONVERTED = "converted"
ROTATED = "rotated"
IGNORED = "ignored"
WARNING = "warning"
ACTIONS = (SKIPPED, CONVERTED, ROTATED, IGNORED, WARNING)
#: Issues with these actions are notes, not problems: the file was used, changed as the note says
#: (converted to RGB, rotated upright). The scan's summary, the run log, the CLI and the portal's data
#: preview all tell problems from notes by this one rule (``DataIssue.is_note``).
NOTE_ACTIONS = (CONVERTED, ROTATED)


@dataclass(frozen=True, slots=True)
class ImageItem:
    """One usable image.

    Attributes:
        path: where the image is (absolute).
        label: its label (the label folder's name, or the CSV's Label value).
        sha256: hex digest of the file's bytes.
        width: width after EXIF rotation, in pixels.
        height: height after EXIF rotation, in pixels.
        mode: Pillow's mode of the file as stored (``RGB``, ``L``, ``CMYK``, ``I;16``, ...).
        format: Pillow's format name (``PNG``, ``JPEG``, ...).
    """

    path: Path
    label: str
    sha256: str
    width: int
    height: int
    mode: str
    format: str


@dataclass(frozen=True, slots=True)
class DataIssue:
    """Something the scan noticed about one file or folder.

    Attributes:
        path: the file or folder, relative to the data folder (absolute when outside it).
        kind: what was found, e.g. ``corrupt``, ``not_an_image``, ``decompression_bomb``,
            ``duplicate``, ``duplicate_across_labels``, ``missing_file``, ``hidden``,
            ``no_label``, ``exif_rotation``, ``color_mode``.
        message: a sentence about the file, starting with its path.
        action: what the scan did: ``skipped``, ``converted``, ``rotated``, ``ignored`` or ``warning``.
    """

    path: str
    kind: str
    message: str
    action: str

    @property
    def is_note(self) -> bool:
        """Informational: the file was used as the note says (see ``NOTE_ACTIONS``); else a problem."""
        return self.action in NOTE_ACTIONS


def summarize_issues(issues: Sequence[DataIssue]) -> str:
    """One phrase about ``issues`` that keeps problems apart from notes, for logs and terminals:
    ``"2 problems (1 skipped, 1 ignored); 500 notes (500 converted to RGB)"`` or ``"no problems"``."""

    def counted(group: list[DataIssue], what: str) -> str:
        actions = Counter(issue.action for issue in group)
        detail = ", ".join(f"{count} {_ACTION_WORDS.get(action, action)}"
                           for action, count in sorted(actions.items()))
        return f"{len(group)} {what}{'s' if len(group) != 1 else ''} ({detail})"

    problems = [issue for issue in issues if not issue.is_note]
    notes = [issue for issue in issues if issue.is_note]
    text = counted(problems, "problem") if problems else "no problems"
    return f"{text}; {counted(notes, 'note')}" if notes else text


_ACTION_WORDS = {CONVERTED: "converted to RGB", ROTATED: "rotated upright"}


@dataclass
class Dataset:
    """A scanned, validated image-classification dataset.

    Attributes:
        source: the data folder or CSV/TSV file that was scanned (absolute).
        labels: the label names, sorted.
        items: the usable images, sorted by label, then path.
        issues: everything reported, in path order (skipped files, conversions, ignored folders).
    """

    source: Path
    labels: list[str]
    items: list[ImageItem]
    issues: list[DataIssue] = field(default_factory=list)

    def fingerprint(self) -> str:
        """sha256 over the sorted (label, image sha256) pairs: the same for the same data, wherever it is."""
        digest = hashlib.sha256(b"modelbuilder-dataset-v1\n")
        for label, sha in sorted((item.label, item.sha256) for item in self.items):
            digest.update(label.encode("utf-8"))
            digest.update(b"\x00")
            digest.update(sha.encode("ascii"))
            digest.update(b"\n")
        return digest.hexdigest()

    def counts(self) -> dict[str, int]:
        """Usable images per label, for every label (in label order)."""
        counter = Counter(item.label for item in self.items)
        return {label: counter.get(label, 0) for label in self.labels}

    def problems(self) -> list[DataIssue]:
        """The issues that are problems with the data (skipped or ignored files, warnings), not notes."""
        return [issue for issue in self.issues if not issue.is_note]

    def notes(self) -> list[DataIssue]:
        """The informational issues: files used after a conversion or rotation (see ``NOTE_ACTIONS``)."""
        return [issue for issue in self.issues if issue.is_note]

    def skipped(self) -> list[DataIssue]:
        """The issues whose file was left out."""
        return [issue for issue in self.issues if issue.action == SKIPPED]

    def issue_counts(self) -> dict[str, int]:
        """How many issues of each kind (a compact summary for CLIs and run logs)."""
        return dict(sorted(Counter(issue.kind for issue in self.issues).items()))

    def typical_size(self) -> tuple[int, int]:
        """Median (width, height) of the usable images; (0, 0) when there are none."""
        if not self.items:
            return (0, 0)
        width = statistics.median_low(item.width for item in self.items)
        height = statistics.median_low(item.height for item in self.items)
        return (int(width), int(height))
