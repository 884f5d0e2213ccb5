"""modelbuilder.cli."""
