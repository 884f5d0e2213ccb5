"""A run's error as type, message and hint: ``runs.error_type`` and ``runs.error_hint`` (``runs.error``
keeps the message). Nullable, so runs recorded before keep their error text with no type or hint.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("error_type", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("error_hint", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("error_hint")
        batch.drop_column("error_type")
