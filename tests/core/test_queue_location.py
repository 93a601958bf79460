"""Without REDIS_URL the job queue is a SQLite file whose default place does not depend on the
folder a command starts in: next to a SQLite database, else in the per-user data folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lora_manager.core.config import QUEUE_FILE_NAME, load_settings
from tests.support.postgres import free_port
from tests.support.processes import background
from tests.support.workers import WorkerProcess, worker_env

# Queue a job id (when given one), then print the queue file and its backlog.
QUEUE_SCRIPT = """\
import sys
from lora_manager.core.config import load_settings
from lora_manager.core.queue import JobQueue
from lora_manager.deliveries.tasks import DELIVER_TASK
queue = JobQueue(load_settings())
if len(sys.argv) > 1:
    queue.enqueue(DELIVER_TASK, sys.argv[1])
print(queue.settings.queue_file)
print(queue.backlog())
queue.close()
"""


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    first, second = tmp_path / "here", tmp_path / "elsewhere" / "deeper"
    first.mkdir()
    second.mkdir(parents=True)
    return first, second


@pytest.fixture
def env(cli_env: dict[str, str], db_url: str, tmp_path: Path) -> dict[str, str]:
    """No REDIS_URL, no QUEUE_PATH; the per-user data folder under tmp_path."""
    return {
        **worker_env(cli_env, DATABASE_URL=db_url),
        "XDG_DATA_HOME": str(tmp_path / "xdg"),
    }


def expected_queue(db_url: str, tmp_path: Path) -> Path:
    if db_url.startswith("sqlite"):
        return tmp_path / QUEUE_FILE_NAME  # next to tmp_path/lora.db
    return tmp_path / "xdg" / "lora-manager" / QUEUE_FILE_NAME


def run_in(folder: Path, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, cwd=folder, capture_output=True, text=True, timeout=60)


def queue_in(folder: Path, env: dict[str, str], *job_id: str) -> tuple[Path, int]:
    result = run_in(folder, [sys.executable, "-c", QUEUE_SCRIPT, *job_id], env)
    assert result.returncode == 0, result.stderr
    path, backlog = result.stdout.split()
    return Path(path), int(backlog)


def test_two_working_folders_share_one_queue(
    env: dict[str, str], db_url: str, folders: tuple[Path, Path], tmp_path: Path
) -> None:
    first, second = folders
    path_a, backlog_a = queue_in(first, env, "job-from-here")
    path_b, backlog_b = queue_in(second, env)
    assert path_a == path_b == expected_queue(db_url, tmp_path)
    assert (backlog_a, backlog_b) == (1, 1)  # the message queued in one folder, seen in the other
    assert path_a.is_file()
    assert not (first / "data").exists() and not (second / "data").exists()


def test_db_status_and_serve_say_where_the_queue_is(
    env: dict[str, str], db_url: str, folders: tuple[Path, Path], tmp_path: Path
) -> None:
    first, second = folders
    expected = f"SQLite ({expected_queue(db_url, tmp_path)})"
    status = run_in(first, ["lora-manager", "db", "status", "--json"], env)
    assert json.loads(status.stdout)["queue"] == expected, status.stderr
    text = run_in(first, ["lora-manager", "db", "status"], env)
    assert f"job queue: {expected}" in text.stdout
    argv = ["lora-manager", "serve", "--no-migrate", "--no-worker", "--port", str(free_port())]
    with background(argv, env, cwd=second) as process:
        serve = WorkerProcess(process, "serve")
        line = serve.wait_for_line("serve: job queue", timeout=30)
        serve.stop()
    assert line.endswith(f"serve: job queue {expected}")


def test_relative_paths_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("QUEUE_PATH", raising=False)
    settings = load_settings(database_url="sqlite:///./db/lora.db")
    assert settings.queue_file == tmp_path / "db" / QUEUE_FILE_NAME
    explicit = load_settings(queue_path=Path("q/jobs.db"))
    assert explicit.queue_file == tmp_path / "q" / "jobs.db"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/is/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    pg = load_settings(database_url="postgresql://u@h/db")
    home_data = tmp_path / "home" / ".local" / "share" / "lora-manager"
    assert pg.queue_file == home_data / QUEUE_FILE_NAME
