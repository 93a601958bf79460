"""add_catalog_user_and_ingest_fields: what the importer and the catalog API need.

User-owned fields (favourite, rating with the time it was set, notes, user tags), the file's
own identity (computed SHA-256, AutoV2, tensor hash, size, mtime, real path, format), merged
metadata the catalog filters and sorts on (base model, preferred weight, downloads), ingestion
state (status, error, missing since, sidecar sizes and mtimes), and `adaptertag`, one row per
tag of an adapter so tag filters and counts use an index instead of scanning JSON.

Revision ID: d8f3a2b6c1e4
Revises: c4d8e1f2a6b9
Create Date: 2026-11-24 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d8f3a2b6c1e4"
down_revision: str | Sequence[str] | None = "c4d8e1f2a6b9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _columns() -> tuple[sa.Column, ...]:
    return (
        sa.Column("is_favorite", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("favorite_updated_at", sa.DateTime(), nullable=True),
        sa.Column("rating", sa.Integer(), nullable=True),
        sa.Column("rating_updated_at", sa.DateTime(), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("user_tags", sa.JSON(), nullable=True),
        sa.Column("base_model", sa.String(), nullable=True),
        sa.Column("preferred_weight", sa.Float(), nullable=True),
        sa.Column("download_count", sa.Integer(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("autov2", sa.String(length=10), nullable=True),
        sa.Column("tensor_sha256", sa.String(length=64), nullable=True),
        sa.Column("declared_sha256", sa.String(length=64), nullable=True),
        sa.Column("file_size", sa.BigInteger(), nullable=True),
        sa.Column("file_mtime_ns", sa.BigInteger(), nullable=True),
        sa.Column("real_path", sa.String(), nullable=True),
        sa.Column("library_root", sa.String(), nullable=True),
        sa.Column("file_format", sa.String(length=16), nullable=True),
        sa.Column("preview_path", sa.String(), nullable=True),
        sa.Column("sidecar_state", sa.JSON(), nullable=True),
        sa.Column("ingest_status", sa.String(length=16), nullable=False, server_default="ok"),
        sa.Column("ingest_error", sa.Text(), nullable=True),
        sa.Column("missing_since", sa.DateTime(), nullable=True),
        sa.Column("search_text", sa.Text(), nullable=True),
    )


INDEXES = (
    ("ix_adapter_is_favorite", ["is_favorite"], False),
    ("ix_adapter_rating", ["rating"], False),
    ("ix_adapter_base_model", ["base_model"], False),
    ("ix_adapter_sha256", ["sha256"], False),
    ("ux_adapter_real_path", ["real_path"], True),
    ("ix_adapter_ingest_status", ["ingest_status"], False),
    ("ix_adapter_published_at", ["published_at"], False),
    ("ix_adapter_file_size", ["file_size"], False),
    ("ix_adapter_download_count", ["download_count"], False),
)


def upgrade() -> None:
    with op.batch_alter_table("adapter") as batch:
        for column in _columns():
            batch.add_column(column)
    for name, columns, unique in INDEXES:
        op.create_index(name, "adapter", columns, unique=unique)
    op.create_table(
        "adaptertag",
        sa.Column("adapter_id", sa.String(), nullable=False),
        sa.Column("tag", sa.String(), nullable=False),
        sa.Column("is_user", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.ForeignKeyConstraint(
            ["adapter_id"],
            ["adapter.id"],
            name=op.f("fk_adaptertag_adapter_id_adapter"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("adapter_id", "tag", name=op.f("pk_adaptertag")),
    )
    op.create_index("ix_adaptertag_tag", "adaptertag", ["tag"])


def downgrade() -> None:
    op.drop_index("ix_adaptertag_tag", table_name="adaptertag")
    op.drop_table("adaptertag")
    for name, _, _ in reversed(INDEXES):
        op.drop_index(name, table_name="adapter")
    with op.batch_alter_table("adapter") as batch:
        for column in reversed(_columns()):
            batch.drop_column(column.name)
