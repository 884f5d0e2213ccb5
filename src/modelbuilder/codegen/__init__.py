"""modelbuilder.codegen."""
