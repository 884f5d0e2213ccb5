"""Alembic revisions of the workspace store (one file per revision; never edit a released one)."""
