"""modelbuilder.portal."""
