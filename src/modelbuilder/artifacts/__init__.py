"""Artifact stores: each run's files (models, evaluation, logs), atomic and path-safe.

``open_artifact_store(root)`` returns the store for a workspace's artifact root: a local folder or a
``file://`` URI now; remote URIs (through fsspec) are planned.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..errors import InvalidParameterError
from .local import ArtifactStore, LocalArtifactStore
from .paths import check_artifact_name, check_run_id


def open_artifact_store(root: str | os.PathLike[str]) -> ArtifactStore:
    """The artifact store for a workspace's artifact root.

    Raises:
        InvalidParameterError: the root is a URI of a kind not supported yet.
    """
    text = os.fspath(root)
    parsed = urlparse(text)
    if parsed.scheme == "file":
        return LocalArtifactStore(Path(unquote(parsed.path)))
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter: a Windows drive, not a scheme
        raise InvalidParameterError(
            f"The artifact root {text!r} uses the scheme '{parsed.scheme}', which is not supported yet.",
            hint="Use a local folder or a file:// URI as the artifact root.",
        )
    return LocalArtifactStore(text)


__all__ = [
    "ArtifactStore",
    "LocalArtifactStore",
    "check_artifact_name",
    "check_run_id",
    "open_artifact_store",
]
