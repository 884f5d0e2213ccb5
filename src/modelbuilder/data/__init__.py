"""modelbuilder.data: scan a labelled image folder or CSV/TSV, report problems, split it."""

from __future__ import annotations

from .dataset import DataIssue, Dataset, ImageItem, summarize_issues
from .detect import is_hidden, sniff_image_format
from .scan import scan_dataset
from .split import split_dataset

__all__ = [
    "DataIssue",
    "Dataset",
    "ImageItem",
    "is_hidden",
    "scan_dataset",
    "sniff_image_format",
    "split_dataset",
    "summarize_issues",
]
