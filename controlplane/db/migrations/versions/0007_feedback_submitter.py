"""Feedback records who submitted it, one row per (request, submitter); outcome samples are
found by request id through an index.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(sa.Column("submitter", sa.String(200), nullable=False, server_default=""))
    # rows from before: the newest per request stays (they had no submitter to tell them apart)
    op.execute("DELETE FROM feedback WHERE id NOT IN (SELECT MAX(id) FROM feedback GROUP BY request_id, submitter)")
    op.create_index("ux_feedback_request_submitter", "feedback", ["request_id", "submitter"], unique=True)
    op.create_index("ix_outcome_sample_request", "outcome_samples", ["request_id"])


def downgrade() -> None:
    op.drop_index("ix_outcome_sample_request", table_name="outcome_samples")
    op.drop_index("ux_feedback_request_submitter", table_name="feedback")
    with op.batch_alter_table("feedback") as batch:
        batch.drop_column("submitter")
