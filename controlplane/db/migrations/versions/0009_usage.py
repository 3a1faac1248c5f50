"""Usage per time bucket and API key, tenant, route and model: requests, prompt and completion
tokens, and how many of them the router estimated.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_buckets",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("bucket", sa.Integer, nullable=False),
        sa.Column("api_key", sa.String(253), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("route", sa.String(253), nullable=False),
        sa.Column("model", sa.String(253), nullable=False),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.Column("estimated", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("bucket", "api_key", "tenant", "route", "model", name="uq_usage_bucket"),
    )
    op.create_index("ix_usage_buckets_bucket", "usage_buckets", ["bucket"])
    op.create_index("ix_usage_bucket_tenant", "usage_buckets", ["tenant", "bucket"])


def downgrade() -> None:
    op.drop_index("ix_usage_bucket_tenant", table_name="usage_buckets")
    op.drop_index("ix_usage_buckets_bucket", table_name="usage_buckets")
    op.drop_table("usage_buckets")
