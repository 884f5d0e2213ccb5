"""modelbuilder.training."""
