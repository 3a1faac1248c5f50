"""Audit rows name the store epoch (the history their revision belongs to); revisions are 64-bit.

Rows written before epochs existed keep a null epoch until the control plane adopts them into
the store's first epoch (when the store still holds what they say).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_entries") as batch:  # batch: SQLite cannot alter a column in place
        batch.add_column(sa.Column("epoch", sa.String(32), nullable=True))
        batch.alter_column("revision", existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=True)
        batch.create_index("ix_audit_epoch_revision", ["epoch", "revision"])


def downgrade() -> None:
    with op.batch_alter_table("audit_entries") as batch:
        batch.drop_index("ix_audit_epoch_revision")
        batch.alter_column("revision", existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=True)
        batch.drop_column("epoch")
