"""add_delivery_queue_fields: what the job queue needs on `deliveryjob`.

Attempts and the last error for retries with backoff; a lease (owner and expiry) so a job runs
on one worker at a time and a dead worker's job is picked up again; a cancel request a running
job's worker sees; progress; and the negative prompt and composed adapters the back ends send.
Every new NOT NULL column has a server default, so existing rows need no UPDATE.

Revision ID: a7d2f5c8e3b6
Revises: f3c6e8a1b9d5
Create Date: 2026-11-30 17:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a7d2f5c8e3b6"
down_revision: str | Sequence[str] | None = "f3c6e8a1b9d5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deliveryjob") as batch:
        batch.add_column(sa.Column("negative_prompt", sa.Text(), nullable=True))
        batch.add_column(sa.Column("adapters", sa.JSON(), nullable=True))
        batch.add_column(
            sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch.add_column(
            sa.Column("max_attempts", sa.Integer(), nullable=False, server_default=sa.text("3"))
        )
        batch.add_column(sa.Column("last_error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("lease_owner", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("next_attempt_at", sa.DateTime(), nullable=True))
        batch.add_column(
            sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("progress", sa.Float(), nullable=True))
    # The sweeper's two questions: which running leases expired, which pending jobs are due.
    op.create_index("ix_deliveryjob_status_lease", "deliveryjob", ["status", "lease_expires_at"])
    op.create_index("ix_deliveryjob_status_due", "deliveryjob", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_deliveryjob_status_due", table_name="deliveryjob")
    op.drop_index("ix_deliveryjob_status_lease", table_name="deliveryjob")
    with op.batch_alter_table("deliveryjob") as batch:
        batch.drop_column("progress")
        batch.drop_column("cancel_requested")
        batch.drop_column("next_attempt_at")
        batch.drop_column("lease_expires_at")
        batch.drop_column("lease_owner")
        batch.drop_column("last_error")
        batch.drop_column("max_attempts")
        batch.drop_column("attempts")
        batch.drop_column("adapters")
        batch.drop_column("negative_prompt")
