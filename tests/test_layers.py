"""The layers hold: the worker runs without the web framework, and import-linter's contracts
(entry points > features > core, features one way only) are kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.processes import BIN_DIR, REPO_ROOT

# What `lora-manager worker` loads and builds before it consumes, plus every feature's
# services, repositories and tasks: none of it may pull in FastAPI or Starlette.
WORKER_IMPORTS = """
import json, sys

import lora_manager.cli
import lora_manager.catalog.repository
import lora_manager.catalog.service
import lora_manager.deliveries.backends
import lora_manager.deliveries.repository
import lora_manager.deliveries.runner
import lora_manager.deliveries.service
import lora_manager.deliveries.tasks
import lora_manager.ingest.service
import lora_manager.recommendations.embedding
import lora_manager.recommendations.repository
import lora_manager.recommendations.service
import lora_manager.recommendations.tasks
from lora_manager.core.config import load_settings
from lora_manager.worker import Worker
from lora_manager.worker.consumer import QueueConsumer

settings = load_settings(database_url=sys.argv[1], queue_path=sys.argv[2])
Worker(settings, threads=1)
consumer = QueueConsumer(settings, threads=1)
consumer.queue.huey  # opened, every feature's task registered
loaded = [name for name in ("fastapi", "starlette") if name in sys.modules]
consumer.runner.close()
consumer.queue.close()
consumer.engine.dispose()
print(json.dumps(loaded))
"""


def test_the_worker_and_the_features_below_the_api_load_no_web_framework(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_"))}
    env["LORA_MANAGER_ENV_FILE"] = str(tmp_path / "no-such.env")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            WORKER_IMPORTS,
            f"sqlite:///{tmp_path / 'lora.db'}",
            str(tmp_path / "queue.db"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_the_import_linter_contracts_hold() -> None:
    """The layers of docs/ARCHITECTURE.md, as pyproject's import-linter contracts state them."""
    done = subprocess.run(
        [str(BIN_DIR / "lint-imports"), "--no-cache"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout
    assert done.stdout.count(" KEPT") >= 2
