"""add_embedding_model_and_runs: what the recommendations need to keep vectors honest.

Each stored vector records the model that made it, its dimension and a hash of the text it
was computed from, so a changed model or an edited adapter is found and recomputed; and
`embeddingrun` records every (re)computation the workers carry out, with its progress and a
heartbeat (a run whose worker died is taken up again).

Revision ID: b9e4c2d7f1a3
Revises: a7d2f5c8e3b6
Create Date: 2026-11-30 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b9e4c2d7f1a3"
down_revision: str | Sequence[str] | None = "a7d2f5c8e3b6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("loraembedding") as batch:
        batch.add_column(sa.Column("embedding_model", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("embedding_dim", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("source_hash", sa.String(length=64), nullable=True))
    # The vector index's freshness check (count and latest update per model) reads only this.
    op.create_index(
        "ix_loraembedding_model_updated", "loraembedding", ["embedding_model", "updated_at"]
    )
    op.create_table(
        "embeddingrun",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("adapter_ids", sa.JSON(), nullable=True),
        sa.Column("force", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("total", sa.Integer(), nullable=True),
        sa.Column("done", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_embeddingrun")),
    )
    op.create_index("ix_embeddingrun_created_at", "embeddingrun", ["created_at"])
    op.create_index("ix_embeddingrun_status", "embeddingrun", ["status"])


def downgrade() -> None:
    op.drop_index("ix_embeddingrun_status", table_name="embeddingrun")
    op.drop_index("ix_embeddingrun_created_at", table_name="embeddingrun")
    op.drop_table("embeddingrun")
    op.drop_index("ix_loraembedding_model_updated", table_name="loraembedding")
    with op.batch_alter_table("loraembedding") as batch:
        batch.drop_column("source_hash")
        batch.drop_column("embedding_dim")
        batch.drop_column("embedding_model")
