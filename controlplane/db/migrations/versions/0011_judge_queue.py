"""The LLM judge's queue in SQL: answers to judge, written with the fold of their outcomes and
removed with their score, so a failover neither drops nor repeats a judgement.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "judge_queue",
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("record", sa.Text, nullable=False),
    )
    op.create_index("ix_judge_queue_at", "judge_queue", ["at"])


def downgrade() -> None:
    op.drop_index("ix_judge_queue_at", table_name="judge_queue")
    op.drop_table("judge_queue")
