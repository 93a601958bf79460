"""The revision chain itself, on SQLite and PostgreSQL: pytest-alembic's checks and more."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from lora_manager.core.migrations import head_revisions, script_directory
from lora_manager.core.models import Base
from tests.support.migrate import runner_for
from tests.support.rows import assert_rows_kept, fill_every_table

SEED_CHAIN = [
    ("5f681a8fe826", "initial"),
    ("7176100dd1ac", "add_unique_name_version"),
    ("d16f3e1df8bd", "add_complete_civitai_fields"),
    ("cbab2373ecb9", "add_ingestion_tracking_fields"),
    ("952b85546fed", "add_performance_indexes"),
    ("7ef61e651ef8", "add_recommendation_tables"),
    ("a1f4d5d0b6c7", "add_adapter_indexes_and_userpreference_idx"),
    ("e3c1f6a5c2b8", "add_delivery_job_rating_and_favorites"),
    ("f0a1b2c3d4e5", "add_loraembedding_trigger_columns"),
]


def chain() -> list[str]:
    """Revision ids from base to head."""
    return [s.revision for s in reversed(list(script_directory().walk_revisions()))]


def test_single_head() -> None:
    assert len(script_directory().get_heads()) == 1


def test_seed_revisions_keep_their_ids_slugs_and_order() -> None:
    scripts = {s.revision: s for s in script_directory().walk_revisions()}
    assert chain()[: len(SEED_CHAIN)] == [rev for rev, _ in SEED_CHAIN]
    for revision, slug in SEED_CHAIN:
        path = scripts[revision].path
        assert path.endswith(f"{revision}_{slug}.py"), path
    # Everything after the seed comes after f0a1b2c3d4e5, never in between.
    assert chain().index("f0a1b2c3d4e5") == len(SEED_CHAIN) - 1


def test_every_revision_has_a_real_downgrade() -> None:
    for script in script_directory().walk_revisions():
        source = Path(script.path).read_text()
        body = source.split("def downgrade() -> None:", 1)[1]
        assert "op." in body or "Nothing to undo" in body, script.revision


def test_naming_convention_names_every_constraint() -> None:
    for table in Base.metadata.tables.values():
        for constraint in [*table.constraints, *table.indexes]:
            assert constraint.name, f"unnamed {type(constraint).__name__} on {table.name}"


def test_base_to_head_and_models_match(db_url: str) -> None:
    runner = runner_for(db_url)
    outcome = runner.upgrade("head")
    assert outcome.applied == chain()
    assert outcome.after == head_revisions()
    assert runner.check() == []  # one head, no edits, `alembic check` finds no drift
    engine = create_engine(db_url)
    with engine.connect() as connection:
        tables = set(inspect(connection).get_table_names())
    engine.dispose()
    assert set(Base.metadata.tables) <= tables


def test_every_step_upgrades_downgrades_and_reupgrades_keeping_rows(db_url: str) -> None:
    """Walk up one revision at a time; at each, go down one step and up again, then check
    every row inserted so far and add rows in every table. All of them reach head."""
    runner = runner_for(db_url)
    engine = create_engine(db_url)
    kept: list[dict] = []
    try:
        for index, revision in enumerate(chain()):
            previous = chain()[index - 1] if index else "base"
            runner.upgrade(revision)
            runner.downgrade(previous)
            assert runner.status().current == (() if index == 0 else (previous,))
            runner.upgrade(revision)
            assert runner.status().current == (revision,)
            with engine.connect() as connection:
                for rows in kept:
                    assert_rows_kept(connection, rows)
            with engine.begin() as connection:
                kept.append(fill_every_table(connection, f"r{index}"))
        assert runner.check() == []
        with engine.connect() as connection:
            for rows in kept:
                assert_rows_kept(connection, rows)
            adapters = connection.execute(text("SELECT count(*) FROM adapter")).scalar()
        assert adapters == len(kept)
    finally:
        engine.dispose()


def test_deleting_an_adapter_cascades_to_its_children(db_url: str) -> None:
    runner_for(db_url).upgrade("head")
    engine = create_engine(db_url)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "sqlite":
                connection.execute(text("PRAGMA foreign_keys=ON"))
            fill_every_table(connection, "x")
            connection.execute(text("DELETE FROM adapter WHERE id = 'a-1-x'"))
            left = {
                table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar()
                for table in ("loraembedding", "recommendationfeedback", "recommendationsession")
            }
        assert left == {"loraembedding": 0, "recommendationfeedback": 0, "recommendationsession": 1}
    finally:
        engine.dispose()


def test_offline_sql_renders_the_chain_for_postgresql(pg_url: str) -> None:
    sql = runner_for(pg_url).offline_sql("base:head")
    assert "CREATE TABLE adapter" in sql
    assert "ON DELETE CASCADE" in sql
    assert re.search(r"UPDATE alembic_version SET version_num='c4d8e1f2a6b9'", sql)


@pytest.mark.parametrize("revision", [rev for rev, _ in SEED_CHAIN])
def test_upgrade_to_each_seed_revision_stops_there(sqlite_url: str, revision: str) -> None:
    runner = runner_for(sqlite_url)
    runner.upgrade(revision)
    assert runner.status().current == (revision,)
