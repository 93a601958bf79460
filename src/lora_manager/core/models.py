"""Every table at head: the one place Alembic's autogenerate and `db check` compare to.

The shapes follow docs/SCHEMA.md (the seed's nine revisions) plus this project's later
revisions. Index names are the seed's; every other constraint is named by the convention.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    """Naive UTC: the schema stores timestamps without time zone, holding UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Adapter(Base):
    __tablename__ = "adapter"
    __table_args__ = (
        Index("ux_adapter_name_version", "name", "version", unique=True),
        Index("idx_adapter_active", "active"),
        Index("idx_adapter_ordinal", "ordinal"),
        Index("idx_adapter_name", "name"),
        Index("idx_adapter_created_at", "created_at"),
        Index("idx_adapter_active_ordinal", "active", "ordinal"),
        Index("idx_adapter_json_file_path", "json_file_path"),
        Index("idx_adapter_updated_at", "updated_at"),
        Index("idx_adapter_last_ingested_at", "last_ingested_at"),
        Index("ix_adapter_is_favorite", "is_favorite"),
        Index("ix_adapter_rating", "rating"),
        Index("ix_adapter_base_model", "base_model"),
        Index("ix_adapter_sha256", "sha256"),
        Index("ux_adapter_real_path", "real_path", unique=True),
        Index("ix_adapter_ingest_status", "ingest_status"),
        Index("ix_adapter_published_at", "published_at"),
        Index("ix_adapter_file_size", "file_size"),
        Index("ix_adapter_download_count", "download_count"),
    )

    id: Mapped[str] = mapped_column(String, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String)
    version: Mapped[str | None] = mapped_column(String)
    tags: Mapped[list[str] | None] = mapped_column(JSON)
    file_path: Mapped[str] = mapped_column(String)
    weight: Mapped[float] = mapped_column(Float, default=1.0)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    ordinal: Mapped[int | None] = mapped_column(Integer)
    archetype: Mapped[str | None] = mapped_column(String)
    archetype_confidence: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    # Civitai fields (revision d16f3e1df8bd)
    canonical_version_name: Mapped[str | None] = mapped_column(String)
    description: Mapped[str | None] = mapped_column(String)
    author_username: Mapped[str | None] = mapped_column(String)
    visibility: Mapped[str] = mapped_column(String, default="Public", server_default="Public")
    published_at: Mapped[datetime | None] = mapped_column(DateTime)
    trained_words: Mapped[list[str] | None] = mapped_column(JSON)
    triggers: Mapped[list[str] | None] = mapped_column(JSON)
    primary_file_name: Mapped[str | None] = mapped_column(String)
    primary_file_size_kb: Mapped[int | None] = mapped_column(Integer)
    primary_file_sha256: Mapped[str | None] = mapped_column(String)
    primary_file_download_url: Mapped[str | None] = mapped_column(String)
    primary_file_local_path: Mapped[str | None] = mapped_column(String)
    supports_generation: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    sd_version: Mapped[str | None] = mapped_column(String)
    nsfw_level: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    activation_text: Mapped[str | None] = mapped_column(String)
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    # Ingestion tracking (revision cbab2373ecb9)
    json_file_path: Mapped[str | None] = mapped_column(String)
    json_file_mtime: Mapped[datetime | None] = mapped_column(DateTime)
    json_file_size: Mapped[int | None] = mapped_column(Integer)
    last_ingested_at: Mapped[datetime | None] = mapped_column(DateTime)

    # Catalog and ingestion (revision d8f3a2b6c1e4). User-owned: is_favorite, rating, notes,
    # user_tags (with active, weight, ordinal above); an import never writes them.
    is_favorite: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    favorite_updated_at: Mapped[datetime | None] = mapped_column(DateTime)
    rating: Mapped[int | None] = mapped_column(Integer)
    rating_updated_at: Mapped[datetime | None] = mapped_column(DateTime)
    notes: Mapped[str | None] = mapped_column(Text)
    user_tags: Mapped[list[str] | None] = mapped_column(JSON)
    base_model: Mapped[str | None] = mapped_column(String)
    preferred_weight: Mapped[float | None] = mapped_column(Float)
    download_count: Mapped[int | None] = mapped_column(Integer)
    sha256: Mapped[str | None] = mapped_column(String(64))
    autov2: Mapped[str | None] = mapped_column(String(10))
    tensor_sha256: Mapped[str | None] = mapped_column(String(64))
    declared_sha256: Mapped[str | None] = mapped_column(String(64))
    file_size: Mapped[int | None] = mapped_column(BigInteger)
    file_mtime_ns: Mapped[int | None] = mapped_column(BigInteger)
    real_path: Mapped[str | None] = mapped_column(String)
    library_root: Mapped[str | None] = mapped_column(String)
    file_format: Mapped[str | None] = mapped_column(String(16))
    preview_path: Mapped[str | None] = mapped_column(String)
    sidecar_state: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    ingest_status: Mapped[str] = mapped_column(String(16), default="ok", server_default="ok")
    ingest_error: Mapped[str | None] = mapped_column(Text)
    missing_since: Mapped[datetime | None] = mapped_column(DateTime)
    search_text: Mapped[str | None] = mapped_column(Text)

    @property
    def has_preview(self) -> bool:
        return self.preview_path is not None


class AdapterTag(Base):
    """One tag of one adapter (metadata or the user's), for indexed tag filters and counts."""

    __tablename__ = "adaptertag"
    __table_args__ = (Index("ix_adaptertag_tag", "tag"),)

    adapter_id: Mapped[str] = mapped_column(
        String, ForeignKey("adapter.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String, primary_key=True)
    is_user: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class ImportRun(Base):
    """An import started through the API: its roots, progress and summary."""

    __tablename__ = "importrun"
    __table_args__ = (Index("ix_importrun_created_at", "created_at"),)

    id: Mapped[str] = mapped_column(String, primary_key=True, default=new_id)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    roots: Mapped[list[str]] = mapped_column(JSON)
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)


class DeliveryJob(Base):
    __tablename__ = "deliveryjob"
    __table_args__ = (
        Index("idx_deliveryjob_status", "status"),
        Index("idx_deliveryjob_created_at", "created_at"),
        Index("idx_deliveryjob_mode", "mode"),
        Index("ix_deliveryjob_status_lease", "status", "lease_expires_at"),
        Index("ix_deliveryjob_status_due", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String, primary_key=True, default=new_id)
    prompt: Mapped[str] = mapped_column(String)
    mode: Mapped[str] = mapped_column(String)
    params: Mapped[str | None] = mapped_column(String)  # JSON text
    status: Mapped[str] = mapped_column(String, default="pending")
    result: Mapped[str | None] = mapped_column(String)  # JSON text
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)

    # Rating and favourites (revision e3c1f6a5c2b8)
    rating: Mapped[int | None] = mapped_column(Integer)
    is_favorite: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    rating_updated_at: Mapped[datetime | None] = mapped_column(DateTime)
    favorite_updated_at: Mapped[datetime | None] = mapped_column(DateTime)

    # The job queue (revision a7d2f5c8e3b6)
    negative_prompt: Mapped[str | None] = mapped_column(Text)
    adapters: Mapped[list[Any] | None] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    max_attempts: Mapped[int] = mapped_column(Integer, default=3, server_default=text("3"))
    last_error: Mapped[str | None] = mapped_column(Text)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    progress: Mapped[float | None] = mapped_column(Float)


class RecommendationSession(Base):
    __tablename__ = "recommendationsession"

    id: Mapped[str] = mapped_column(String, primary_key=True, default=new_id)
    context_prompt: Mapped[str | None] = mapped_column(Text)
    active_loras: Mapped[list[str] | None] = mapped_column(JSON)
    target_lora_id: Mapped[str | None] = mapped_column(String)
    recommendation_type: Mapped[str] = mapped_column(String)
    recommendations: Mapped[list[Any] | None] = mapped_column(JSON)
    user_feedback: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    generated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class UserPreference(Base):
    __tablename__ = "userpreference"
    __table_args__ = (Index("ix_userpreference_type_value", "preference_type", "preference_value"),)

    id: Mapped[str] = mapped_column(String, primary_key=True, default=new_id)
    preference_type: Mapped[str] = mapped_column(String)
    preference_value: Mapped[str] = mapped_column(String)
    confidence: Mapped[float] = mapped_column(Float)
    learned_from: Mapped[str] = mapped_column(String)
    evidence_count: Mapped[int] = mapped_column(Integer, default=0)
    last_evidence_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class LoraEmbedding(Base):
    __tablename__ = "loraembedding"
    __table_args__ = (Index("ix_loraembedding_model_updated", "embedding_model", "updated_at"),)

    adapter_id: Mapped[str] = mapped_column(
        String, ForeignKey("adapter.id", ondelete="CASCADE"), primary_key=True
    )
    # Raw little-endian float32 bytes; never pickled.
    semantic_embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    artistic_embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    technical_embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    extracted_keywords: Mapped[list[str] | None] = mapped_column(JSON)
    keyword_scores: Mapped[dict[str, float] | None] = mapped_column(JSON)
    predicted_style: Mapped[str | None] = mapped_column(String)
    style_confidence: Mapped[float | None] = mapped_column(Float)
    sentiment_label: Mapped[str | None] = mapped_column(String)
    sentiment_score: Mapped[float | None] = mapped_column(Float)
    quality_score: Mapped[float | None] = mapped_column(Float)
    popularity_score: Mapped[float | None] = mapped_column(Float)
    recency_score: Mapped[float | None] = mapped_column(Float)
    compatibility_score: Mapped[float | None] = mapped_column(Float)
    last_computed: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    # Trigger columns (revision f0a1b2c3d4e5)
    normalized_triggers: Mapped[list[str]] = mapped_column(
        JSON, default=list, server_default=text("'[]'")
    )
    trigger_aliases: Mapped[dict[str, Any]] = mapped_column(
        JSON, default=dict, server_default=text("'{}'")
    )
    trigger_embeddings: Mapped[list[Any]] = mapped_column(
        JSON, default=list, server_default=text("'[]'")
    )
    trigger_metadata: Mapped[dict[str, Any]] = mapped_column(
        JSON, default=dict, server_default=text("'{}'")
    )

    # Which model made the vectors, and from what text (revision b9e4c2d7f1a3)
    embedding_model: Mapped[str | None] = mapped_column(String(200))
    embedding_dim: Mapped[int | None] = mapped_column(Integer)
    source_hash: Mapped[str | None] = mapped_column(String(64))


class RecommendationFeedback(Base):
    __tablename__ = "recommendationfeedback"

    id: Mapped[str] = mapped_column(String, primary_key=True, default=new_id)
    session_id: Mapped[str] = mapped_column(
        String, ForeignKey("recommendationsession.id", ondelete="CASCADE"), index=True
    )
    recommended_lora_id: Mapped[str] = mapped_column(
        String, ForeignKey("adapter.id", ondelete="CASCADE"), index=True
    )
    feedback_type: Mapped[str] = mapped_column(String)
    feedback_reason: Mapped[str | None] = mapped_column(String)
    implicit_signal: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class EmbeddingRun(Base):
    """One (re)computation of adapter embeddings, carried out by a worker."""

    __tablename__ = "embeddingrun"
    __table_args__ = (
        Index("ix_embeddingrun_created_at", "created_at"),
        Index("ix_embeddingrun_status", "status"),
    )

    id: Mapped[str] = mapped_column(String, primary_key=True, default=new_id)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    model: Mapped[str] = mapped_column(String(200))
    adapter_ids: Mapped[list[str] | None] = mapped_column(JSON)
    force: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    total: Mapped[int | None] = mapped_column(Integer)
    done: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime)
