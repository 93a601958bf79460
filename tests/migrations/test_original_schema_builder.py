"""The builder of original-shaped databases matches docs/SCHEMA.md at every seed revision.

Expectations here are written out from SCHEMA.md independently of the builder's DDL, so the
builder is checked, not restated.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Connection, Inspector, MetaData, Table, create_engine, inspect, select, text

from tests.support.original_schema import (
    SEED_REVISIONS,
    build_original_database,
    original_index_names,
)

REVISIONS = [
    "5f681a8fe826",
    "7176100dd1ac",
    "d16f3e1df8bd",
    "cbab2373ecb9",
    "952b85546fed",
    "7ef61e651ef8",
    "a1f4d5d0b6c7",
    "e3c1f6a5c2b8",
    "f0a1b2c3d4e5",
]

# table -> [(revision number that adds it, "name kind [nn]")], in SCHEMA.md's order.
# kinds: str, text, json, ts, bin, bool, float, int; "nn" = NOT NULL.
COLUMNS: dict[str, list[tuple[int, str]]] = {
    "adapter": [
        (1, "id str nn"),
        (1, "name str nn"),
        (1, "version str"),
        (1, "tags json"),
        (1, "file_path str nn"),
        (1, "weight float nn"),
        (1, "active bool nn"),
        (1, "ordinal int"),
        (1, "archetype str"),
        (1, "archetype_confidence float"),
        (1, "created_at ts nn"),
        (1, "updated_at ts nn"),
        (3, "canonical_version_name str"),
        (3, "description str"),
        (3, "author_username str"),
        (3, "visibility str nn"),
        (3, "published_at ts"),
        (3, "trained_words json"),
        (3, "triggers json"),
        (3, "primary_file_name str"),
        (3, "primary_file_size_kb int"),
        (3, "primary_file_sha256 str"),
        (3, "primary_file_download_url str"),
        (3, "primary_file_local_path str"),
        (3, "supports_generation bool nn"),
        (3, "sd_version str"),
        (3, "nsfw_level int nn"),
        (3, "activation_text str"),
        (3, "stats json"),
        (3, "extra json"),
        (4, "json_file_path str"),
        (4, "json_file_mtime ts"),
        (4, "json_file_size int"),
        (4, "last_ingested_at ts"),
    ],
    "deliveryjob": [
        (1, "id str nn"),
        (1, "prompt str nn"),
        (1, "mode str nn"),
        (1, "params str"),
        (1, "status str nn"),
        (1, "result str"),
        (1, "created_at ts nn"),
        (1, "started_at ts"),
        (1, "finished_at ts"),
        (8, "rating int"),
        (8, "is_favorite bool nn"),
        (8, "rating_updated_at ts"),
        (8, "favorite_updated_at ts"),
    ],
    "recommendationsession": [
        (6, "id str nn"),
        (6, "context_prompt text"),
        (6, "active_loras json"),
        (6, "target_lora_id str"),
        (6, "recommendation_type str nn"),
        (6, "recommendations json"),
        (6, "user_feedback json"),
        (6, "generated_at ts nn"),
    ],
    "userpreference": [
        (6, "id str nn"),
        (6, "preference_type str nn"),
        (6, "preference_value str nn"),
        (6, "confidence float nn"),
        (6, "learned_from str nn"),
        (6, "evidence_count int nn"),
        (6, "last_evidence_at ts nn"),
        (6, "created_at ts nn"),
        (6, "updated_at ts nn"),
    ],
    "loraembedding": [
        (6, "adapter_id str nn"),
        (6, "semantic_embedding bin"),
        (6, "artistic_embedding bin"),
        (6, "technical_embedding bin"),
        (6, "extracted_keywords json"),
        (6, "keyword_scores json"),
        (6, "predicted_style str"),
        (6, "style_confidence float"),
        (6, "sentiment_label str"),
        (6, "sentiment_score float"),
        (6, "quality_score float"),
        (6, "popularity_score float"),
        (6, "recency_score float"),
        (6, "compatibility_score float"),
        (6, "last_computed ts nn"),
        (6, "created_at ts nn"),
        (6, "updated_at ts nn"),
        (9, "normalized_triggers json nn"),
        (9, "trigger_aliases json nn"),
        (9, "trigger_embeddings json nn"),
        (9, "trigger_metadata json nn"),
    ],
    "recommendationfeedback": [
        (6, "id str nn"),
        (6, "session_id str nn"),
        (6, "recommended_lora_id str nn"),
        (6, "feedback_type str nn"),
        (6, "feedback_reason str"),
        (6, "implicit_signal bool nn"),
        (6, "created_at ts nn"),
    ],
}

# How each kind reads back through reflection (compiled for the dialect).
TYPE_NAMES = {
    "postgresql": {
        "str": "VARCHAR",
        "text": "TEXT",
        "json": "JSON",
        "ts": "TIMESTAMP WITHOUT TIME ZONE",
        "bin": "BYTEA",
        "bool": "BOOLEAN",
        "float": "DOUBLE PRECISION",  # PostgreSQL's FLOAT is float8
        "int": "INTEGER",
    },
    "sqlite": {
        "str": "VARCHAR",
        "text": "TEXT",
        "json": "JSON",
        "ts": "DATETIME",
        "bin": "BLOB",
        "bool": "BOOLEAN",
        "float": "FLOAT",
        "int": "INTEGER",
    },
}

# Server defaults the original gave (normalised: quotes/casts stripped, lower case).
DEFAULTS = {
    ("adapter", "visibility"): "public",
    ("adapter", "supports_generation"): "false",
    ("adapter", "nsfw_level"): "0",
    ("deliveryjob", "is_favorite"): "false",
    ("loraembedding", "normalized_triggers"): "[]",
    ("loraembedding", "trigger_aliases"): "{}",
    ("loraembedding", "trigger_embeddings"): "[]",
    ("loraembedding", "trigger_metadata"): "{}",
}

REV5 = {
    "idx_adapter_active",
    "idx_adapter_ordinal",
    "idx_adapter_name",
    "idx_adapter_created_at",
    "idx_adapter_active_ordinal",
    "idx_deliveryjob_status",
    "idx_deliveryjob_created_at",
    "idx_deliveryjob_mode",
}
REV7 = {
    "idx_adapter_active",
    "idx_adapter_created_at",
    "idx_adapter_json_file_path",
    "idx_adapter_updated_at",
    "idx_adapter_last_ingested_at",
    "ix_userpreference_type_value",
}
UNIQUE = {"ux_adapter_name_version"}


def expected_indexes(number: int) -> set[str]:
    """Index names an original database has at revision `number` (1-based)."""
    if number < 2:
        return set()
    if number < 5:
        return UNIQUE
    if number == 5:
        return UNIQUE | REV5
    if number == 6:
        return UNIQUE  # the original rev 6 dropped all eight
    return UNIQUE | REV7


def expected_columns(number: int) -> dict[str, list[tuple[str, str, bool]]]:
    """{table: [(column, kind, not_null)]} at revision `number` (1-based)."""
    tables: dict[str, list[tuple[str, str, bool]]] = {}
    for table, columns in COLUMNS.items():
        if columns[0][0] > number:
            continue
        tables[table] = []
        for added, spec in columns:
            if added <= number:
                name, kind, *flags = spec.split()
                tables[table].append((name, kind, flags == ["nn"]))
    return tables


def normalised_default(default: str | None) -> str | None:
    if default is None:
        return None
    return default.split("::", 1)[0].strip("'\"()").lower()


def test_seed_revisions_are_the_nine_in_order() -> None:
    assert SEED_REVISIONS == REVISIONS


@pytest.mark.parametrize("revision", REVISIONS)
def test_original_index_names(revision: str) -> None:
    assert original_index_names(revision) == expected_indexes(REVISIONS.index(revision) + 1)


@pytest.mark.parametrize("revision", REVISIONS)
def test_builds_the_original_shape_and_rows(db_url: str, revision: str) -> None:
    number = REVISIONS.index(revision) + 1
    inserted = build_original_database(db_url, revision)
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            dialect = connection.dialect.name
            inspector = inspect(connection)
            expected = expected_columns(number)

            assert set(inspector.get_table_names()) == {*expected, "alembic_version"}
            assert connection.execute(text("SELECT version_num FROM alembic_version")).all() == [
                (revision,)
            ]

            indexes: set[str] = set()
            for table, columns in expected.items():
                reflected = inspector.get_columns(table)
                assert [c["name"] for c in reflected] == [name for name, _, _ in columns]
                for column, (name, kind, not_null) in zip(reflected, columns, strict=True):
                    compiled = column["type"].compile(dialect=connection.dialect)
                    assert compiled == TYPE_NAMES[dialect][kind], (table, name, compiled)
                    assert column["nullable"] is (not not_null), (table, name)
                    default = normalised_default(column["default"])
                    want = DEFAULTS.get((table, name))
                    if dialect == "sqlite" and want == "false":
                        want = "0"
                    assert default == want, (table, name, column["default"])
                indexes |= {index["name"] for index in inspector.get_indexes(table)}
                check_constraints(inspector, dialect, table)
            assert indexes == expected_indexes(number)
            if "ux_adapter_name_version" in indexes:
                (unique,) = [i for i in inspector.get_indexes("adapter") if i["name"] in UNIQUE]
                assert unique["unique"] and unique["column_names"] == ["name", "version"]

            assert set(inserted) == set(expected)
            assert len(inserted["adapter"]) == 2
            assert len(inserted["deliveryjob"]) == 2
            for table, rows in inserted.items():
                assert all(rows), table
                assert set(rows[0]) == {name for name, _, _ in expected[table]}
                key = "adapter_id" if table == "loraembedding" else "id"
                assert read_back(connection, table) == sorted(rows, key=lambda r: r[key]), table
            adapters = inserted["adapter"]
            for column in adapters[0]:  # distinct values in every adapter column
                assert adapters[0][column] != adapters[1][column], column
            assert adapters[0]["tags"] == ["style", "anime"]
    finally:
        engine.dispose()


def check_constraints(inspector: Inspector, dialect: str, table: str) -> None:
    """Default PostgreSQL names (SQLite: unnamed); foreign keys without ON DELETE."""
    pk = inspector.get_pk_constraint(table)
    assert pk["name"] == (f"{table}_pkey" if dialect == "postgresql" else None)
    for fk in inspector.get_foreign_keys(table):
        (column,) = fk["constrained_columns"]
        assert fk["name"] == (f"{table}_{column}_fkey" if dialect == "postgresql" else None)
        assert not fk["options"].get("ondelete"), fk
    expected_fks = {
        "loraembedding": {("adapter_id", "adapter")},
        "recommendationfeedback": {
            ("session_id", "recommendationsession"),
            ("recommended_lora_id", "adapter"),
        },
    }.get(table, set())
    found = {
        (fk["constrained_columns"][0], fk["referred_table"])
        for fk in inspector.get_foreign_keys(table)
    }
    assert found == expected_fks


def read_back(connection: Connection, table: str) -> list[dict[str, Any]]:
    """All rows, as Python values typed by the reflected columns, in primary-key order."""
    reflected = Table(table, MetaData(), autoload_with=connection)
    rows = connection.execute(select(reflected).order_by(*reflected.primary_key)).mappings()
    return [
        {name: bytes(v) if isinstance(v, memoryview) else v for name, v in row.items()}
        for row in rows
    ]
