"""add_loraembedding_trigger_columns: normalised triggers, aliases and their embeddings.

Revision ID: f0a1b2c3d4e5
Revises: e3c1f6a5c2b8
Create Date: 2025-05-02 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f0a1b2c3d4e5"
down_revision: str | Sequence[str] | None = "e3c1f6a5c2b8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    ("normalized_triggers", "'[]'"),
    ("trigger_aliases", "'{}'"),
    ("trigger_embeddings", "'[]'"),
    ("trigger_metadata", "'{}'"),
)


def upgrade() -> None:
    with op.batch_alter_table("loraembedding") as batch:
        for name, default in COLUMNS:
            batch.add_column(
                sa.Column(name, sa.JSON(), nullable=False, server_default=sa.text(default))
            )


def downgrade() -> None:
    with op.batch_alter_table("loraembedding") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
