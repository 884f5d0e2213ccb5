"""Alembic revisions of the machine's catalog (one file per revision; never edit a released one)."""
