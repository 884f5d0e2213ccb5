"""modelbuilder.compute."""
