"""Alembic environment of modelbuilder's databases (the workspace store and the catalog).

Alembic runs this file for every migration command. modelbuilder calls Alembic from code, on a connection
that is already inside one of its write transactions (see ``migrations.__init__``), so there is no
``alembic.ini`` and no URL here: the connection and the target metadata come in ``config.attributes``.
"""

from alembic import context

config = context.config
context.configure(
    connection=config.attributes["connection"],
    target_metadata=config.attributes["metadata"],
    render_as_batch=True,  # SQLite cannot ALTER most things: generated revisions use batch operations
    compare_type=True,
)
# The caller's transaction is already open, so this begins nothing: the whole upgrade commits (or rolls
# back) with it.
with context.begin_transaction():
    context.run_migrations()
