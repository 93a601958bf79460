"""Every command in MIGRATIONS.md is accurate: the ones that can run without Docker run here
(inside `docker compose exec api …` the container's working directory is the repository
root), the Docker and Kubernetes ones name services and files that exist."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.processes import DOCKER_DIR, REPO_ROOT

DOC = DOCKER_DIR / "MIGRATIONS.md"
EXAMPLE_REVISION = "a1f4d5d0b6c7"
EXEC_PREFIX = "docker compose exec api "


def shell_commands(markdown: str) -> list[str]:
    """Commands of the ```bash blocks: comments dropped, quoted multi-line commands joined."""
    commands: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, flags=re.S):
        pending = ""
        for line in block.splitlines():
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            pending = f"{pending}\n{line}" if pending else line
            if pending.count('"') % 2 == 0:
                commands.append(pending.replace("<revision>", EXAMPLE_REVISION))
                pending = ""
        assert not pending, f"unterminated command in MIGRATIONS.md: {pending}"
    return commands


def local_argv(command: str) -> list[str]:
    """What `command` runs inside the API container, as run from the repository root."""
    if command.startswith(EXEC_PREFIX):
        command = command[len(EXEC_PREFIX) :]
    argv = shlex.split(command)
    if argv[0] == "python":
        argv[0] = sys.executable
    return argv


def compose_services() -> dict[str, dict]:
    return yaml.safe_load((DOCKER_DIR / "docker-compose.yml").read_text())["services"]


def check_docker_only(command: str) -> None:
    argv = shlex.split(command)
    if argv[:2] == ["docker", "compose"]:
        services = compose_services()
        if "--profile" in argv:
            profile = argv[argv.index("--profile") + 1]
            service = argv[-1]
            assert profile in services[service].get("profiles", []), command
        for name in argv[argv.index("up") + 1 :] if "up" in argv else []:
            if not name.startswith("-"):
                assert name in services, command
        return
    if argv[0] == "kubectl":
        for index, arg in enumerate(argv):
            if arg == "-f":
                assert (REPO_ROOT / argv[index + 1]).is_file(), command
        return
    raise AssertionError(f"MIGRATIONS.md command not covered by this test: {command}")


def test_every_migrations_doc_command_works(db_url: str, cli_env: dict[str, str]) -> None:
    env = {**cli_env, "DATABASE_URL": db_url}
    commands = shell_commands(DOC.read_text())
    ran = []
    for command in commands:
        runs_locally = command.startswith(
            (EXEC_PREFIX, "lora-manager ", "./infrastructure/")
        ) and not command.startswith(f"{EXEC_PREFIX}--")
        if not runs_locally:
            check_docker_only(command)
            continue
        result = subprocess.run(
            local_argv(command),
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        assert "Traceback" not in result.stderr, command
        ran.append((command, result.stdout))
    outputs = dict(ran)
    assert (
        outputs[
            EXEC_PREFIX + 'python -c "\nfrom sqlalchemy import create_engine\nimport os\n'
            "engine = create_engine(os.getenv('DATABASE_URL'))\nconnection = engine.connect()\n"
            "print('Database connection successful!')\n\""
        ].strip()
        == "Database connection successful!"
    )
    assert len(ran) >= 15  # the container commands, the runner's and the scripts' all ran


def test_doc_lists_the_chain_as_it_is() -> None:
    listed = re.findall(r"([0-9a-f]{12}_\w+)\.py", DOC.read_text())
    files = sorted(p.stem for p in (REPO_ROOT / "infrastructure/alembic/versions").glob("*.py"))
    assert sorted(listed) == files


def test_doc_env_file_line_matches_backend_env() -> None:
    line = "DATABASE_URL=postgresql+psycopg://postgres:postgres@postgres:5432/lora"
    assert line in DOC.read_text()
    assert line in (DOCKER_DIR / "backend.env").read_text().splitlines()


def test_doc_exit_codes_match_the_code() -> None:
    from lora_manager.core.errors import ExitCode

    text = DOC.read_text()
    for code, words in [
        (ExitCode.DATABASE_UNREACHABLE, "database unreachable"),
        (ExitCode.MIGRATION_LOCK_TIMEOUT, "lock"),
        (ExitCode.CHECK_FAILED, "`db check` found problems"),
        (ExitCode.SCHEMA_NOT_AT_HEAD, "schema"),
    ]:
        assert re.search(rf"`{int(code)}` [^,]*{re.escape(words)}", text), (code, words)


def test_scripts_are_committed_executable() -> None:
    listing = subprocess.run(
        ["git", "ls-files", "-s", "infrastructure/docker"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    modes = {Path(line.split("\t")[1]).name: line.split()[0] for line in listing.splitlines()}
    for script in ("start-api.sh", "migrate.sh", "health-check.sh"):
        assert modes.get(script) == "100755", f"{script} is not committed executable"
