"""Fine-tuning: at most one active job per output model (a partial unique index).

Two jobs submitted at the same instant for the same output model both passed the service's "no
active job" read; the index makes the second insert fail instead. Rows that already break the rule
(left by that race) keep their oldest job; the others are marked failed with the reason.

Revision ID: 0004
Revises: 0003
"""

import time

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ACTIVE = "state IN ('queued', 'running', 'registering')"


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.text(f"SELECT id, output_model FROM finetune_jobs WHERE {ACTIVE} ORDER BY created_at, id")).all()
    seen: set[str] = set()
    for job_id, output in rows:
        if output in seen:
            conn.execute(
                sa.text("UPDATE finetune_jobs SET state = 'failed', error = :error, finished_at = :now WHERE id = :id"),
                {"error": f"another job was making model '{output}' already", "now": time.time(), "id": job_id},
            )
        seen.add(output)
    op.create_index(
        "ux_finetune_active_output", "finetune_jobs", ["output_model"], unique=True,
        postgresql_where=sa.text(ACTIVE), sqlite_where=sa.text(ACTIVE),
    )  # fmt: skip


def downgrade() -> None:
    op.drop_index("ux_finetune_active_output", table_name="finetune_jobs")
