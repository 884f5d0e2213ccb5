"""modelbuilder.artifacts."""
