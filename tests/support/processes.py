"""Running the project's commands and scripts as real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO_ROOT / "infrastructure" / "docker"
# Where this interpreter's console scripts are: `lora-manager`, `alembic`, `schemathesis`.
BIN_DIR = Path(sys.executable).parent


def http_status(url: str, timeout: float = 1.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback)
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


def wait_for_status(url: str, status: int, timeout: float) -> float:
    """Seconds until `url` answers `status`; raises TimeoutError past `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if http_status(url, timeout=0.5) == status:
            return time.monotonic() - started
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer {status} within {timeout}s")


@contextlib.contextmanager
def background(
    argv: list[str], env: dict[str, str], cwd: Path = REPO_ROOT
) -> Iterator[subprocess.Popen[str]]:
    """Start a process; on exit stop it with SIGTERM (SIGKILL if it lingers)."""
    process = subprocess.Popen(
        argv,
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


@contextlib.contextmanager
def serving(
    argv: list[str], env: dict[str, str], ready_url: str, timeout: float = 60.0
) -> Iterator[subprocess.Popen[str]]:
    """`background`, once `ready_url` answers 200; if it never does, the process is stopped
    and its output raised."""
    with background(argv, env) as process:
        try:
            wait_for_status(ready_url, 200, timeout)
        except TimeoutError:
            process.terminate()
            out, err = process.communicate(timeout=10)
            raise RuntimeError(f"{' '.join(argv)} did not get ready:\n{out}\n{err}") from None
        yield process


def run_cli(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`lora-manager ARGV` to its end (at most a minute), its output captured as text."""
    return subprocess.run(
        ["lora-manager", *argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )
