"""The quality posterior per (route, request class, model), folded by the monitor's leader, and the
request class on each raw outcome sample (feedback on an answer finds its class there).

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quality_stats",
        sa.Column("route", sa.String(253), primary_key=True),
        sa.Column("cls", sa.String(200), primary_key=True),
        sa.Column("model", sa.String(253), primary_key=True),
        sa.Column("successes", sa.Float, nullable=False),
        sa.Column("failures", sa.Float, nullable=False),
        sa.Column("scores", sa.Float, nullable=False),
        sa.Column("score_sum", sa.Float, nullable=False),
        sa.Column("score_sq", sa.Float, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )
    with op.batch_alter_table("outcome_samples") as batch:
        batch.add_column(sa.Column("cls", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outcome_samples") as batch:
        batch.drop_column("cls")
    op.drop_table("quality_stats")
