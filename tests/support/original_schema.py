"""Databases shaped exactly as the ORIGINAL LoRA Manager left them, defects included.

The original chain was SQLModel + Alembic autogenerate. This module rebuilds, with plain SQL
only (no Alembic, no project models), what that chain produced at each of the nine seed
revisions, on SQLite and on PostgreSQL, so tests can check that this project's chain upgrades
such databases in place and keeps their rows (see docs/SCHEMA.md).

What "exactly as the original" means here:

* types are autogenerate's: VARCHAR without length, JSON (PostgreSQL ``json``), TIMESTAMP
  WITHOUT TIME ZONE (SQLite DATETIME), BYTEA/BLOB, BOOLEAN, FLOAT, INTEGER, TEXT;
* constraints are unnamed, so PostgreSQL gives them its default names (``adapter_pkey``,
  ``loraembedding_adapter_id_fkey``, ...) and SQLite none; foreign keys have no ON DELETE;
* rev 7ef61e651ef8 drops the eight indexes of 952b85546fed (the autogenerate accident) and
  a1f4d5d0b6c7 re-creates only two of them.

The database at revision N is ``STEPS[0..N]`` applied in order. Each statement is written once
for both dialects; ``$TS``, ``$JSON``, ``$BLOB`` and ``$FALSE`` are the only per-dialect parts.
"""

from __future__ import annotations

import copy
import re
import struct
from dataclasses import dataclass
from datetime import datetime
from string import Template
from typing import Any

from sqlalchemy import bindparam, create_engine, inspect, text
from sqlalchemy.engine import Connection


@dataclass(frozen=True)
class Step:
    """One original revision: its id, slug and the SQL it ran (in order)."""

    revision: str
    slug: str
    statements: tuple[str, ...]


# Per-dialect spellings of the types/defaults autogenerate emitted.
DIALECT_WORDS: dict[str, dict[str, str]] = {
    "postgresql": {
        "TS": "TIMESTAMP WITHOUT TIME ZONE",
        "JSON": "JSON",
        "BLOB": "BYTEA",
        "FALSE": "false",
    },
    "sqlite": {"TS": "DATETIME", "JSON": "JSON", "BLOB": "BLOB", "FALSE": "0"},
}

ALEMBIC_VERSION_DDL = (
    "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
    "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
)

REV5_INDEXES = (
    ("idx_adapter_active", "adapter", "active"),
    ("idx_adapter_ordinal", "adapter", "ordinal"),
    ("idx_adapter_name", "adapter", "name"),
    ("idx_adapter_created_at", "adapter", "created_at"),
    ("idx_adapter_active_ordinal", "adapter", "active, ordinal"),
    ("idx_deliveryjob_status", "deliveryjob", "status"),
    ("idx_deliveryjob_created_at", "deliveryjob", "created_at"),
    ("idx_deliveryjob_mode", "deliveryjob", "mode"),
)


def _add_columns(table: str, *columns: str) -> tuple[str, ...]:
    """One ALTER TABLE per column, as autogenerate's op.add_column calls render."""
    return tuple(f"ALTER TABLE {table} ADD COLUMN {column}" for column in columns)


STEPS: list[Step] = [
    Step(
        "5f681a8fe826",
        "initial",
        (
            """CREATE TABLE adapter (
                id VARCHAR NOT NULL,
                name VARCHAR NOT NULL,
                version VARCHAR,
                tags $JSON,
                file_path VARCHAR NOT NULL,
                weight FLOAT NOT NULL,
                active BOOLEAN NOT NULL,
                ordinal INTEGER,
                archetype VARCHAR,
                archetype_confidence FLOAT,
                created_at $TS NOT NULL,
                updated_at $TS NOT NULL,
                PRIMARY KEY (id)
            )""",
            """CREATE TABLE deliveryjob (
                id VARCHAR NOT NULL,
                prompt VARCHAR NOT NULL,
                mode VARCHAR NOT NULL,
                params VARCHAR,
                status VARCHAR NOT NULL,
                result VARCHAR,
                created_at $TS NOT NULL,
                started_at $TS,
                finished_at $TS,
                PRIMARY KEY (id)
            )""",
        ),
    ),
    Step(
        "7176100dd1ac",
        "add_unique_name_version",
        ("CREATE UNIQUE INDEX ux_adapter_name_version ON adapter (name, version)",),
    ),
    Step(
        "d16f3e1df8bd",
        "add_complete_civitai_fields",
        # The original also "altered" tags (already JSON); that changed nothing upward.
        _add_columns(
            "adapter",
            "canonical_version_name VARCHAR",
            "description VARCHAR",
            "author_username VARCHAR",
            "visibility VARCHAR DEFAULT 'Public' NOT NULL",
            "published_at $TS",
            "trained_words $JSON",
            "triggers $JSON",
            "primary_file_name VARCHAR",
            "primary_file_size_kb INTEGER",
            "primary_file_sha256 VARCHAR",
            "primary_file_download_url VARCHAR",
            "primary_file_local_path VARCHAR",
            "supports_generation BOOLEAN DEFAULT $FALSE NOT NULL",
            "sd_version VARCHAR",
            "nsfw_level INTEGER DEFAULT 0 NOT NULL",
            "activation_text VARCHAR",
            "stats $JSON",
            "extra $JSON",
        ),
    ),
    Step(
        "cbab2373ecb9",
        "add_ingestion_tracking_fields",
        _add_columns(
            "adapter",
            "json_file_path VARCHAR",
            "json_file_mtime $TS",
            "json_file_size INTEGER",
            "last_ingested_at $TS",
        ),
    ),
    Step(
        "952b85546fed",
        "add_performance_indexes",
        tuple(f"CREATE INDEX {name} ON {table} ({cols})" for name, table, cols in REV5_INDEXES),
    ),
    Step(
        "7ef61e651ef8",
        "add_recommendation_tables",
        (
            """CREATE TABLE recommendationsession (
                id VARCHAR NOT NULL,
                context_prompt TEXT,
                active_loras $JSON,
                target_lora_id VARCHAR,
                recommendation_type VARCHAR NOT NULL,
                recommendations $JSON,
                user_feedback $JSON,
                generated_at $TS NOT NULL,
                PRIMARY KEY (id)
            )""",
            """CREATE TABLE userpreference (
                id VARCHAR NOT NULL,
                preference_type VARCHAR NOT NULL,
                preference_value VARCHAR NOT NULL,
                confidence FLOAT NOT NULL,
                learned_from VARCHAR NOT NULL,
                evidence_count INTEGER NOT NULL,
                last_evidence_at $TS NOT NULL,
                created_at $TS NOT NULL,
                updated_at $TS NOT NULL,
                PRIMARY KEY (id)
            )""",
            """CREATE TABLE loraembedding (
                adapter_id VARCHAR NOT NULL,
                semantic_embedding $BLOB,
                artistic_embedding $BLOB,
                technical_embedding $BLOB,
                extracted_keywords $JSON,
                keyword_scores $JSON,
                predicted_style VARCHAR,
                style_confidence FLOAT,
                sentiment_label VARCHAR,
                sentiment_score FLOAT,
                quality_score FLOAT,
                popularity_score FLOAT,
                recency_score FLOAT,
                compatibility_score FLOAT,
                last_computed $TS NOT NULL,
                created_at $TS NOT NULL,
                updated_at $TS NOT NULL,
                PRIMARY KEY (adapter_id),
                FOREIGN KEY (adapter_id) REFERENCES adapter (id)
            )""",
            """CREATE TABLE recommendationfeedback (
                id VARCHAR NOT NULL,
                session_id VARCHAR NOT NULL,
                recommended_lora_id VARCHAR NOT NULL,
                feedback_type VARCHAR NOT NULL,
                feedback_reason VARCHAR,
                implicit_signal BOOLEAN NOT NULL,
                created_at $TS NOT NULL,
                PRIMARY KEY (id),
                FOREIGN KEY (session_id) REFERENCES recommendationsession (id),
                FOREIGN KEY (recommended_lora_id) REFERENCES adapter (id)
            )""",
            # The defect: autogenerate saw the rev-5 indexes missing from the models.
            *(f"DROP INDEX {name}" for name, _, _ in REV5_INDEXES),
        ),
    ),
    Step(
        "a1f4d5d0b6c7",
        "add_adapter_indexes_and_userpreference_idx",
        (
            "CREATE INDEX idx_adapter_active ON adapter (active)",
            "CREATE INDEX idx_adapter_created_at ON adapter (created_at)",
            "CREATE INDEX idx_adapter_json_file_path ON adapter (json_file_path)",
            "CREATE INDEX idx_adapter_updated_at ON adapter (updated_at)",
            "CREATE INDEX idx_adapter_last_ingested_at ON adapter (last_ingested_at)",
            "CREATE INDEX ix_userpreference_type_value "
            "ON userpreference (preference_type, preference_value)",
        ),
    ),
    Step(
        "e3c1f6a5c2b8",
        "add_delivery_job_rating_and_favorites",
        # The original's follow-up UPDATE (integer 0 into the boolean) is not reproduced:
        # the shape it leaves is the same, and PostgreSQL would reject it.
        _add_columns(
            "deliveryjob",
            "rating INTEGER",
            "is_favorite BOOLEAN DEFAULT $FALSE NOT NULL",
            "rating_updated_at $TS",
            "favorite_updated_at $TS",
        ),
    ),
    Step(
        "f0a1b2c3d4e5",
        "add_loraembedding_trigger_columns",
        _add_columns(
            "loraembedding",
            "normalized_triggers $JSON DEFAULT '[]' NOT NULL",
            "trigger_aliases $JSON DEFAULT '{}' NOT NULL",
            "trigger_embeddings $JSON DEFAULT '[]' NOT NULL",
            "trigger_metadata $JSON DEFAULT '{}' NOT NULL",
        ),
    ),
]

SEED_REVISIONS: list[str] = [step.revision for step in STEPS]


def _steps_up_to(revision: str) -> list[Step]:
    if revision not in SEED_REVISIONS:
        raise ValueError(f"not a seed revision: {revision!r}")
    return STEPS[: SEED_REVISIONS.index(revision) + 1]


def original_statements(dialect: str, revision: str) -> list[str]:
    """The SQL, in order, that leaves an empty database at `revision` (without alembic_version)."""
    words = DIALECT_WORDS[dialect]
    return [
        Template(statement).substitute(words)
        for step in _steps_up_to(revision)
        for statement in step.statements
    ]


_INDEX_DDL = re.compile(r"^(CREATE (?:UNIQUE )?INDEX|DROP INDEX) (\w+)")


def original_index_names(revision: str) -> set[str]:
    """Names of the indexes an original database has at `revision` (all tables)."""
    names: set[str] = set()
    for step in _steps_up_to(revision):
        for statement in step.statements:
            match = _INDEX_DDL.match(statement)
            if match is None:
                continue
            if match.group(1) == "DROP INDEX":
                names.discard(match.group(2))
            else:
                names.add(match.group(2))
    return names


# ---------------------------------------------------------------------------------------------
# Sample rows: every column of every table up to the last seed revision; the builder keeps the
# columns that exist at the requested revision. No JSON column holds None (SQLAlchemy's JSON
# would write the JSON literal null rather than SQL NULL).

ADAPTER_A = "0f8e3a52-6b1d-4c1e-9a57-3d2b8c4e1a01"
ADAPTER_B = "7c41d9e0-2f3a-4b8e-8d16-5e9a0b7c2f02"
SESSION = "b2d6e8f1-9a3c-4e57-a1b2-c3d4e5f60703"


def _t(day: int, hour: int = 0, micro: int = 0) -> datetime:
    return datetime(2025, 3, day, hour, 15, 30, micro)


def _vector(*values: float) -> bytes:
    """Raw little-endian float32 bytes, the way the original stored embeddings."""
    return struct.pack(f"<{len(values)}f", *values)


SAMPLE_ROWS: dict[str, list[dict[str, Any]]] = {
    "adapter": [
        {
            "id": ADAPTER_A,
            "name": "ink-wash",
            "version": "v1",
            "tags": ["style", "anime"],
            "file_path": "/loras/ink-wash.safetensors",
            "weight": 0.8,
            "active": True,
            "ordinal": 1,
            "archetype": "style",
            "archetype_confidence": 0.9,
            "created_at": _t(1, 9, 123456),
            "updated_at": _t(2, 9),
            "canonical_version_name": "v1.0",
            "description": "Sumi-e ink wash",
            "author_username": "painter",
            "visibility": "Public",
            "published_at": _t(3),
            "trained_words": ["inkwash", "sumi-e"],
            "triggers": ["ink wash"],
            "primary_file_name": "ink-wash.safetensors",
            "primary_file_size_kb": 144,
            "primary_file_sha256": "ab" * 32,
            "primary_file_download_url": "https://civitai.example/api/download/1",
            "primary_file_local_path": "/loras/ink-wash.safetensors",
            "supports_generation": True,
            "sd_version": "SDXL 1.0",
            "nsfw_level": 0,
            "activation_text": "inkwash",
            "stats": {"downloadCount": 1200, "rating": 4.5},
            "extra": {"baseModel": "SDXL", "nested": {"k": [1, 2]}},
            "json_file_path": "/loras/ink-wash.json",
            "json_file_mtime": _t(4, 1),
            "json_file_size": 2048,
            "last_ingested_at": _t(5, 2),
        },
        {
            "id": ADAPTER_B,
            "name": "mecha-pilot",
            "version": "v2.1",
            "tags": ["character", "über"],
            "file_path": "/loras/mecha-pilot.safetensors",
            "weight": 0.55,
            "active": False,
            "ordinal": 2,
            "archetype": "character",
            "archetype_confidence": 0.35,
            "created_at": _t(11, 10),
            "updated_at": _t(12, 11, 500),
            "canonical_version_name": "v2.1-final",
            "description": "A pilot in a mech suit",
            "author_username": "mechfan",
            "visibility": "Private",
            "published_at": _t(13),
            "trained_words": ["mechapilot"],
            "triggers": ["mecha pilot", "cockpit"],
            "primary_file_name": "mecha-pilot.safetensors",
            "primary_file_size_kb": 73728,
            "primary_file_sha256": "CD" * 32,
            "primary_file_download_url": "https://civitai.example/api/download/2",
            "primary_file_local_path": "/data/mecha-pilot.safetensors",
            "supports_generation": False,
            "sd_version": "SD 1.5",
            "nsfw_level": 2,
            "activation_text": "mechapilot, cockpit",
            "stats": {"downloadCount": 7},
            "extra": {},
            "json_file_path": "/loras/mecha-pilot.json",
            "json_file_mtime": _t(14, 3),
            "json_file_size": 512,
            "last_ingested_at": _t(15, 4),
        },
    ],
    "deliveryjob": [
        {
            "id": "4a1c2e3f-5b6d-4e7f-8091-a2b3c4d5e6f7",
            "prompt": "<lora:ink-wash:0.8> a heron at dawn",
            "mode": "http",
            "params": '{"url": "http://127.0.0.1:7860/sdapi/v1/txt2img", "steps": 20}',
            "status": "succeeded",
            "result": '{"status": 200, "images": 1}',
            "created_at": _t(20, 8),
            "started_at": _t(20, 9),
            "finished_at": _t(20, 10, 42),
            "rating": 5,
            "is_favorite": True,
            "rating_updated_at": _t(21, 1),
            "favorite_updated_at": _t(21, 2),
        },
        {
            "id": "9e8d7c6b-5a49-4382-b1a0-f9e8d7c6b5a4",
            "prompt": "<lora:mecha-pilot:0.55> night city",
            "mode": "cli",
            "params": '{"command": "echo"}',
            "status": "pending",
            "result": None,
            "created_at": _t(22, 8),
            "started_at": None,
            "finished_at": None,
            "rating": None,
            "is_favorite": False,
            "rating_updated_at": None,
            "favorite_updated_at": None,
        },
    ],
    "recommendationsession": [
        {
            "id": SESSION,
            "context_prompt": "a heron at dawn, ink wash\nlong text is TEXT",
            "active_loras": [ADAPTER_A],
            "target_lora_id": ADAPTER_A,
            "recommendation_type": "similar",
            "recommendations": [{"lora_id": ADAPTER_B, "score": 0.42}],
            "user_feedback": {ADAPTER_B: "dismissed"},
            "generated_at": _t(23, 5),
        }
    ],
    "userpreference": [
        {
            "id": "c0ffee00-1234-4567-89ab-cdef01234567",
            "preference_type": "style",
            "preference_value": "ink wash",
            "confidence": 0.75,
            "learned_from": "feedback",
            "evidence_count": 3,
            "last_evidence_at": _t(24, 6),
            "created_at": _t(24, 1),
            "updated_at": _t(24, 7),
        }
    ],
    "loraembedding": [
        {
            "adapter_id": ADAPTER_A,
            "semantic_embedding": _vector(0.1, 0.2, 0.3, 0.4),
            "artistic_embedding": _vector(-1.0, 0.5, 2.25),
            "technical_embedding": _vector(1.0, 0.0),
            "extracted_keywords": ["ink", "heron"],
            "keyword_scores": {"ink": 0.9, "heron": 0.4},
            "predicted_style": "ink",
            "style_confidence": 0.61,
            "sentiment_label": "calm",
            "sentiment_score": 0.2,
            "quality_score": 0.81,
            "popularity_score": 0.33,
            "recency_score": 0.5,
            "compatibility_score": 0.7,
            "last_computed": _t(25, 3),
            "created_at": _t(25, 1),
            "updated_at": _t(25, 4),
            "normalized_triggers": ["ink wash"],
            "trigger_aliases": {"ink wash": ["inkwash", "sumi-e"]},
            "trigger_embeddings": [[0.25, 0.5]],
            "trigger_metadata": {"source": "civitai"},
        },
        {
            "adapter_id": ADAPTER_B,
            "semantic_embedding": _vector(3.5),
            "artistic_embedding": None,
            "technical_embedding": None,
            "extracted_keywords": [],
            "keyword_scores": {},
            "predicted_style": None,
            "style_confidence": None,
            "sentiment_label": None,
            "sentiment_score": None,
            "quality_score": None,
            "popularity_score": None,
            "recency_score": None,
            "compatibility_score": None,
            "last_computed": _t(26, 3),
            "created_at": _t(26, 1),
            "updated_at": _t(26, 4),
            "normalized_triggers": [],
            "trigger_aliases": {},
            "trigger_embeddings": [],
            "trigger_metadata": {},
        },
    ],
    "recommendationfeedback": [
        {
            "id": "f00dbabe-0000-4000-8000-000000000001",
            "session_id": SESSION,
            "recommended_lora_id": ADAPTER_B,
            "feedback_type": "negative",
            "feedback_reason": "not my style",
            "implicit_signal": False,
            "created_at": _t(27, 2),
        }
    ],
}
# Parents before children (foreign keys).
TABLE_ORDER: list[str] = list(SAMPLE_ROWS)


def _insert_rows(connection: Connection, table: str) -> list[dict[str, Any]]:
    """Insert the sample rows of `table`, restricted to its present columns; return them.

    Plain INSERT text; each bind is typed by the reflected column type, so values are stored
    the way the original's SQLAlchemy models wrote them (JSON serialised, SQLite datetimes as
    ISO text, booleans as 0/1 on SQLite).
    """
    types = {column["name"]: column["type"] for column in inspect(connection).get_columns(table)}
    rows = [
        {name: copy.deepcopy(value) for name, value in row.items() if name in types}
        for row in SAMPLE_ROWS[table]
    ]
    names = list(rows[0])
    statement = text(
        f"INSERT INTO {table} ({', '.join(names)}) "
        f"VALUES ({', '.join(':' + name for name in names)})"
    ).bindparams(*(bindparam(name, type_=types[name]) for name in names))
    for row in rows:
        connection.execute(statement, row)
    return rows


def build_original_database(url: str, revision: str) -> dict[str, list[dict[str, Any]]]:
    """Make the EMPTY database at `url` look as the original LoRA Manager left it at `revision`.

    Creates the schema with plain SQL (the original's defects included), stamps
    alembic_version with `revision`, and inserts sample rows into every table that exists,
    using every column that exists. Returns ``{table: [row, ...]}`` with Python values
    (naive datetimes, JSON as Python objects, bytes, bools) for comparison after upgrades.
    """
    statements = original_statements(_dialect_of(url), revision)
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            existing = inspect(connection).get_table_names()
            if existing:
                raise ValueError(f"database is not empty: {sorted(existing)}")
            for statement in statements:
                connection.execute(text(statement))
            connection.execute(text(ALEMBIC_VERSION_DDL))
            connection.execute(
                text("INSERT INTO alembic_version (version_num) VALUES (:revision)"),
                {"revision": revision},
            )
            present = set(inspect(connection).get_table_names())
            return {
                table: _insert_rows(connection, table) for table in TABLE_ORDER if table in present
            }
    finally:
        engine.dispose()


def _dialect_of(url: str) -> str:
    dialect = url.split(":", 1)[0].split("+", 1)[0]
    if dialect not in DIALECT_WORDS:
        raise ValueError(f"unsupported database URL: {url!r}")
    return dialect
