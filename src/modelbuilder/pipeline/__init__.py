"""modelbuilder.pipeline."""
