"""add_complete_civitai_fields: the Civitai model-version data on each adapter.

`tags` is already a JSON column since the initial revision; it is left alone here (the
original also "altered" it and its downgrade turned it into a string column).

Revision ID: d16f3e1df8bd
Revises: 7176100dd1ac
Create Date: 2025-02-07 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d16f3e1df8bd"
down_revision: str | Sequence[str] | None = "7176100dd1ac"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    ("canonical_version_name", sa.String(), True, None),
    ("description", sa.String(), True, None),
    ("author_username", sa.String(), True, None),
    ("visibility", sa.String(), False, sa.text("'Public'")),
    ("published_at", sa.DateTime(), True, None),
    ("trained_words", sa.JSON(), True, None),
    ("triggers", sa.JSON(), True, None),
    ("primary_file_name", sa.String(), True, None),
    ("primary_file_size_kb", sa.Integer(), True, None),
    ("primary_file_sha256", sa.String(), True, None),
    ("primary_file_download_url", sa.String(), True, None),
    ("primary_file_local_path", sa.String(), True, None),
    ("supports_generation", sa.Boolean(), False, sa.false()),
    ("sd_version", sa.String(), True, None),
    ("nsfw_level", sa.Integer(), False, sa.text("0")),
    ("activation_text", sa.String(), True, None),
    ("stats", sa.JSON(), True, None),
    ("extra", sa.JSON(), True, None),
)


def upgrade() -> None:
    with op.batch_alter_table("adapter") as batch:
        for name, type_, nullable, default in COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=nullable, server_default=default))


def downgrade() -> None:
    with op.batch_alter_table("adapter") as batch:
        for name, *_ in reversed(COLUMNS):
            batch.drop_column(name)
