"""Baseline: the catalog as modelbuilder 0.1.0 created it (commit 730d4f1, schema version 1).

Frozen: never edit this file; change the schema with a new revision.

Revision ID: c0001
Revises: (none)
"""

import sqlalchemy as sa
from alembic import op

revision = "c0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "resource_groups",
        sa.Column("name_key", sa.String(length=90), nullable=False),
        sa.Column("name", sa.String(length=90), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("name_key", name=op.f("pk_resource_groups")),
    )
    op.create_table(
        "workspaces",
        sa.Column("name_key", sa.String(length=33), nullable=False),
        sa.Column("name", sa.String(length=33), nullable=False),
        sa.Column("resource_group_key", sa.String(length=90), nullable=False),
        sa.Column("region", sa.String(length=64), nullable=False),
        sa.Column("store_url", sa.Text(), nullable=False),
        sa.Column("artifact_root", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["resource_group_key"],
            ["resource_groups.name_key"],
            name=op.f("fk_workspaces_resource_group_key_resource_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("name_key", name=op.f("pk_workspaces")),
    )
    op.create_index(
        op.f("ix_workspaces_resource_group_key"), "workspaces", ["resource_group_key"], unique=False
    )


def downgrade() -> None:
    op.drop_table("workspaces")
    op.drop_table("resource_groups")
