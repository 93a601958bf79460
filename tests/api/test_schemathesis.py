"""Schemathesis against a live `lora-manager serve`, on SQLite and on PostgreSQL: every phase
(examples, coverage, fuzzing, stateful) and every check, over a small imported library, with
the API key. It must find no server error and no response that breaks the OpenAPI document.

Bounded: a fixed seed and --max-examples keep each database's run well under a minute or
two. Nothing leaves loopback: webhooks may only call a closed loopback port, the cli and
sdnext back ends are not configured (creating such jobs is a 422), imports stay in the
temporary library root.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.library import kohya_metadata, write_preview, write_safetensors
from tests.support.postgres import free_port
from tests.support.processes import BIN_DIR, serving

KEY = "schemathesis-key"
MAX_EXAMPLES = 100
# Checks left out, each for a reason of meaning, not to hide a fault:
# - positive_data_acceptance expects every schema-valid request to succeed, but a
#   schema-valid request may name what does not exist or does not fit together, and the API
#   answers a documented 422: unknown adapter ids to compose, recommend for or recompute,
#   feedback on an adapter the session never suggested, tag/untag with no tags, a by-trigger
#   q without letters or digits, a delivery mode that is not configured. A schema cannot say
#   these (they depend on the data), so the check would flag correct answers.
EXCLUDED_CHECKS = ["positive_data_acceptance"]
# negative_data_rejection is off for the GET operations whose query takes an array of free
# strings (tag, tag_all, base_model, exclude): in a query string every value is text, so the
# "boolean" true or the "integer" 3 it sends as a violation arrives as the strings "true" and
# "3", which are valid tags or ids; a scalar sent twice (q=a&q=b) is read as its last value.
# Nothing the server receives there is invalid. Every other check stays on for them.
CONFIG = """
[[operations]]
include-method = "GET"
include-path-regex = "^/v1/adapters$|^/v1/recommendations/similar/"
checks.negative_data_rejection.enabled = false
"""
# Never excluded (asserted below, so a change of EXCLUDED_CHECKS cannot drop them silently).
REQUIRED_CHECKS = {
    "not_a_server_error",
    "response_schema_conformance",
    "content_type_conformance",
    "status_code_conformance",
}


def _post(port: int, path: str, body: object) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"X-API-Key": KEY, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (loopback)
        answer: dict[str, object] = json.loads(response.read())
        return answer


def _env(db_url: str, folder: Path, port: int) -> dict[str, str]:
    return {
        "PATH": f"{BIN_DIR}:/usr/bin:/bin",
        "HOME": str(folder),
        "LORA_MANAGER_ENV_FILE": str(folder / "none.env"),
        "DATABASE_URL": db_url,
        "LORA_ROOTS": str(folder / "loras"),
        "API_KEY": KEY,
        "PORT": str(port),
        "RESULTS_DIR": str(folder / "results"),
        "QUEUE_PATH": str(folder / "queue.db"),
        # A loopback port nothing listens on: a job that is accepted fails to connect.
        "DELIVERY_HTTP_ALLOWLIST": f"http://127.0.0.1:{free_port()}/",
        "JOB_MAX_ATTEMPTS": "1",
        "PYTHONUNBUFFERED": "1",
        "LOG_LEVEL": "WARNING",
    }


@pytest.fixture
def live_api(db_url: str, tmp_path: Path) -> Iterator[tuple[int, str]]:
    """`serve` (with its in-process worker) on a migrated database holding a small imported
    library, one delivery job and one embedding run: (port, allowlisted webhook prefix)."""
    root = tmp_path / "loras"
    for seed, stem in enumerate(["ink-wash", "neon-city", "soft-light", "paper-cut"]):
        model = root / f"{stem}.safetensors"
        write_safetensors(model, kohya_metadata(seed=seed), seed=seed)
        if seed % 2 == 0:
            write_preview(model)
    port = free_port()
    env = _env(db_url, tmp_path, port)
    imported = subprocess.run(
        ["lora-manager", "import"], env=env, capture_output=True, text=True, timeout=300
    )
    assert imported.returncode == 0, imported.stdout + imported.stderr
    with serving(["lora-manager", "serve"], env, f"http://127.0.0.1:{port}/health/ready", 90):
        hook = env["DELIVERY_HTTP_ALLOWLIST"]
        _post(port, "/v1/deliveries", {"mode": "http", "prompt": "a cat", "params": {"url": hook}})
        _post(port, "/v1/recommendations/embeddings/recompute", {})
        yield port, hook


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    live_api: tuple[int, str], tmp_path: Path
) -> None:
    assert not REQUIRED_CHECKS & set(EXCLUDED_CHECKS)
    port, _ = live_api
    report = tmp_path / "schemathesis"
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    argv = [
        str(BIN_DIR / "schemathesis"),
        "--config-file",
        str(config),
        "run",
        f"http://127.0.0.1:{port}/openapi.json",
        "--checks",
        "all",
        "--exclude-checks",
        ",".join(EXCLUDED_CHECKS),
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        "20261205",
        # One worker: hypothesis describes lambdas with ast.parse, which is not thread-safe on
        # CPython 3.11 ("AST constructor recursion depth mismatch" with --workers 2).
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "-H",
        f"X-API-Key: {KEY}",
        "--report",
        "junit",
        "--report-dir",
        str(report),
    ]
    result = subprocess.run(
        argv, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-20_000:]
    assert "Server error" not in output and "violates schema" not in output, output[-20_000:]
    # Every phase ran over every operation (a run that tested nothing would also exit 0).
    assert "Tested: " in output and "Selected: " in output
    selected = output.split("Selected: ", 1)[1].split()[0]
    tested = output.split("Tested: ", 1)[1].split()[0]
    assert selected.split("/")[0] == tested, output[-5_000:]
    assert int(tested) >= 35, output[-5_000:]
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in output, output[-5_000:]
