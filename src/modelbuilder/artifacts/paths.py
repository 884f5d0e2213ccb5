"""Path safety for artifact names: a relative name can only ever point inside its run's folder.

Names come from trainers, from the CLI and from portal URLs, so they are checked as untrusted input. A
name is a relative POSIX path of plain parts: no ``..`` or ``.``, no empty part, no absolute path, drive or
UNC prefix, no backslash, NUL or control character. The same checks run on its percent-decoded and its
NFKC-normalised forms, so a name that would become a traversal after one more decoding step (``%2e%2e``,
fullwidth dots) is refused too. Symlinks are handled where files are resolved (``LocalArtifactStore``).
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import PurePosixPath
from urllib.parse import unquote

from .. import hints
from ..errors import InvalidParameterError

MAX_NAME_LENGTH = 1024
MAX_PART_BYTES = 255
_DRIVE = re.compile(r"^[A-Za-z]:")
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def _problem(name: str) -> str | None:
    """Why ``name`` is not a safe relative artifact path, or None."""
    if not name:
        return "it is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"it is longer than {MAX_NAME_LENGTH} characters"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "it contains a NUL or control character"
    if "\\" in name:
        return "it contains a backslash"
    if name.startswith("/"):
        return "it is absolute"
    if name.startswith("~"):
        return "it starts with '~'"
    if _DRIVE.match(name):
        return "it starts with a drive letter"
    for part in name.split("/"):
        if part in ("", ".", ".."):
            return "it has an empty, '.' or '..' part"
        if len(part.encode("utf-8", "surrogatepass")) > MAX_PART_BYTES:
            return f"a part is longer than {MAX_PART_BYTES} bytes"
    return None


def check_artifact_name(name: object) -> str:
    """Return ``name`` if it is a safe relative artifact path, else raise InvalidParameterError.

    Raises:
        InvalidParameterError: the name is not a string, or could point outside the run's folder.
    """
    if not isinstance(name, str):
        raise InvalidParameterError(
            f"An artifact name must be a string. Got {type(name).__name__} instead.",
            hint="Name artifacts with relative paths such as 'outputs/bestModel.onnx'.",
        )
    forms = [name]
    decoded = name
    for _ in range(3):  # double and triple encodings too
        once = unquote(decoded, errors="replace") if "%" in decoded else decoded
        if once == decoded:
            break
        forms.append(once)
        decoded = once
    forms.extend(unicodedata.normalize("NFKC", form) for form in list(forms))
    for form in forms:
        problem = _problem(form)
        if problem is not None:
            raise InvalidParameterError(
                f"The artifact name {name!r} is not a safe relative path: {problem}"
                + ("" if form == name else f" (once decoded/normalised as {form!r})")
                + ".",
                hint="Name artifacts with relative paths of plain parts, such as 'outputs/bestModel.onnx'.",
            )
    return name


def artifact_parts(name: object) -> tuple[str, ...]:
    """The parts of a checked artifact name (see ``check_artifact_name``)."""
    return PurePosixPath(check_artifact_name(name)).parts


def check_run_id(run_id: object) -> str:
    """Return ``run_id`` if it can name a run folder (letters, digits, '_', '-'; at most 64).

    Raises:
        InvalidParameterError: it cannot.
    """
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise InvalidParameterError(
            f"A run id must be 1 to 64 letters, digits, '_' or '-'. Got {run_id!r} instead.",
            hint=f"Use the run's full id, as printed by: {hints.command('run', 'list')}",
        )
    return run_id
