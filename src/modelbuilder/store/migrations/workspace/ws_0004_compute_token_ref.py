"""``computes.token_ref``: the name of the environment variable that holds a compute's cluster token (Ray's
token mode), so a compute rebuilt from the store still reaches a token-protected cluster. Only the name is
stored, never the token. Nullable: computes recorded before have no token, as they had none before.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("computes") as batch:
        batch.add_column(sa.Column("token_ref", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("computes") as batch:
        batch.drop_column("token_ref")
