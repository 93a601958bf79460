"""The local-command back end: DELIVERY_CLI_COMMAND run from an argument list (never through a
shell) in its own process group, the prompt as its last argument or on stdin."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import IO, Any

from lora_manager.core.config import Settings
from lora_manager.core.errors import InvalidInputError
from lora_manager.deliveries.backends.base import (
    ERROR_EXCERPT,
    PROGRESS_INTERVAL,
    DeliveryContext,
    DeliveryError,
    DeliveryRequest,
    DeliveryResult,
)

CLI_OUTPUT_EXCERPT = 4_000
# Settings whose environment variables hold secrets the local command has no need for.
_SECRET_ENV = ("API_KEY", "DATABASE_URL", "REDIS_URL", "SDNEXT_USERNAME", "SDNEXT_PASSWORD")


class _TailReader(threading.Thread):
    """Drains a pipe, keeping only its last `keep` bytes (a chatty command costs no memory)."""

    def __init__(self, stream: IO[bytes], keep: int) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.keep = keep
        self.data = b""
        self.total = 0

    def run(self) -> None:
        try:
            while chunk := self.stream.read1(65536):  # type: ignore[attr-defined]
                self.total += len(chunk)
                self.data = (self.data + chunk)[-self.keep :]
        except (OSError, ValueError):
            pass

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")[-CLI_OUTPUT_EXCERPT:]


def _write_stdin(stream: IO[bytes], data: bytes) -> None:
    try:
        stream.write(data)
    except (BrokenPipeError, OSError, ValueError):
        pass  # the command does not read its input: its exit code tells the story
    finally:
        with contextlib.suppress(OSError):
            stream.close()


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()


def deliver_cli(
    settings: Settings,
    request: DeliveryRequest,
    *,
    cancel: Callable[[], bool] | None = None,
) -> DeliveryResult:
    """Run DELIVERY_CLI_COMMAND with the prompt as last argument (after
    DELIVERY_CLI_END_OF_OPTIONS, `--` by default, so a prompt such as "-rf x" or "--help" is
    never an option) or on stdin; `cancel` returning true stops it (its whole process group)."""
    command = list(settings.delivery_cli_command)
    if not command:
        raise DeliveryError("DELIVERY_CLI_COMMAND is not set", transient=False)
    via_stdin = settings.delivery_cli_prompt_via == "stdin"
    marker = [settings.delivery_cli_end_of_options] if settings.delivery_cli_end_of_options else []
    argv = command if via_stdin else [*command, *marker, request.prompt]
    env = {k: v for k, v in os.environ.items() if k.upper() not in _SECRET_ENV}
    env["LORA_JOB_ID"] = request.job_id
    env["LORA_NEGATIVE_PROMPT"] = request.negative_prompt or ""
    name = PurePosixPath(command[0]).name
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if via_stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # its own process group, so a timeout kills all of it
        )
    except (OSError, ValueError) as exc:
        raise DeliveryError(
            f"command {name!r} could not start: {type(exc).__name__}", transient=False
        ) from None
    assert process.stdout is not None and process.stderr is not None
    readers = [
        _TailReader(process.stdout, CLI_OUTPUT_EXCERPT * 4),
        _TailReader(process.stderr, CLI_OUTPUT_EXCERPT * 4),
    ]
    for reader in readers:
        reader.start()
    if via_stdin:
        assert process.stdin is not None
        threading.Thread(
            target=_write_stdin,
            args=(process.stdin, request.prompt.encode("utf-8")),
            daemon=True,
        ).start()
    timed_out = cancelled = False
    deadline = time.monotonic() + settings.delivery_cli_timeout
    while True:
        try:
            process.wait(timeout=min(PROGRESS_INTERVAL, max(deadline - time.monotonic(), 0)))
            break
        except subprocess.TimeoutExpired:
            timed_out = time.monotonic() >= deadline
            cancelled = cancel is not None and cancel()
            if timed_out or cancelled:
                _kill_group(process)
                process.wait()
                break
    for reader in readers:
        reader.join(timeout=5)  # a descendant that left the group may hold the pipe open
    stdout, stderr = readers[0].text(), readers[1].text()
    summary = {
        "backend": "cli",
        "command": name,
        "exit_code": process.returncode,
        "stdout": stdout,
        "stderr": stderr,
    }
    if cancelled:
        raise DeliveryError("cancelled", transient=False, detail=summary)
    if timed_out:
        raise DeliveryError(
            f"command {name!r} timed out after {settings.delivery_cli_timeout:g} s",
            transient=True,
            detail=summary,
        )
    if process.returncode != 0:
        excerpt = (stderr or stdout)[-ERROR_EXCERPT:]
        raise DeliveryError(
            f"command {name!r} exited with code {process.returncode}: {excerpt}",
            transient=False,
            detail=summary,
        )
    return DeliveryResult(summary=summary)


class CliBackend:
    """No params: the command comes from the settings."""

    mode = "cli"

    def check_params(self, settings: Settings, params: dict[str, Any]) -> dict[str, Any]:
        if params:
            raise InvalidInputError(
                "cli mode takes no params (the command comes from the settings)"
            )
        if not settings.delivery_cli_command:
            raise InvalidInputError("cli mode is not configured: set DELIVERY_CLI_COMMAND")
        return params

    def deliver(
        self, settings: Settings, request: DeliveryRequest, context: DeliveryContext
    ) -> DeliveryResult:
        return deliver_cli(settings, request, cancel=context.cancel)
