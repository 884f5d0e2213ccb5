"""``workspace_properties``: what the store knows about its own workspace (its name, its artifact root), so
another machine can attach to a shared workspace from the store URL alone.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workspace_properties",
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_workspace_properties")),
    )


def downgrade() -> None:
    op.drop_table("workspace_properties")
