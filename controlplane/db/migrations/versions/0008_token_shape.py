"""API tokens get the API keys' shape: a visible prefix, an expiry, the last use, and a previous
secret that stays valid for a grace period after a rotation.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("prefix", sa.String(32), nullable=False, server_default=""))
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("previous_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("previous_valid_until", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_api_tokens_previous_hash", "api_tokens", ["previous_hash"])


def downgrade() -> None:
    op.drop_index("ix_api_tokens_previous_hash", table_name="api_tokens")
    with op.batch_alter_table("api_tokens") as batch:
        for column in ("previous_valid_until", "previous_hash", "rotated_at", "last_used_at", "expires_at", "prefix"):
            batch.drop_column(column)
