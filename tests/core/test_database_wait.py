"""Waiting for the database: what can change by waiting is retried, what cannot fails at once,
and each message names the limit that was really applied."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lora_manager.core.errors import DatabaseUnreachableError, ExitCode
from tests.support.migrate import runner_for
from tests.support.postgres import PostgresServer, free_port
from tests.support.processes import run_cli

# --- a server that answers "no" -------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "database", "reason"),
    [
        ("postgres", "no_such_catalog", 'database "no_such_catalog" does not exist'),
        ("nobody", "postgres", 'role "nobody" does not exist'),
    ],
)
def test_refused_connection_fails_at_once_with_the_reason(
    pg_server: PostgresServer, user: str, database: str, reason: str
) -> None:
    url = f"postgresql+psycopg://{user}:hunter2@127.0.0.1:{pg_server.port}/{database}"
    messages: list[str] = []
    with pytest.raises(DatabaseUnreachableError) as caught:
        runner_for(url, messages, db_wait_timeout=30).wait()
    message = str(caught.value)
    assert reason in message
    assert "retrying cannot help" in message
    assert f"port={pg_server.port} database={database}" in message
    assert "hunter2" not in message
    assert messages == []  # not one retry: DB_WAIT_TIMEOUT=30 was not waited out


def test_missing_database_stops_the_cli_at_once(
    pg_server: PostgresServer, cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **cli_env,
        "DATABASE_URL": pg_server.url("never_created"),
        "DB_WAIT_TIMEOUT": "30",
    }
    result = run_cli(["db", "upgrade"], env, tmp_path)
    assert result.returncode == ExitCode.DATABASE_UNREACHABLE, result.stderr
    assert 'database "never_created" does not exist' in result.stderr
    assert "retrying in" not in result.stderr
    assert "Traceback" not in result.stderr


def test_server_that_is_not_up_is_still_retried() -> None:
    port = free_port()
    messages: list[str] = []
    with pytest.raises(DatabaseUnreachableError, match=r"DB_WAIT_TIMEOUT=1\.5\)"):
        runner_for(
            f"postgresql+psycopg://u@127.0.0.1:{port}/db", messages, db_wait_timeout=1.5
        ).wait()
    assert len(messages) >= 2 and all("retrying in" in m for m in messages)


# --- the limit a message names ----------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def unreachable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database of each kind that cannot be opened: a folder where the SQLite file should be,
    a PostgreSQL port nobody listens on."""
    if request.param == "sqlite":
        folder = tmp_path / "a-folder.db"
        folder.mkdir()
        return f"sqlite:///{folder}"
    return f"postgresql+psycopg://lora@127.0.0.1:{free_port()}/catalog"


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_db_status_does_not_misreport_db_wait_timeout(
    unreachable_url: str, as_json: bool, cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**cli_env, "DATABASE_URL": unreachable_url, "DB_WAIT_TIMEOUT": "3"}
    result = run_cli(["db", "status", *(["--json"] if as_json else [])], env, tmp_path)
    assert result.returncode == ExitCode.DATABASE_UNREACHABLE, result.stderr
    output = result.stdout + result.stderr
    text = json.loads(result.stdout)["error"] if as_json else " ".join(output.split())
    assert "DB_WAIT_TIMEOUT=0" not in text
    assert "tries once, without DB_WAIT_TIMEOUT" in text
    assert "gave up after 1 attempt in" in text


def test_waiting_commands_name_the_setting_they_applied(unreachable_url: str) -> None:
    messages: list[str] = []
    with pytest.raises(DatabaseUnreachableError, match=r"\(DB_WAIT_TIMEOUT=0\.5\)"):
        runner_for(unreachable_url, messages, db_wait_timeout=0.5).wait()
    with pytest.raises(DatabaseUnreachableError, match=r"\(timeout=0\.5s\)"):
        runner_for(unreachable_url, messages, db_wait_timeout=3).wait(timeout=0.5)
