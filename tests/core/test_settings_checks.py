"""Settings that can never work stop every entry point at once: one line, a non-zero exit code,
no traceback, no secret from the value."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lora_manager.core.config import get_settings, load_settings
from lora_manager.core.errors import ExitCode, InvalidSettingsError
from tests.support.processes import run_cli

COMMANDS = [
    ["serve"],
    ["worker"],
    ["import"],
    ["db", "upgrade"],
    ["db", "status"],
    ["db", "wait"],
    ["db", "current"],
    ["db", "history"],
]


def assert_one_line_refusal(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert result.returncode == ExitCode.USAGE, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_unsupported_database_stops_every_command_with_one_line(
    argv: list[str], cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**cli_env, "DATABASE_URL": "mysql://lora:hunter2@127.0.0.1:3306/lora"}
    result = run_cli(argv, env, tmp_path)
    line = assert_one_line_refusal(result, "DATABASE_URL", "'mysql'", "sqlite", "postgresql")
    assert "hunter2" not in line
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("url", ["mysql+pymysql://u@h/db", "oracle://u@h/db", "not a url"])
def test_unsupported_database_is_a_settings_error(url: str) -> None:
    with pytest.raises(InvalidSettingsError, match=r"supported databases: sqlite .*postgresql"):
        load_settings(database_url=url)


@pytest.mark.parametrize(
    "url", ["sqlite:///x.db", "postgres://u@h/db", "postgresql+psycopg://u@h/db"]
)
def test_supported_databases_are_accepted(url: str) -> None:
    assert load_settings(database_url=url).database_url.split(":")[0] in (
        "sqlite",
        "postgresql+psycopg",
    )


# --- API_KEY set but empty ---------------------------------------------------------------------


@pytest.fixture
def fresh_settings_cache() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize("key", ["", "   ", "\t"])
@pytest.mark.parametrize("argv", [["serve"], ["worker"], ["db", "upgrade"]], ids=" ".join)
def test_blank_api_key_refuses_to_start(
    argv: list[str], key: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**cli_env, "API_KEY": key, "DATABASE_URL": f"sqlite:///{tmp_path / 'lora.db'}"}
    result = run_cli(argv, env, tmp_path)
    assert_one_line_refusal(result, "API_KEY", "empty")
    assert not (tmp_path / "lora.db").exists()


@pytest.mark.parametrize("key", ["", "  "])
def test_blank_api_key_stops_the_app_factory(
    key: str, monkeypatch: pytest.MonkeyPatch, fresh_settings_cache: None, tmp_path: Path
) -> None:
    from lora_manager.api import create_app

    monkeypatch.setenv("API_KEY", key)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'lora.db'}")
    with pytest.raises(InvalidSettingsError, match="API_KEY: set but empty") as info:
        create_app()
    assert "\n" not in str(info.value)
    assert info.value.exit_code == ExitCode.USAGE


def test_a_real_api_key_and_no_api_key_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(api_key=" s3cret ").api_key is not None
    monkeypatch.delenv("API_KEY", raising=False)
    assert load_settings().api_key is None
