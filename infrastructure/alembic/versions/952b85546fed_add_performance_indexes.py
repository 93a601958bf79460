"""add_performance_indexes: the catalog's and the job list's common filters and sorts.

Revision ID: 952b85546fed
Revises: cbab2373ecb9
Create Date: 2025-03-07 10:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "952b85546fed"
down_revision: str | Sequence[str] | None = "cbab2373ecb9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("idx_adapter_active", "adapter", ["active"]),
    ("idx_adapter_ordinal", "adapter", ["ordinal"]),
    ("idx_adapter_name", "adapter", ["name"]),
    ("idx_adapter_created_at", "adapter", ["created_at"]),
    ("idx_adapter_active_ordinal", "adapter", ["active", "ordinal"]),
    ("idx_deliveryjob_status", "deliveryjob", ["status"]),
    ("idx_deliveryjob_created_at", "deliveryjob", ["created_at"]),
    ("idx_deliveryjob_mode", "deliveryjob", ["mode"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
