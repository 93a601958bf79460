"""`lora-manager`: serve the API, run the worker, and manage the database schema."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from enum import StrEnum
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer

from lora_manager.core.errors import ExitCode, LoraManagerError

if TYPE_CHECKING:  # imported inside the commands at run time, so `--help` stays fast
    from lora_manager.core.config import Settings
    from lora_manager.core.migrations import MigrationOutcome, MigrationRunner
    from lora_manager.ingest.service import ImportSummary

app = typer.Typer(
    help="LoRA Manager: catalog, compose and generate with your LoRA adapters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema: migrate, inspect, verify.", no_args_is_help=True)
app.add_typer(db_app, name="db")

P = ParamSpec("P")
R = TypeVar("R")


def say(message: str) -> None:
    """Progress and diagnostics go to stderr, so stdout stays machine-readable."""
    print(message, file=sys.stderr, flush=True)


class _MigrationProgressOnly(logging.Filter):
    """Alembic's "Running upgrade …" lines are progress; its context chatter is not."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or record.getMessage().startswith("Running ")


def configure_logging(level: str = "INFO") -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=level.upper(),
            format="%(asctime)s %(levelname)-5s [%(name)s] %(message)s",
            stream=sys.stderr,
        )
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    logging.getLogger("alembic.ddl").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.migration").addFilter(_MigrationProgressOnly())


def friendly_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Expected failures print one clear line and exit with their code, never a traceback."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            return func(*args, **kwargs)
        except LoraManagerError as exc:
            say(f"error: {exc}")
            raise typer.Exit(int(exc.exit_code)) from None
        except SQLAlchemyError as exc:
            from lora_manager.core.db import short_error

            say(f"error: database error: {short_error(exc)}")
            raise typer.Exit(int(ExitCode.FAILURE)) from None
        except KeyboardInterrupt:
            say("interrupted")
            raise typer.Exit(130) from None

    return wrapper


def _settings(**overrides: object) -> Settings:
    from lora_manager.core.config import load_settings
    from lora_manager.core.errors import InvalidSettingsError

    try:
        settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except InvalidSettingsError as exc:
        say(f"error: {exc}")
        raise typer.Exit(int(exc.exit_code)) from None
    configure_logging(settings.log_level)
    return settings


def _runner(settings: Settings) -> MigrationRunner:
    from lora_manager.core.migrations import MigrationRunner

    return MigrationRunner(settings, echo=say)


def _version_callback(value: bool) -> None:
    if value:
        from lora_manager.core.version import package_version

        print(f"lora-manager {package_version()}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True)
    ] = False,
) -> None:
    """LoRA Manager."""


# -- processes ---------------------------------------------------------------------------


@app.command()
@friendly_errors
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (PORT)")] = None,
    migrate: Annotated[
        bool | None,
        typer.Option(
            "--migrate/--no-migrate",
            help="Wait for the database and upgrade to head first (MIGRATE_ON_STARTUP)",
        ),
    ] = None,
    worker: Annotated[
        bool | None,
        typer.Option(
            "--worker/--no-worker",
            help="Also consume the job queue in this process (IN_PROCESS_WORKER; "
            "default: on when REDIS_URL is unset)",
        ),
    ] = None,
) -> None:
    """Run the API server (and, on the embedded default, a queue consumer with it)."""
    import uvicorn

    from lora_manager.api import create_app
    from lora_manager.api.app import migrate_to_head

    settings = _settings(host=host, port=port, migrate_on_startup=migrate, in_process_worker=worker)
    from lora_manager.core.queue import describe as describe_queue

    say(f"serve: job queue {describe_queue(settings)}")
    if settings.migrate_on_startup:
        migrate_to_head(settings)
    api = create_app(settings, migrate_on_startup=False, run_worker=settings.runs_worker_in_process)
    uvicorn.run(api, host=settings.host, port=settings.port, log_level=settings.log_level.lower())


@app.command()
@friendly_errors
def worker(
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", "-w", min=1, max=64, help="Jobs run at once (WORKER_THREADS, default 4)"
        ),
    ] = None,
) -> None:
    """Run a worker: waits until the schema is at head, then consumes delivery jobs."""
    from lora_manager.worker import Worker

    process = Worker(_settings(), echo=say, threads=workers)
    process.install_signal_handlers()
    raise typer.Exit(process.run())


@app.command()
def health(
    url: Annotated[
        str | None, typer.Option(help="Readiness URL (default: http://127.0.0.1:PORT/health/ready)")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer")] = 5.0,
) -> None:
    """Probe the API's readiness: exit 0 when it answers 200, 1 otherwise."""
    import urllib.error
    import urllib.request

    if url is None:
        url = f"http://127.0.0.1:{_settings().port}/health/ready"
    if not url.startswith(("http://", "https://")):
        say(f"error: not an http(s) URL: {url}")
        raise typer.Exit(int(ExitCode.USAGE))
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (checked above)
            body = response.read().decode(errors="replace")
            print(body)
            raise typer.Exit(0 if response.status == 200 else 1)
    except urllib.error.HTTPError as exc:
        say(f"not ready: HTTP {exc.code} {exc.read().decode(errors='replace')}")
    except (urllib.error.URLError, OSError) as exc:
        say(f"not ready: {getattr(exc, 'reason', exc)}")
    raise typer.Exit(1)


@app.command("import")
@friendly_errors
def import_library(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Folders to import (default: LORA_ROOTS)")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would change; change nothing")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON")] = False,
    workers: Annotated[
        int | None, typer.Option(help="Hashing threads (default: one per core)")
    ] = None,
    ignore: Annotated[
        list[str] | None,
        typer.Option(help="Also skip names matching this glob (repeatable; IMPORT_IGNORE)"),
    ] = None,
) -> None:
    """Import model files and their sidecars into the catalog; rescans are incremental.

    Exit 0 when the import ran (broken files are listed in the summary, not fatal)."""
    from rich.console import Console

    from lora_manager.core.db import make_engine, make_session_factory
    from lora_manager.ingest.progress import RichImportProgress
    from lora_manager.ingest.runs import choose_roots
    from lora_manager.ingest.service import Importer

    settings = _settings(import_workers=workers)
    if ignore:
        settings.import_ignore = [*settings.import_ignore, *ignore]
    # The same confinement as POST /v1/imports: LORA_ROOTS must be set, and folders given
    # must lie inside it.
    roots = [Path(root) for root in choose_roots(settings, [str(path) for path in paths or []])]
    runner = _runner(settings)
    runner.wait()
    if settings.migrate_on_startup:
        runner.upgrade()
    else:
        runner.require_head()
    engine = make_engine(settings)
    try:
        with RichImportProgress(Console(stderr=True)) as progress:
            summary = Importer(
                settings,
                make_session_factory(engine),
                progress=progress,
                echo=say,
                dry_run=dry_run,
            ).run(roots)
        embedding_run = None
        if summary.changed_catalog:
            from lora_manager.recommendations.service import refresh_after_import

            embedding_run = refresh_after_import(make_session_factory(engine), settings)
    finally:
        engine.dispose()
    if embedding_run is not None and not as_json:
        say(f"embeddings: run {embedding_run} queued; a worker (or `serve`) computes them")
    if as_json:
        print(json.dumps(summary.to_dict(), default=str))
    else:
        _print_import_summary(summary)


def _print_import_summary(summary: ImportSummary) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    title = "Import (dry run: nothing was changed)" if summary.dry_run else "Import"
    kinds = ("new", "updated", "unchanged", "moved", "missing", "failed", "skipped")
    table = Table(*kinds, title=title)
    table.add_row(*(str(getattr(summary, k)) for k in kinds))
    console.print(table)
    rate = summary.files / summary.seconds if summary.seconds else 0.0
    console.print(
        f"{summary.files} files in {summary.seconds:.1f}s ({rate:.0f} files/s), "
        f"{summary.bytes_hashed / 1e6:.1f} MB hashed"
    )
    if summary.dry_run:
        _print_paths(
            "Changes (would be)",
            [
                {**c, "reason": f"{c['change']} {c.get('detail', '')}".strip()}
                for c in summary.changes
            ],
        )
    _print_paths("Failed", summary.failures)
    _print_paths("Skipped", summary.skips)
    _print_paths("Warnings", summary.warnings)


def _print_paths(title: str, rows: list[dict[str, str]], limit: int = 500) -> None:
    """`path: reason` lines, one per file, never cut to the terminal's width."""
    if not rows:
        return
    print(f"{title} ({len(rows)}):")
    for row in rows[:limit]:
        print(f"  {row['path']}: {row['reason']}")
    if len(rows) > limit:
        print(f"  … and {len(rows) - limit} more (--json lists every one)")


# -- db ----------------------------------------------------------------------------------

WaitOption = Annotated[
    bool, typer.Option("--wait/--no-wait", help="Wait for the database first (DB_WAIT_TIMEOUT)")
]


@db_app.command("wait")
@friendly_errors
def db_wait(
    timeout: Annotated[float | None, typer.Option(help="Seconds (default DB_WAIT_TIMEOUT)")] = None,
) -> None:
    """Wait until the database answers; exit 3 if it never does."""
    runner = _runner(_settings())
    waited = runner.wait(timeout)
    say(f"{runner.target.describe()} is up (waited {waited:.1f}s)")


# Lets relative revisions such as -1 through as arguments instead of unknown options.
REVISION_ARGS = {"ignore_unknown_options": True}


@db_app.command("upgrade", context_settings=REVISION_ARGS)
@friendly_errors
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision")] = "head",
    wait: WaitOption = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON")] = False,
) -> None:
    """Upgrade the schema (default: to head). Returns at once when already there."""
    runner = _runner(_settings())
    if wait:
        runner.wait()
    outcome = runner.upgrade(revision)
    _report(outcome, as_json)


@db_app.command("downgrade", context_settings=REVISION_ARGS)
@friendly_errors
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, e.g. -1 or an id or base")],
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask: downgrades can drop data")
    ] = False,
    wait: WaitOption = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON")] = False,
) -> None:
    """Roll the schema back to REVISION. Asks first, since columns and tables may be dropped."""
    settings = _settings()
    runner = _runner(settings)
    if wait:
        runner.wait()
    if not yes:
        status = runner.status()
        current = ", ".join(status.current) or "base"
        question = (
            f"Downgrade {runner.target.describe()} from {current} to {revision}? "
            "Columns and tables added since then are dropped with their data"
        )
        if not sys.stdin.isatty():
            say(f"error: {question}. Refusing without --yes (no terminal to ask).")
            raise typer.Exit(int(ExitCode.USAGE))
        if not typer.confirm(question, err=True):
            say("downgrade cancelled")
            raise typer.Exit(int(ExitCode.FAILURE))
    outcome = runner.downgrade(revision)
    _report(outcome, as_json)


def _report(outcome: MigrationOutcome, as_json: bool) -> None:
    if as_json:
        print(json.dumps(outcome.to_dict()))
        return
    after = ", ".join(outcome.after) or "base"
    if not outcome.applied:
        say(f"nothing to do: database already at {after}")
    else:
        say(f"{outcome.direction}d {len(outcome.applied)} revision(s); now at {after}")
    if outcome.backup:
        say(f"backup: {outcome.backup}")


@db_app.command("current")
@friendly_errors
def db_current(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show each revision")] = False,
) -> None:
    """The database's current revision (as `alembic current`)."""
    runner = _runner(_settings())
    runner.wait()
    output = runner.run_alembic("current", verbose=verbose)
    print(output.rstrip() or "(no revision: empty database)")


@db_app.command("history")
@friendly_errors
def db_history(
    revision_range: Annotated[
        str | None, typer.Option("--rev-range", "-r", help="e.g. base:head")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """The revision chain (as `alembic history`); needs no database."""
    import io

    from alembic import command

    from lora_manager.core.migrations import alembic_config

    out = io.StringIO()
    command.history(alembic_config(_settings(), stdout=out), revision_range, verbose=verbose)
    print(out.getvalue().rstrip())


@db_app.command("heads")
@friendly_errors
def db_heads(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """The chain's head revision(s); more than one means a merge is needed."""
    import io

    from alembic import command

    from lora_manager.core.migrations import alembic_config

    out = io.StringIO()
    command.heads(alembic_config(_settings(), stdout=out), verbose=verbose)
    print(out.getvalue().rstrip())


@db_app.command("check")
@friendly_errors
def db_check() -> None:
    """Fail (exit 5) on several heads, an applied revision edited afterwards, or models that
    differ from the migrations."""
    runner = _runner(_settings())
    runner.wait()
    problems = runner.check()
    if problems:
        for problem in problems:
            say(f"FAIL: {problem}")
        raise typer.Exit(int(ExitCode.CHECK_FAILED))
    say("OK: one head, the database is at head, no edited revisions, models match migrations")


class SqlDialect(StrEnum):
    postgresql = "postgresql"
    sqlite = "sqlite"


@db_app.command("sql")
@friendly_errors
def db_sql(
    revision_range: Annotated[
        str, typer.Argument(help="FROM:TO, e.g. f0a1b2c3d4e5:head")
    ] = "base:head",
    dialect: Annotated[SqlDialect, typer.Option(help="Dialect to render")] = SqlDialect.postgresql,
) -> None:
    """Print the SQL an upgrade would run, for a DBA to review (offline; no connection)."""
    print(_runner(_settings()).offline_sql(revision_range, dialect.value))


@db_app.command("status")
@friendly_errors
def db_status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    steps: Annotated[int, typer.Option(help="How many step-log rows to show")] = 10,
) -> None:
    """Where the database stands: reachable, current revision, head, pending, recent steps.
    Exit 0 at head, 6 when behind, 3 when the database does not answer."""
    from lora_manager.core.errors import DatabaseUnreachableError
    from lora_manager.core.queue import describe as describe_queue

    settings = _settings()
    runner = _runner(settings)
    report: dict[str, Any] = {
        "database": runner.target.describe(),
        "queue": describe_queue(settings),
    }
    try:
        runner.wait(timeout=0)
        status = runner.status()
    except DatabaseUnreachableError as exc:
        report.update(reachable=False, error=str(exc))
        code = ExitCode.DATABASE_UNREACHABLE
    else:
        report.update(
            reachable=True,
            current=list(status.current),
            head=list(status.heads),
            at_head=status.at_head,
            pending=status.pending,
            steps=runner.step_log(steps),
        )
        code = ExitCode.OK if status.at_head else ExitCode.SCHEMA_NOT_AT_HEAD
    if as_json:
        print(json.dumps(report, default=str))
    else:
        _print_status(report)
    raise typer.Exit(int(code))


def _print_status(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{report['database']}[/bold]")
    console.print(f"job queue: {report['queue']}", highlight=False, soft_wrap=True)
    if not report["reachable"]:
        console.print(f"[red]{report['error']}[/red]")
        return
    state = "[green]at head[/green]" if report["at_head"] else "[yellow]behind[/yellow]"
    console.print(
        f"current: {', '.join(report['current']) or 'base'}  head: "
        f"{', '.join(report['head'])}  {state}"
    )
    if report["pending"]:
        console.print(f"pending: {', '.join(report['pending'])}")
    table = Table("when (UTC)", "revision", "direction", "ms", "ok", "host", "version", "error")
    for step in report["steps"]:
        table.add_row(
            str(step["started_at"])[:19],
            step["revision"],
            step["direction"],
            f"{step['duration_ms']:.0f}",
            "yes" if step["success"] else "[red]no[/red]",
            step["host"],
            step["package_version"],
            (step["error"] or "")[:60],
        )
    if report["steps"]:
        console.print(table)


def main() -> None:
    app()
