"""add_recommendation_tables: sessions, preferences, embeddings and feedback.

Unlike the original revision, this one does not drop the eight indexes of 952b85546fed
(an autogenerate accident there); b7e2c4a91d30 restores them on databases that lost them.

Revision ID: 7ef61e651ef8
Revises: 952b85546fed
Create Date: 2025-03-21 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7ef61e651ef8"
down_revision: str | Sequence[str] | None = "952b85546fed"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "recommendationsession",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("context_prompt", sa.Text(), nullable=True),
        sa.Column("active_loras", sa.JSON(), nullable=True),
        sa.Column("target_lora_id", sa.String(), nullable=True),
        sa.Column("recommendation_type", sa.String(), nullable=False),
        sa.Column("recommendations", sa.JSON(), nullable=True),
        sa.Column("user_feedback", sa.JSON(), nullable=True),
        sa.Column("generated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recommendationsession")),
    )
    op.create_table(
        "userpreference",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("preference_type", sa.String(), nullable=False),
        sa.Column("preference_value", sa.String(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("learned_from", sa.String(), nullable=False),
        sa.Column("evidence_count", sa.Integer(), nullable=False),
        sa.Column("last_evidence_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_userpreference")),
    )
    op.create_table(
        "loraembedding",
        sa.Column("adapter_id", sa.String(), nullable=False),
        sa.Column("semantic_embedding", sa.LargeBinary(), nullable=True),
        sa.Column("artistic_embedding", sa.LargeBinary(), nullable=True),
        sa.Column("technical_embedding", sa.LargeBinary(), nullable=True),
        sa.Column("extracted_keywords", sa.JSON(), nullable=True),
        sa.Column("keyword_scores", sa.JSON(), nullable=True),
        sa.Column("predicted_style", sa.String(), nullable=True),
        sa.Column("style_confidence", sa.Float(), nullable=True),
        sa.Column("sentiment_label", sa.String(), nullable=True),
        sa.Column("sentiment_score", sa.Float(), nullable=True),
        sa.Column("quality_score", sa.Float(), nullable=True),
        sa.Column("popularity_score", sa.Float(), nullable=True),
        sa.Column("recency_score", sa.Float(), nullable=True),
        sa.Column("compatibility_score", sa.Float(), nullable=True),
        sa.Column("last_computed", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["adapter_id"], ["adapter.id"], name=op.f("fk_loraembedding_adapter_id_adapter")
        ),
        sa.PrimaryKeyConstraint("adapter_id", name=op.f("pk_loraembedding")),
    )
    op.create_table(
        "recommendationfeedback",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("session_id", sa.String(), nullable=False),
        sa.Column("recommended_lora_id", sa.String(), nullable=False),
        sa.Column("feedback_type", sa.String(), nullable=False),
        sa.Column("feedback_reason", sa.String(), nullable=True),
        sa.Column("implicit_signal", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["recommendationsession.id"],
            name=op.f("fk_recommendationfeedback_session_id_recommendationsession"),
        ),
        sa.ForeignKeyConstraint(
            ["recommended_lora_id"],
            ["adapter.id"],
            name=op.f("fk_recommendationfeedback_recommended_lora_id_adapter"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recommendationfeedback")),
    )


def downgrade() -> None:
    op.drop_table("recommendationfeedback")
    op.drop_table("loraembedding")
    op.drop_table("userpreference")
    op.drop_table("recommendationsession")
