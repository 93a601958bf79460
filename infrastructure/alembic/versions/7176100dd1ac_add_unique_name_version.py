"""add_unique_name_version: one adapter per (name, version).

Revision ID: 7176100dd1ac
Revises: 5f681a8fe826
Create Date: 2025-01-24 10:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "7176100dd1ac"
down_revision: str | Sequence[str] | None = "5f681a8fe826"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ux_adapter_name_version", "adapter", ["name", "version"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_adapter_name_version", table_name="adapter")
