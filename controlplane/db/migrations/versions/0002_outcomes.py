"""The performance monitor's tables: outcome buckets, raw samples, feedback, stream offsets.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

def _names() -> list[sa.Column]:  # type: ignore[type-arg]
    return [sa.Column(n, sa.String(253), nullable=False) for n in ("route", "model", "node", "variant")]


def upgrade() -> None:
    op.create_table(
        "outcome_buckets",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("bucket", sa.Integer(), nullable=False),
        *_names(),
        *[sa.Column(n, sa.Integer(), nullable=False) for n in ("requests", "ok", "errors", "cancelled")],
        sa.Column("total_ms_sum", sa.Float(), nullable=False),
        sa.Column("ttft_ms_sum", sa.Float(), nullable=False),
        sa.Column("tokens_sum", sa.Integer(), nullable=False),
        sa.Column("tps_sum", sa.Float(), nullable=False),
        sa.Column("tps_n", sa.Integer(), nullable=False),
        sa.Column("latency_hist", sa.JSON(), nullable=False),
        sa.Column("ttft_hist", sa.JSON(), nullable=False),
        sa.Column("signals", sa.JSON(), nullable=False),
        sa.UniqueConstraint("bucket", "route", "model", "node", "variant", name="uq_outcome_bucket"),
    )
    op.create_index("ix_outcome_buckets_bucket", "outcome_buckets", ["bucket"])
    op.create_index("ix_outcome_bucket_model", "outcome_buckets", ["model", "bucket"])
    op.create_table(
        "outcome_samples",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(64), nullable=False, unique=True),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        *_names(),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("total_ms", sa.Float(), nullable=False),
        sa.Column("ttft_ms", sa.Float(), nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=True),
        sa.Column("tokens_per_s", sa.Float(), nullable=True),
        sa.Column("signals", sa.JSON(), nullable=False),
    )
    op.create_index("ix_outcome_sample_at", "outcome_samples", ["at"])
    op.create_index("ix_outcome_sample_model", "outcome_samples", ["model", "at"])
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        *_names(),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("thumbs", sa.String(8), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
    )
    op.create_index("ix_feedback_request", "feedback", ["request_id"])
    op.create_index("ix_feedback_model", "feedback", ["model", "at"])
    op.create_table(
        "monitor_offsets",
        sa.Column("stream", sa.String(200), primary_key=True),
        sa.Column("last_id", sa.String(64), nullable=False),
        sa.Column("applied", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("monitor_offsets")
    op.drop_table("feedback")
    op.drop_table("outcome_samples")
    op.drop_table("outcome_buckets")
