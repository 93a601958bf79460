"""add_import_runs: imports started through the API, with their progress and summary.

Revision ID: f3c6e8a1b9d5
Revises: e1b7c9d4a6f2
Create Date: 2026-11-24 09:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f3c6e8a1b9d5"
down_revision: str | Sequence[str] | None = "e1b7c9d4a6f2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "importrun",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("roots", sa.JSON(), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("progress", sa.JSON(), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_importrun")),
    )
    op.create_index("ix_importrun_created_at", "importrun", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_importrun_created_at", table_name="importrun")
    op.drop_table("importrun")
