"""The runner's rules: fast path, one migrator at a time, timeouts, backups, audit, check."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import psycopg
import pytest
from alembic import command
from sqlalchemy import create_engine, text

from lora_manager.core.config import load_settings
from lora_manager.core.errors import (
    DatabaseUnreachableError,
    LockTimeoutError,
    MigrationError,
)
from lora_manager.core.locks import ADVISORY_LOCK_KEY
from lora_manager.core.migrations import (
    alembic_config,
    script_directory,
)
from tests.support.migrate import runner_for
from tests.support.postgres import free_port


def psycopg_dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def step_log(url: str) -> list[tuple[str, str, bool]]:
    engine = create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT revision, direction, success FROM lora_migration_log ORDER BY id")
        ).all()
    engine.dispose()
    return [tuple(row) for row in rows]


def test_at_head_takes_no_lock(pg_url: str) -> None:
    runner_for(pg_url).upgrade()
    # Another session holds the migration lock; a runner at head must not even ask for it.
    with psycopg.connect(psycopg_dsn(pg_url), autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        started = time.monotonic()
        outcome = runner_for(pg_url, migration_lock_timeout=30).upgrade()
        assert outcome.fast_path and outcome.applied == []
        assert time.monotonic() - started < 5


def test_lock_timeout_names_the_holder(pg_url: str) -> None:
    with psycopg.connect(psycopg_dsn(pg_url), autocommit=True) as holder:
        holder.execute("SET application_name = 'someone-else-migrating'")
        holder.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        messages: list[str] = []
        with pytest.raises(LockTimeoutError) as caught:
            runner_for(pg_url, messages, migration_lock_timeout=1).upgrade()
    assert "someone-else-migrating" in str(caught.value)
    assert "backend pid" in str(caught.value)
    assert any("waiting for the migration lock" in m for m in messages)


def test_waiting_migrator_rereads_the_revision_after_the_lock(pg_url: str) -> None:
    """A second migrator that waited for the lock finds the work done and applies nothing."""
    with psycopg.connect(psycopg_dsn(pg_url), autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        result: dict[str, object] = {}
        waiter = threading.Thread(
            target=lambda: result.update(outcome=runner_for(pg_url).upgrade())
        )
        waiter.start()
        time.sleep(0.5)
        # The holder migrates (plain alembic, outside the runner) while the other waits.
        settings = load_settings(database_url=pg_url)
        with create_engine(pg_url).connect() as connection:
            command.upgrade(alembic_config(settings, connection=connection), "head")
            connection.commit()
        holder.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
        waiter.join(30)
    outcome = result["outcome"]
    assert outcome.applied == [] and not outcome.fast_path  # type: ignore[attr-defined]
    revisions = [rev for rev, direction, ok in step_log(pg_url) if direction == "upgrade" and ok]
    assert len(revisions) == len(set(revisions))


def test_sqlite_file_lock_serialises_migrators(tmp_path: Path) -> None:
    from filelock import FileLock

    url = f"sqlite:///{tmp_path / 'lora.db'}"
    with (
        FileLock(str(tmp_path / "lora.db.migrate.lock")),
        pytest.raises(LockTimeoutError, match=r"migrate\.lock"),
    ):
        runner_for(url, migration_lock_timeout=0.5).upgrade()


def test_lock_timeout_is_retried_then_reported(pg_url: str) -> None:
    runner_for(pg_url).upgrade("a1f4d5d0b6c7")
    with psycopg.connect(psycopg_dsn(pg_url)) as blocker:
        blocker.execute("LOCK TABLE deliveryjob IN ACCESS EXCLUSIVE MODE")
        messages: list[str] = []
        runner = runner_for(
            pg_url, messages, migration_pg_lock_timeout=0.3, migration_lock_retries=1
        )
        with pytest.raises(MigrationError, match=r"e3c1f6a5c2b8.*lock timeout"):
            runner.upgrade()
        blocker.rollback()
    assert any("retry 1/1" in m for m in messages)
    failures = [(rev, ok) for rev, _, ok in step_log(pg_url) if not ok]
    assert failures == [("e3c1f6a5c2b8", False), ("e3c1f6a5c2b8", False)]
    assert runner_for(pg_url).status().current == ("a1f4d5d0b6c7",)  # nothing half-applied


def test_lock_released_during_retries_lets_the_upgrade_finish(pg_url: str) -> None:
    runner_for(pg_url).upgrade("a1f4d5d0b6c7")
    blocker = psycopg.connect(psycopg_dsn(pg_url))
    blocker.execute("LOCK TABLE deliveryjob IN ACCESS EXCLUSIVE MODE")
    releaser = threading.Timer(1.5, blocker.rollback)
    releaser.start()
    try:
        outcome = runner_for(
            pg_url, migration_pg_lock_timeout=0.3, migration_lock_retries=3
        ).upgrade()
    finally:
        releaser.join()
        blocker.close()
    assert outcome.after == tuple(script_directory().get_heads())


def test_migration_sessions_get_timeouts(pg_url: str) -> None:
    runner = runner_for(pg_url, migration_pg_lock_timeout=7, migration_pg_statement_timeout=90)
    with runner.engine() as engine, engine.connect() as connection:
        runner._prepare_session(connection)
        lock = connection.execute(text("SHOW lock_timeout")).scalar()
        statement = connection.execute(text("SHOW statement_timeout")).scalar()
    assert (lock, statement) == ("7s", "90s")


def test_every_step_is_logged_with_checksum_host_and_version(db_url: str) -> None:
    runner_for(db_url).upgrade()
    engine = create_engine(db_url)
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT revision, direction, success, checksum, host, package_version, "
                "duration_ms, started_at FROM lora_migration_log ORDER BY id"
            )
        ).all()
    engine.dispose()
    chain = [s.revision for s in reversed(list(script_directory().walk_revisions()))]
    assert [row.revision for row in rows] == chain
    for row in rows:
        assert row.direction == "upgrade" and row.success
        assert len(row.checksum) == 64 and row.host and row.package_version
        assert row.duration_ms >= 0 and row.started_at is not None


def test_edited_applied_revision_is_caught_by_check(db_url: str) -> None:
    runner = runner_for(db_url)
    runner.upgrade()
    assert runner.check() == []
    script = script_directory().get_revision("cbab2373ecb9")
    path = Path(script.path)
    original = path.read_bytes()
    try:
        path.write_bytes(original + b"\n# edited after it was applied\n")
        problems = runner.check()
    finally:
        path.write_bytes(original)
    assert len(problems) == 1
    assert "cbab2373ecb9" in problems[0] and path.name in problems[0]
    assert runner.check() == []


def test_check_reports_a_database_behind(sqlite_url: str) -> None:
    runner = runner_for(sqlite_url)
    runner.upgrade("f0a1b2c3d4e5")
    problems = runner.check()
    assert problems and "schema behind: at f0a1b2c3d4e5" in problems[0]


def test_sqlite_backup_before_migrating_a_non_empty_database(tmp_path: Path) -> None:
    database = tmp_path / "lora.db"
    url = f"sqlite:///{database}"
    first = runner_for(url, sqlite_backup_keep=2).upgrade("5f681a8fe826")
    assert first.backup is None  # nothing to lose in a new file
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO adapter (id, name, file_path, weight, active, created_at, "
                "updated_at) VALUES ('a', 'keep-me', '/x', 1, 1, '2025-01-01', '2025-01-01')"
            )
        )
    engine.dispose()
    backups = []
    for revision in ("7176100dd1ac", "d16f3e1df8bd", "cbab2373ecb9"):
        outcome = runner_for(url, sqlite_backup_keep=2).upgrade(revision)
        assert outcome.backup is not None
        backups.append(Path(outcome.backup))
    remaining = sorted(tmp_path.glob("lora.db.backup-*"))
    assert remaining == sorted(backups[-2:])  # only the newest two are kept
    backup_engine = create_engine(f"sqlite:///{backups[-1]}")
    with backup_engine.connect() as connection:
        assert connection.execute(text("SELECT name FROM adapter")).scalar() == "keep-me"
        version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    backup_engine.dispose()
    assert version == "d16f3e1df8bd"  # the state just before the last upgrade


def test_wait_gives_up_with_host_port_database_and_error() -> None:
    port = free_port()
    url = f"postgresql+psycopg://lora:hunter2@127.0.0.1:{port}/catalog"
    messages: list[str] = []
    started = time.monotonic()
    with pytest.raises(DatabaseUnreachableError) as caught:
        runner_for(url, messages, db_wait_timeout=1.5).wait()
    elapsed = time.monotonic() - started
    message = str(caught.value)
    assert f"host=127.0.0.1 port={port} database=catalog" in message
    assert "Connection refused" in message or "connection failed" in message
    assert "hunter2" not in message and not any("hunter2" in m for m in messages)
    assert len(messages) >= 2 and all("attempt" in m for m in messages)
    assert elapsed < 5


def test_unknown_revision_is_a_clear_error(sqlite_url: str) -> None:
    with pytest.raises(MigrationError, match="unknown revision 'nope'"):
        runner_for(sqlite_url).upgrade("nope")


def test_migrating_leaves_the_applications_logging_alone(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app_logger = logging.getLogger("lora_manager.some_feature")
    runner_for(sqlite_url).upgrade()
    with caplog.at_level(logging.INFO):
        app_logger.info("still heard after migrating")
    assert not app_logger.disabled  # logging.config.fileConfig would have disabled it
    assert "still heard after migrating" in caplog.text


def test_relative_targets_resolve_against_the_database(sqlite_url: str) -> None:
    runner = runner_for(sqlite_url)
    runner.upgrade("+2")
    assert runner.status().current == ("7176100dd1ac",)
    outcome = runner.downgrade("-1")
    assert outcome.applied == ["7176100dd1ac"] and outcome.after == ("5f681a8fe826",)
    with pytest.raises(MigrationError, match=r"-2 from 5f681a8fe826 is outside the chain"):
        runner.downgrade("-2")
    assert runner.downgrade("-1").after == ()
