"""modelbuilder: turn a folder of labelled images into a shippable image classifier."""

