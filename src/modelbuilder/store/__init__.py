"""modelbuilder.store."""
