"""modelbuilder.data."""
