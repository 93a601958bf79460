"""Databases built by the original LoRA Manager, at each of its nine revisions, upgrade in
place to this project's head with every row kept and one schema at the end."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text

from lora_manager.core.migrations import head_revisions
from lora_manager.core.models import Base
from tests.support.migrate import runner_for
from tests.support.original_schema import SEED_REVISIONS, build_original_database
from tests.support.rows import normalise

PRIMARY_KEYS = {"loraembedding": "adapter_id"}


def head_index_names() -> dict[str, set[str]]:
    return {
        name: {index.name for index in table.indexes if index.name}
        for name, table in Base.metadata.tables.items()
    }


def assert_original_rows_kept(url: str, original: dict[str, list[dict[str, Any]]]) -> None:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            for table, rows in original.items():
                if table == "alembic_version":
                    continue
                key = PRIMARY_KEYS.get(table, "id")
                for row in rows:
                    found = (
                        connection.execute(
                            text(f"SELECT * FROM {table} WHERE {key} = :k"), {"k": row[key]}
                        )
                        .mappings()
                        .first()
                    )
                    assert found is not None, f"{table} row {row[key]} lost"
                    for column, value in row.items():
                        assert normalise(column, found[column]) == normalise(column, value), (
                            f"{table}.{column} of {row[key]}: {found[column]!r} != {value!r}"
                        )
    finally:
        engine.dispose()


@pytest.mark.parametrize("revision", SEED_REVISIONS)
def test_original_database_upgrades_in_place(db_url: str, revision: str) -> None:
    original = build_original_database(db_url, revision)
    assert any(rows for table, rows in original.items() if table != "alembic_version")
    runner = runner_for(db_url)
    assert runner.status().current == (revision,)

    outcome = runner.upgrade()

    assert outcome.after == head_revisions()
    assert_original_rows_kept(db_url, original)
    # One schema for both histories: no drift from the models, every index back, and the
    # foreign keys cascade under their conventional names.
    assert runner.check() == []
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            inspector = inspect(connection)
            for table, wanted in head_index_names().items():
                present = {index["name"] for index in inspector.get_indexes(table)}
                assert wanted <= present, f"{table} lacks {wanted - present}"
            fks = inspector.get_foreign_keys("recommendationfeedback")
            assert {fk["name"] for fk in fks} == {
                "fk_recommendationfeedback_session_id_recommendationsession",
                "fk_recommendationfeedback_recommended_lora_id_adapter",
            } or connection.dialect.name == "sqlite"
            assert all(fk["options"].get("ondelete") == "CASCADE" for fk in fks)
            if connection.dialect.name == "postgresql":
                assert inspector.get_pk_constraint("adapter")["name"] == "pk_adapter"
    finally:
        engine.dispose()


@pytest.mark.parametrize("revision", ["7ef61e651ef8", "f0a1b2c3d4e5"])
def test_upgraded_original_database_downgrades_and_reupgrades(db_url: str, revision: str) -> None:
    """Rollback works on a converged database too, and upgrading again keeps the rows."""
    original = build_original_database(db_url, revision)
    runner = runner_for(db_url)
    runner.upgrade()
    runner.downgrade(revision)
    assert runner.status().current == (revision,)
    runner.upgrade()
    assert runner.check() == []
    assert_original_rows_kept(db_url, original)
