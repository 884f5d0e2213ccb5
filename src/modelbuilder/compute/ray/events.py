"""The Ray job's event lines are ``compute.events``' (one codec for every backend); this name is kept only
for modules written against it before. New code imports ``modelbuilder.compute.events``."""

from __future__ import annotations

from ..events import EventWriter, digest

__all__ = ["EventWriter", "digest"]
