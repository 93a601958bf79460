"""The deployment scripts and the CLI as real processes: migrate.sh, start-api.sh,
health-check.sh, the worker, and `alembic` from infrastructure/."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from lora_manager.core.errors import ExitCode
from lora_manager.core.migrations import head_revisions, script_directory
from tests.support.postgres import PostgresServer, free_port, start_postgres
from tests.support.processes import BIN_DIR, DOCKER_DIR, REPO_ROOT, background, wait_for_status

HEAD = head_revisions()[0]
CHAIN = [s.revision for s in reversed(list(script_directory().walk_revisions()))]


def run(argv: list[str], env: dict[str, str], cwd: Path = REPO_ROOT, timeout: float = 120):
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def current_revision(url: str) -> str | None:
    engine = create_engine(url)
    with engine.connect() as connection:
        value = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    engine.dispose()
    return value


@pytest.mark.parametrize("shell", ["exec", "sh"])
def test_migrate_script_upgrades_and_is_idempotent(
    shell: str, db_url: str, cli_env: dict[str, str]
) -> None:
    script = str(DOCKER_DIR / "migrate.sh")
    argv = [script] if shell == "exec" else ["sh", script]
    env = {**cli_env, "DATABASE_URL": db_url}
    first = run(argv, env)
    assert first.returncode == 0, first.stderr
    assert f"upgraded {len(CHAIN)} revision(s); now at {HEAD}" in first.stderr
    again = run(argv, env)
    assert again.returncode == 0 and f"nothing to do: database already at {HEAD}" in again.stderr
    assert current_revision(db_url) == HEAD


def test_migrate_script_takes_a_revision_and_a_downgrade(
    sqlite_url: str, cli_env: dict[str, str]
) -> None:
    env = {**cli_env, "DATABASE_URL": sqlite_url}
    script = str(DOCKER_DIR / "migrate.sh")
    assert run([script, "cbab2373ecb9"], env).returncode == 0
    assert current_revision(sqlite_url) == "cbab2373ecb9"
    assert run([script], env).returncode == 0
    down = run([script, "downgrade", "f0a1b2c3d4e5"], env)
    assert down.returncode == 0, down.stderr
    assert current_revision(sqlite_url) == "f0a1b2c3d4e5"
    usage = run([script, "downgrade"], env)
    assert usage.returncode == 2 and "usage" in usage.stderr


def test_eight_concurrent_migrators_apply_each_revision_once(
    pg_server: PostgresServer, cli_env: dict[str, str]
) -> None:
    url = pg_server.create_database()
    env = {**cli_env, "DATABASE_URL": url}
    processes = [
        subprocess.Popen(
            [str(DOCKER_DIR / "migrate.sh")],
            env=env,
            cwd=REPO_ROOT,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(8)
    ]
    results = [(p.wait(180), p.communicate()[1]) for p in processes]
    assert [code for code, _ in results] == [0] * 8, [err for _, err in results]
    applied = [err for _, err in results if f"upgraded {len(CHAIN)} revision(s)" in err]
    assert len(applied) == 1
    engine = create_engine(url)
    with engine.connect() as connection:
        steps = (
            connection.execute(
                text(
                    "SELECT revision FROM lora_migration_log "
                    "WHERE direction = 'upgrade' ORDER BY id"
                )
            )
            .scalars()
            .all()
        )
    engine.dispose()
    assert steps == CHAIN  # each revision exactly once, in order
    assert current_revision(url) == HEAD


def test_start_api_waits_for_a_database_that_comes_up_late(cli_env: dict[str, str]) -> None:
    pg_port, api_port = free_port(), free_port()
    env = {
        **cli_env,
        "DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{pg_port}/postgres",
        "DB_WAIT_TIMEOUT": "60",
        "PORT": str(api_port),
    }
    servers: list[PostgresServer] = []
    late = threading.Timer(10.0, lambda: servers.append(start_postgres(pg_port)))
    try:
        with background([str(DOCKER_DIR / "start-api.sh")], env) as api:
            late.start()
            waited = wait_for_status(f"http://127.0.0.1:{api_port}/health/ready", 200, 60)
            assert api.poll() is None
        assert waited >= 10
        assert current_revision(env["DATABASE_URL"]) == HEAD
    finally:
        late.join()
        for server in servers:
            server.stop()
            shutil.rmtree(server.data_dir.parent, ignore_errors=True)


@pytest.mark.parametrize("script", ["start-api.sh", "migrate.sh"])
def test_database_that_never_comes_up_fails_clearly_within_the_deadline(
    script: str, cli_env: dict[str, str]
) -> None:
    port = free_port()
    env = {
        **cli_env,
        "DATABASE_URL": f"postgresql+psycopg://postgres:pw@127.0.0.1:{port}/lora",
        "DB_WAIT_TIMEOUT": "3",
        "PORT": str(free_port()),
    }
    started = time.monotonic()
    result = run(["sh", str(DOCKER_DIR / script)], env, timeout=30)
    elapsed = time.monotonic() - started
    assert result.returncode == ExitCode.DATABASE_UNREACHABLE
    assert f"host=127.0.0.1 port={port} database=lora" in result.stderr
    assert "database unreachable" in result.stderr and "last error" in result.stderr
    assert "Traceback" not in result.stderr and ":pw@" not in result.stderr
    assert elapsed < 15


def test_health_check_script_follows_readiness(sqlite_url: str, cli_env: dict[str, str]) -> None:
    port = free_port()
    env = {**cli_env, "DATABASE_URL": sqlite_url, "PORT": str(port)}
    probe = ["sh", str(DOCKER_DIR / "health-check.sh")]
    assert run(probe, env).returncode == 1  # nothing listens yet
    argv = [sys.executable, "-m", "lora_manager", "serve", "--no-migrate", "--port", str(port)]
    with background(argv, env):
        wait_for_status(f"http://127.0.0.1:{port}/health/live", 200, 30)
        behind = run(probe, env)
        assert behind.returncode == 1 and "schema behind" in behind.stderr
        assert run(["lora-manager", "db", "upgrade"], env).returncode == 0
        time.sleep(0.1)
        assert run(probe, env).returncode == 0


def test_worker_waits_for_the_schema_then_stops_cleanly_on_sigterm(
    sqlite_url: str, cli_env: dict[str, str]
) -> None:
    env = {**cli_env, "DATABASE_URL": sqlite_url}
    worker = subprocess.Popen(
        ["lora-manager", "worker"],
        env=env,
        cwd=REPO_ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(worker.stderr), daemon=True)
        reader.start()
        deadline = time.monotonic() + 30
        while not any("waiting for the schema" in line for line in lines):
            assert time.monotonic() < deadline, lines
            time.sleep(0.05)
        assert not any("schema at head" in line for line in lines)
        assert run(["lora-manager", "db", "upgrade"], env).returncode == 0
        while not any("schema at head, consuming" in line for line in lines):
            assert time.monotonic() < deadline, lines
            time.sleep(0.05)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(10) == 0
        reader.join(5)
        assert any("stopped cleanly" in line for line in lines)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_seed_alembic_commands_work_from_infrastructure(
    sqlite_url: str, cli_env: dict[str, str]
) -> None:
    env = {**cli_env, "DATABASE_URL": sqlite_url}
    infrastructure = REPO_ROOT / "infrastructure"
    alembic = [str(BIN_DIR / "alembic")]
    up = run([*alembic, "upgrade", "a1f4d5d0b6c7"], env, cwd=infrastructure)
    assert up.returncode == 0, up.stderr
    assert "Running upgrade" in up.stderr  # env.py keeps alembic's own progress output
    current = run([*alembic, "current"], env, cwd=infrastructure)
    assert current.returncode == 0 and "a1f4d5d0b6c7" in current.stdout
    verbose = run([*alembic, "current", "-v"], env, cwd=infrastructure)
    assert "Rev: a1f4d5d0b6c7" in verbose.stdout
    history = run([*alembic, "history"], env, cwd=infrastructure)
    assert "5f681a8fe826" in history.stdout and f"-> {HEAD} (head)" in history.stdout
    assert run([*alembic, "upgrade", "head"], env, cwd=infrastructure).returncode == 0
    down = run([*alembic, "downgrade", "e3c1f6a5c2b8"], env, cwd=infrastructure)
    assert down.returncode == 0, down.stderr
    from_root = run([*alembic, "-c", "infrastructure/alembic.ini", "current"], env)
    assert "e3c1f6a5c2b8" in from_root.stdout
    assert run([*alembic, "-c", "infrastructure/alembic.ini", "check"], env).returncode != 0
    assert run([*alembic, "upgrade", "head"], env, cwd=infrastructure).returncode == 0
    check = run([*alembic, "check"], env, cwd=infrastructure)
    assert check.returncode == 0, check.stderr
    # Steps applied by plain alembic land in the same step log the runner keeps.
    status = run(["lora-manager", "db", "check"], env)
    assert status.returncode == 0, status.stderr


def test_cli_db_commands(sqlite_url: str, cli_env: dict[str, str]) -> None:
    env = {**cli_env, "DATABASE_URL": sqlite_url}
    status = run(["lora-manager", "db", "status", "--json"], env)
    assert status.returncode == ExitCode.SCHEMA_NOT_AT_HEAD
    assert '"at_head": false' in status.stdout
    assert run(["lora-manager", "db", "wait", "--timeout", "2"], env).returncode == 0
    assert run(["lora-manager", "db", "upgrade", "--json"], env).returncode == 0
    heads = run(["lora-manager", "db", "heads"], env)
    assert heads.stdout.strip() == f"{HEAD} (head)"
    current = run(["lora-manager", "db", "current", "-v"], env)
    assert f"Rev: {HEAD} (head)" in current.stdout
    history = run(["lora-manager", "db", "history"], env)
    assert all(revision in history.stdout for revision in CHAIN)
    assert run(["lora-manager", "db", "check"], env).returncode == 0
    status = run(["lora-manager", "db", "status"], env)
    assert status.returncode == 0 and "at head" in status.stdout
    sql = run(["lora-manager", "db", "sql", "base:5f681a8fe826"], env)
    assert "CREATE TABLE adapter" in sql.stdout
    refused = run(["lora-manager", "db", "downgrade", "-1"], env)
    assert refused.returncode == ExitCode.USAGE and "Refusing without --yes" in refused.stderr
    assert current_revision(sqlite_url) == HEAD
    down = run(["lora-manager", "db", "downgrade", "-1", "--yes"], env)
    assert down.returncode == 0 and current_revision(sqlite_url) == CHAIN[-2]
    bad = run(["lora-manager", "db", "upgrade", "nope"], env)
    assert bad.returncode == ExitCode.FAILURE and "unknown revision 'nope'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_invalid_settings_are_a_usage_error(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "DB_WAIT_TIMEOUT": "soon"}
    result = run(["lora-manager", "db", "status"], env)
    assert result.returncode == ExitCode.USAGE
    assert "DB_WAIT_TIMEOUT" in result.stderr and "Traceback" not in result.stderr


def test_settings_come_from_the_env_file(tmp_path: Path, cli_env: dict[str, str]) -> None:
    env_file = tmp_path / "backend.env"
    database = tmp_path / "from-env-file.db"
    env_file.write_text(f"DATABASE_URL=sqlite:///{database}\n")
    env = {**cli_env, "LORA_MANAGER_ENV_FILE": str(env_file)}
    assert run(["lora-manager", "db", "upgrade"], env).returncode == 0
    assert database.exists()


def test_installed_package_migrates_from_another_directory(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    wheels = tmp_path / "wheels"
    build = run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(REPO_ROOT),
        ],
        cli_env,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    target = tmp_path / "site"
    wheel = next(wheels.glob("lora_manager-*.whl"))
    install = run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
        cli_env,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    database = tmp_path / "installed.db"
    env = {**cli_env, "PYTHONPATH": str(target), "DATABASE_URL": f"sqlite:///{database}"}
    code = (
        "import lora_manager, lora_manager.core.migrations as m; "
        "print(lora_manager.__file__); print(m.script_location())"
    )
    where = run([sys.executable, "-c", code], env, cwd=elsewhere)
    assert where.stdout.splitlines() == [
        str(target / "lora_manager" / "__init__.py"),
        str(target / "lora_manager" / "_alembic"),
    ]
    upgrade = run([sys.executable, "-m", "lora_manager", "db", "upgrade"], env, cwd=elsewhere)
    assert upgrade.returncode == 0, upgrade.stderr
    assert current_revision(f"sqlite:///{database}") == HEAD
    assert os.listdir(elsewhere) == []  # nothing written into the working directory
