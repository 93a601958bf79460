"""add_delivery_job_rating_and_favorites: users rate and star generation jobs.

The new boolean gets a server default of false, so existing rows need no UPDATE (the
original ran one that put the integer 0 into the boolean, which PostgreSQL rejects).

Revision ID: e3c1f6a5c2b8
Revises: a1f4d5d0b6c7
Create Date: 2025-04-18 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e3c1f6a5c2b8"
down_revision: str | Sequence[str] | None = "a1f4d5d0b6c7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deliveryjob") as batch:
        batch.add_column(sa.Column("rating", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("is_favorite", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("rating_updated_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("favorite_updated_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveryjob") as batch:
        batch.drop_column("favorite_updated_at")
        batch.drop_column("rating_updated_at")
        batch.drop_column("is_favorite")
        batch.drop_column("rating")
