"""Name rules for workspaces, experiments, computes and resource groups."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidNameError


@dataclass(frozen=True, slots=True)
class NameRule:
    kind: str
    min_len: int
    max_len: int
    pattern: re.Pattern[str]
    allowed: str

    def check(self, name: object) -> str:
        """Return ``name`` if it follows the rule, else raise InvalidNameError naming the rule."""
        if not isinstance(name, str):
            raise InvalidNameError(
                f"The {self.kind} name must be a string. Got {type(name).__name__} instead.",
                hint=self.describe(),
            )
        if not self.min_len <= len(name) <= self.max_len:
            raise InvalidNameError(
                f"The {self.kind} name '{name}' has {len(name)} characters; it must have "
                f"{self.min_len} to {self.max_len}.",
                hint=self.describe(),
            )
        if not self.pattern.fullmatch(name):
            raise InvalidNameError(
                f"The {self.kind} name '{name}' is not valid: it may contain only {self.allowed}, "
                "and must start with a letter or digit.",
                hint=self.describe(),
            )
        return name

    def describe(self) -> str:
        return (
            f"Choose a {self.kind} name of {self.min_len}-{self.max_len} characters: {self.allowed}, "
            "starting with a letter or digit."
        )


WORKSPACE_NAME = NameRule(
    "workspace", 3, 33, re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*"), "letters, digits and hyphens"
)
RESOURCE_GROUP_NAME = NameRule(
    "resource group", 1, 90, re.compile(r"[A-Za-z0-9][A-Za-z0-9_.()-]*"),
    "letters, digits, '_', '-', '.', '(' and ')'",
)
EXPERIMENT_NAME = NameRule(
    "experiment", 3, 36, re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*"), "letters, digits, '_' and '-'"
)
#: An environment variable's name: what a compute stores to refer to its cluster token (``token_ref``, a
#: 64-character column), never the token itself.
ENV_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")

COMPUTE_NAME = NameRule(
    "compute", 2, 16, re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*"), "letters, digits and hyphens"
)


def check_workspace_name(name: object) -> str:
    return WORKSPACE_NAME.check(name)


def check_resource_group_name(name: object) -> str:
    return RESOURCE_GROUP_NAME.check(name)


def check_experiment_name(name: object) -> str:
    return EXPERIMENT_NAME.check(name)


def check_compute_name(name: object) -> str:
    return COMPUTE_NAME.check(name)


def experiment_name_from(text: str) -> str:
    """Derive a valid experiment name from a folder name (used when --experiment is not given)."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-_") or "experiment"
    cleaned = cleaned[:36]
    while len(cleaned) < 3:
        cleaned += "-x"
    return cleaned[:36]
