"""Name rules at their boundaries: workspaces 3-33, computes 2-16, experiments 3-36, bad characters."""

from __future__ import annotations

import pytest

from modelbuilder.errors import InvalidNameError
from modelbuilder.names import (
    check_compute_name,
    check_experiment_name,
    check_resource_group_name,
    check_workspace_name,
    experiment_name_from,
)


@pytest.mark.parametrize(
    "length, ok",
    [(2, False), (3, True), (33, True), (34, False)],
)
def test_workspace_name_length(length: int, ok: bool) -> None:
    name = "w" * length
    if ok:
        assert check_workspace_name(name) == name
    else:
        with pytest.raises(InvalidNameError, match=f"has {length} characters; it must have 3 to 33") as info:
            check_workspace_name(name)
        assert "3-33 characters" in (info.value.hint or "")


@pytest.mark.parametrize("length, ok", [(1, False), (2, True), (16, True), (17, False)])
def test_compute_name_length(length: int, ok: bool) -> None:
    name = "c" * length
    if ok:
        assert check_compute_name(name) == name
    else:
        with pytest.raises(InvalidNameError, match="2 to 16"):
            check_compute_name(name)


@pytest.mark.parametrize("length, ok", [(2, False), (3, True), (36, True), (37, False)])
def test_experiment_name_length(length: int, ok: bool) -> None:
    name = "e" * length
    if ok:
        assert check_experiment_name(name) == name
    else:
        with pytest.raises(InvalidNameError, match="3 to 36"):
            check_experiment_name(name)


@pytest.mark.parametrize("name", ["my-ws-1", "WS9", "0start", "a-b-c"])
def test_good_workspace_names(name: str) -> None:
    assert check_workspace_name(name) == name


@pytest.mark.parametrize(
    "name", ["-lead", "my_ws", "my ws", "my.ws", "wś-1", "ws/1", "ws\\1", "ws\x00x", "ws\n1", "ws!", "../ws"]
)
def test_bad_workspace_characters(name: str) -> None:
    with pytest.raises(InvalidNameError, match="letters, digits and hyphens"):
        check_workspace_name(name)


@pytest.mark.parametrize("name", ["-gpu", "gpu_1", "gpu 1", "gpu.1", "gpü", "g/1"])
def test_bad_compute_characters(name: str) -> None:
    with pytest.raises(InvalidNameError):
        check_compute_name(name)


@pytest.mark.parametrize("name", ["flowers_v2", "cats-dogs", "1st", "A_b-C"])
def test_good_experiment_names(name: str) -> None:
    assert check_experiment_name(name) == name


@pytest.mark.parametrize("name", ["_lead", "-lead", "has space", "dot.name", "é-accent", "semi;colon"])
def test_bad_experiment_characters(name: str) -> None:
    with pytest.raises(InvalidNameError):
        check_experiment_name(name)


@pytest.mark.parametrize("value", [None, 12, b"bytes", ["list"]])
def test_names_must_be_strings(value: object) -> None:
    for check in (check_workspace_name, check_compute_name, check_experiment_name, check_resource_group_name):
        with pytest.raises(InvalidNameError, match="must be a string"):
            check(value)


def test_resource_group_names() -> None:
    assert check_resource_group_name("rg") == "rg"
    assert check_resource_group_name("my.rg_(1)-x") == "my.rg_(1)-x"
    for bad in ["", "r" * 91, "-rg", "rg/1", "rg 1"]:
        with pytest.raises(InvalidNameError):
            check_resource_group_name(bad)


@pytest.mark.parametrize(
    "folder, expected",
    [
        ("flowers", "flowers"),
        ("my photos!", "my-photos"),
        ("ab", "ab-x"),
        ("", "experiment"),
        ("x" * 50, "x" * 36),
    ],
)
def test_experiment_name_from_folder(folder: str, expected: str) -> None:
    derived = experiment_name_from(folder)
    assert derived == expected and check_experiment_name(derived) == derived
