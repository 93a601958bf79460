"""Settings that can never work stop every entry point at once: one line, a non-zero exit code,
no traceback, no secret from the value."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lora_manager.config import load_settings
from lora_manager.errors import ExitCode, InvalidSettingsError

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


def run_cli(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["lora-manager", *argv],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


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
