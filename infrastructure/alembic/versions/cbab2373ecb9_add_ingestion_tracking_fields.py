"""add_ingestion_tracking_fields: what the importer needs to rescan without rereading.

Revision ID: cbab2373ecb9
Revises: d16f3e1df8bd
Create Date: 2025-02-21 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "cbab2373ecb9"
down_revision: str | Sequence[str] | None = "d16f3e1df8bd"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    ("json_file_path", sa.String()),
    ("json_file_mtime", sa.DateTime()),
    ("json_file_size", sa.Integer()),
    ("last_ingested_at", sa.DateTime()),
)


def upgrade() -> None:
    with op.batch_alter_table("adapter") as batch:
        for name, type_ in COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("adapter") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
