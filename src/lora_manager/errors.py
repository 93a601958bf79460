"""The project's error family: each expected failure has a clear message and an exit code."""

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


class InvalidSettingsError(LoraManagerError):
    """A setting is missing, malformed or unsafe: nothing starts with it."""

    exit_code = ExitCode.USAGE


class DatabaseUnreachableError(LoraManagerError):
    exit_code = ExitCode.DATABASE_UNREACHABLE


class LockTimeoutError(LoraManagerError):
    """Another process held a migration or import lock past the deadline."""

    exit_code = ExitCode.MIGRATION_LOCK_TIMEOUT


MigrationLockTimeoutError = LockTimeoutError


class MigrationError(LoraManagerError):
    exit_code = ExitCode.FAILURE


class SchemaNotAtHeadError(LoraManagerError):
    exit_code = ExitCode.SCHEMA_NOT_AT_HEAD
