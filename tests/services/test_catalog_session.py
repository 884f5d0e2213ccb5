"""A held catalog (``open_catalog``): the portal reads resource groups and workspaces through it on every
request without opening the catalog file each time."""

from __future__ import annotations

import pytest

from modelbuilder.errors import WorkspaceNotFoundError
from modelbuilder.services import workspaces as service


def test_reads_use_the_held_catalog_and_see_changes_made_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    service.create_workspace("vision-ws", resource_group="team-a")
    with service.open_catalog() as held:

        def no_new_catalog(*args: object, **kwargs: object) -> None:
            raise AssertionError("a read with catalog= opened the catalog again")

        with monkeypatch.context() as patched:
            patched.setattr(service, "Catalog", no_new_catalog)
            groups = service.list_resource_groups(catalog=held)
            assert [(g.name, [w.name for w in held_ws]) for g, held_ws in groups] == [
                ("team-a", ["vision-ws"])
            ]
            assert service.get_workspace("VISION-WS", catalog=held).name == "vision-ws"
            assert service.find_workspace("nope-ws", catalog=held) is None
            assert [w.name for w in service.list_workspaces("team-a", catalog=held)] == ["vision-ws"]
            with pytest.raises(WorkspaceNotFoundError):
                service.get_workspace("nope-ws", catalog=held)
        service.create_workspace("other-ws", resource_group="team-b")  # another process would do the same
        assert [w.name for w in service.list_workspaces(catalog=held)] == ["other-ws", "vision-ws"]
    # Without catalog= each call opens the catalog for itself, as commands do.
    assert service.find_workspace("other-ws") is not None
