"""The project's error family: each expected failure has a clear message, an exit code for
the command line and an HTTP status for the API (api/errors.py turns them into JSON). No
web framework here: services and the worker raise these without loading one."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of `lora-manager` and the shell scripts that wrap it."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    DATABASE_UNREACHABLE = 3
    MIGRATION_LOCK_TIMEOUT = 4
    CHECK_FAILED = 5
    SCHEMA_NOT_AT_HEAD = 6


class LoraManagerError(Exception):
    """An expected failure: shown to the user as its message, never as a traceback."""

    exit_code: ExitCode = ExitCode.FAILURE
    status_code: int = 500

    @property
    def detail(self) -> str:
        return str(self)


class InvalidInputError(LoraManagerError):
    """The request is well formed but its values cannot be used."""

    exit_code = ExitCode.USAGE
    status_code = 422


class NotFoundError(LoraManagerError):
    status_code = 404


class ConflictError(LoraManagerError):
    """The request clashes with the current state (a running job, an import under way)."""

    status_code = 409


class ForbiddenError(LoraManagerError):
    """The request reaches outside what it may touch (a path out of the library roots)."""

    status_code = 403


class UnauthorizedError(LoraManagerError):
    status_code = 401


class UnavailableError(LoraManagerError):
    """A part the request needs is not there now (an optional extra, the queue)."""

    status_code = 503


class InvalidSettingsError(LoraManagerError):
    """A setting is missing, malformed or unsafe: nothing starts with it."""

    exit_code = ExitCode.USAGE


class DatabaseUnreachableError(LoraManagerError):
    exit_code = ExitCode.DATABASE_UNREACHABLE
    status_code = 503


class LockTimeoutError(LoraManagerError):
    """Another process held a migration or import lock past the deadline."""

    exit_code = ExitCode.MIGRATION_LOCK_TIMEOUT
    status_code = 409


class MigrationError(LoraManagerError):
    exit_code = ExitCode.FAILURE


class SchemaNotAtHeadError(LoraManagerError):
    exit_code = ExitCode.SCHEMA_NOT_AT_HEAD
    status_code = 503
