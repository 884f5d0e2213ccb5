"""The ``modelbuilder`` command line (Typer + rich). ``main`` is the console-script entry point."""

from __future__ import annotations

from .app import app, main

__all__ = ["app", "main"]
