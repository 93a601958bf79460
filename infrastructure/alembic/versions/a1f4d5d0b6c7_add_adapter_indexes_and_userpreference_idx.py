"""add_adapter_indexes_and_userpreference_idx: indexes for rescans and preference lookups.

The original also re-created idx_adapter_active and idx_adapter_created_at, which its
previous revision had dropped by accident; here they were never dropped.

Revision ID: a1f4d5d0b6c7
Revises: 7ef61e651ef8
Create Date: 2025-04-04 10:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "a1f4d5d0b6c7"
down_revision: str | Sequence[str] | None = "7ef61e651ef8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("idx_adapter_json_file_path", "adapter", ["json_file_path"]),
    ("idx_adapter_updated_at", "adapter", ["updated_at"]),
    ("idx_adapter_last_ingested_at", "adapter", ["last_ingested_at"]),
    ("ix_userpreference_type_value", "userpreference", ["preference_type", "preference_value"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
