"""Rows in every table at every revision, for round-trip tests of the chain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, inspect, text

T0 = datetime(2025, 1, 2, 3, 4, 5)
EMBEDDING = bytes(range(16))  # four float32s' worth of raw bytes

# (table, column, value): each column only where it exists at the revision being filled.
_VALUES: dict[str, dict[str, Any]] = {
    "adapter": {
        "id": "a-1",
        "name": "ink-style",
        "version": "v1",
        "tags": '["style", "ink"]',
        "file_path": "/loras/ink-style.safetensors",
        "weight": 0.8,
        "active": True,
        "ordinal": 1,
        "archetype": "style",
        "archetype_confidence": 0.9,
        "created_at": T0,
        "updated_at": T0,
        "canonical_version_name": "v1.0",
        "description": "Ink wash",
        "author_username": "painter",
        "visibility": "Public",
        "published_at": T0,
        "trained_words": '["inkwash"]',
        "triggers": '["ink style"]',
        "primary_file_name": "ink-style.safetensors",
        "primary_file_size_kb": 144,
        "primary_file_sha256": "AB" * 32,
        "primary_file_download_url": "https://example.org/f",
        "primary_file_local_path": "/loras/ink-style.safetensors",
        "supports_generation": True,
        "sd_version": "SDXL",
        "nsfw_level": 1,
        "activation_text": "inkwash",
        "stats": '{"downloadCount": 5}',
        "extra": '{"k": 1}',
        "json_file_path": "/loras/ink-style.json",
        "json_file_mtime": T0,
        "json_file_size": 321,
        "last_ingested_at": T0,
    },
    "deliveryjob": {
        "id": "j-1",
        "prompt": "<lora:ink-style:0.8> a cat",
        "mode": "http",
        "params": '{"url": "http://127.0.0.1/x"}',
        "status": "succeeded",
        "result": '{"status": 200}',
        "created_at": T0,
        "started_at": T0,
        "finished_at": T0,
        "rating": 4,
        "is_favorite": True,
        "rating_updated_at": T0,
        "favorite_updated_at": T0,
        "negative_prompt": "blurry",
        "adapters": '[{"id": "a-1", "token_name": "ink-style", "weight": 0.8}]',
        "attempts": 1,
        "max_attempts": 3,
        "last_error": None,
        "lease_owner": None,
        "lease_expires_at": None,
        "next_attempt_at": None,
        "cancel_requested": False,
        "progress": 1.0,
    },
    "recommendationsession": {
        "id": "s-1",
        "context_prompt": "a cat in ink",
        "active_loras": '["a-1"]',
        "target_lora_id": "a-1",
        "recommendation_type": "similar",
        "recommendations": '[{"id": "a-1", "score": 0.9}]',
        "user_feedback": '{"a-1": "up"}',
        "generated_at": T0,
    },
    "userpreference": {
        "id": "p-1",
        "preference_type": "style",
        "preference_value": "ink",
        "confidence": 0.7,
        "learned_from": "feedback",
        "evidence_count": 3,
        "last_evidence_at": T0,
        "created_at": T0,
        "updated_at": T0,
    },
    "loraembedding": {
        "adapter_id": "a-1",
        "semantic_embedding": EMBEDDING,
        "artistic_embedding": EMBEDDING,
        "technical_embedding": EMBEDDING,
        "extracted_keywords": '["ink"]',
        "keyword_scores": '{"ink": 1.0}',
        "predicted_style": "ink",
        "style_confidence": 0.5,
        "sentiment_label": "neutral",
        "sentiment_score": 0.1,
        "quality_score": 0.2,
        "popularity_score": 0.3,
        "recency_score": 0.4,
        "compatibility_score": 0.6,
        "last_computed": T0,
        "created_at": T0,
        "updated_at": T0,
        "normalized_triggers": '["ink style"]',
        "trigger_aliases": '{"ink": ["inkwash"]}',
        "trigger_embeddings": "[[0.5, 0.25]]",
        "trigger_metadata": '{"source": "civitai"}',
        "embedding_model": "hashed-ngrams-v1/256",
        "embedding_dim": 2,
        "source_hash": "ab" * 32,
    },
    "recommendationfeedback": {
        "id": "f-1",
        "session_id": "s-1",
        "recommended_lora_id": "a-1",
        "feedback_type": "up",
        "feedback_reason": "liked it",
        "implicit_signal": False,
        "created_at": T0,
    },
    "adaptertag": {"adapter_id": "a-1", "tag": "ink", "is_user": True},
    "importrun": {
        "id": "i-1",
        "status": "succeeded",
        "roots": '["/loras"]',
        "dry_run": False,
        "progress": '{"files_done": 3}',
        "summary": '{"new": 3}',
        "error": None,
        "created_at": T0,
        "started_at": T0,
        "finished_at": T0,
    },
    "embeddingrun": {
        "id": "e-1",
        "status": "succeeded",
        "model": "hashed-ngrams-v1/256",
        "adapter_ids": '["a-1"]',
        "force": False,
        "total": 1,
        "done": 1,
        "error": None,
        "created_at": T0,
        "started_at": T0,
        "finished_at": T0,
        "heartbeat_at": T0,
    },
}
TABLE_ORDER = list(_VALUES)
JSON_COLUMNS = {
    "tags",
    "trained_words",
    "triggers",
    "stats",
    "extra",
    "active_loras",
    "recommendations",
    "user_feedback",
    "extracted_keywords",
    "keyword_scores",
    "normalized_triggers",
    "trigger_aliases",
    "trigger_embeddings",
    "trigger_metadata",
    "roots",
    "progress",
    "summary",
    "user_tags",
    "sidecar_state",
    "adapters",
    "adapter_ids",
}


def fill_every_table(connection: Connection, suffix: str) -> dict[str, dict[str, Any]]:
    """Insert one row (ids suffixed) into each existing table, using every existing column.

    Returns {table: {column: value}} of what went in. The caller commits.
    """
    inspector = inspect(connection)
    present = set(inspector.get_table_names())
    inserted: dict[str, dict[str, Any]] = {}
    for table in TABLE_ORDER:
        if table not in present:
            continue
        columns = {c["name"] for c in inspector.get_columns(table)}
        row = {k: v for k, v in _VALUES[table].items() if k in columns}
        for key in ("id", "adapter_id", "session_id", "recommended_lora_id"):
            if key in row:
                row[key] = f"{row[key]}-{suffix}"
        if "name" in row:
            row["name"] = f"{row['name']}-{suffix}"
        names = ", ".join(row)
        binds = ", ".join(f":{k}" for k in row)
        connection.execute(text(f"INSERT INTO {table} ({names}) VALUES ({binds})"), row)
        inserted[table] = row
    return inserted


def read_row(connection: Connection, table: str, key: str, value: str) -> dict[str, Any] | None:
    row = (
        connection.execute(text(f"SELECT * FROM {table} WHERE {key} = :v"), {"v": value})
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


def normalise(column: str, value: Any) -> Any:
    """Compare JSON columns by content and booleans/bytes across drivers."""
    import json

    if value is None:
        return None
    if column in JSON_COLUMNS:
        return json.loads(value) if isinstance(value, str) else value
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, bool):
        return value
    if column in {
        "active",
        "supports_generation",
        "is_favorite",
        "implicit_signal",
        "is_user",
        "dry_run",
        "cancel_requested",
        "force",
    }:
        return bool(value)
    if isinstance(value, str) and column.endswith(("_at", "_mtime", "last_computed")):
        return datetime.fromisoformat(value)
    return value


def assert_rows_kept(connection: Connection, inserted: dict[str, dict[str, Any]]) -> None:
    """Every value inserted earlier reads back the same (columns dropped since excepted)."""
    inspector = inspect(connection)
    for table, row in inserted.items():
        key = "adapter_id" if table in ("loraembedding", "adaptertag") else "id"
        found = read_row(connection, table, key, row[key])
        assert found is not None, f"row {row[key]} of {table} is gone"
        columns = {c["name"] for c in inspector.get_columns(table)}
        for column, value in row.items():
            if column not in columns:
                continue
            assert normalise(column, found[column]) == normalise(column, value), (
                f"{table}.{column}: {found[column]!r} != {value!r}"
            )
