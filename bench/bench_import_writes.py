"""Write latency on SQLite while the API imports a library (POST /v1/imports).

Starts `lora-manager serve` on a fresh SQLite database, imports a few adapters to write to,
then generates a library of N small models (default 4,000, each with two sidecars) and, in the
same run:

1. baseline: W writer threads (default 4) PATCH /v1/adapters/{id} and POST
   /v1/adapters/{id}/activate in turn for as many seconds as the import will take, with no
   import running;
2. during: the same writers while POST /v1/imports imports the N files.

Prints the count, median, p99 and max latency of each, and every non-2xx answer. Run from the
repository root:

    .venv/bin/python bench/bench_import_writes.py [--files 4000] [--writers 4]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.library import build_bulk_library, kohya_metadata, write_safetensors  # noqa: E402
from tests.support.postgres import free_port  # noqa: E402
from tests.support.writers import Writers, call, finish_import  # noqa: E402

BIN = Path(sys.executable).parent


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def describe(label: str, samples: list[tuple[int, float, str]]) -> dict[str, Any]:
    seconds = [s for _, s, _ in samples]
    statuses = Counter(status for status, _, _ in samples)
    return {
        "label": label,
        "writes": len(samples),
        "median_ms": statistics.median(seconds) * 1000 if seconds else float("nan"),
        "p99_ms": percentile(seconds, 0.99) * 1000 if seconds else float("nan"),
        "max_ms": max(seconds) * 1000 if seconds else float("nan"),
        "statuses": dict(statuses),
        "errors": Counter(detail for status, _, detail in samples if status >= 300),
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=4000)
    parser.add_argument("--writers", type=int, default=4)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-import-writes-"))
    server = None
    try:
        root = work / "loras"
        for seed in range(40):
            write_safetensors(root / "own" / f"m{seed:02d}.safetensors", kohya_metadata(seed=seed))
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "API_KEY"))}
        env.update(
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            LORA_MANAGER_ENV_FILE=str(work / "no.env"),
            DATABASE_URL=f"sqlite:///{work / 'lora.db'}",
            LORA_ROOTS=str(root),
            LOG_LEVEL="WARNING",
        )
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            ["lora-manager", "serve", "--port", str(port), "--no-worker"],
            env=env,
            cwd=work,
            stdout=subprocess.DEVNULL,
            stderr=open(work / "serve.log", "w"),  # noqa: SIM115 (closed with the process)
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if call(base, "GET", "/health/ready")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server did not become ready: " + str(work / "serve.log"))
            time.sleep(0.1)

        def import_all() -> tuple[dict[str, Any], float]:
            started = time.perf_counter()
            return finish_import(base), time.perf_counter() - started

        first, _ = import_all()
        assert first["status"] == "succeeded", first
        ids = [a["id"] for a in call(base, "GET", "/v1/adapters?limit=100")[1]["items"]]
        say(f"generating {args.files} models with sidecars")
        build_bulk_library(root, args.files)

        say("importing them with writers running")
        with Writers(base, ids, args.writers) as during:
            run, import_seconds = import_all()
        assert run["status"] == "succeeded", run
        say(f"import: {run['summary']['new']} new in {import_seconds:.1f} s; baseline writes")
        say(
            "writes over 0.5 s (started at s into the import, took s): "
            + ", ".join(f"{at:.2f}/{took:.2f}" for at, took in sorted(during.slow))
        )
        with Writers(base, ids, args.writers) as baseline:
            time.sleep(import_seconds)
        results = [describe("no import", baseline.samples), describe("during", during.samples)]
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        shutil.rmtree(work, ignore_errors=True)

    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"{when}; nproc {os.cpu_count()}; {cpu_model()}; Python {platform.python_version()}")
    print(
        f"{args.files} files imported through POST /v1/imports in {import_seconds:.1f} s "
        f"({run['summary']['new']} new); {args.writers} writer threads"
    )
    print("| writes | count | median ms | p99 ms | max ms | answers |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in results:
        answers = ", ".join(f"{v} x {k}" for k, v in sorted(row["statuses"].items()))
        print(
            f"| {row['label']} | {row['writes']} | {row['median_ms']:.1f} | {row['p99_ms']:.1f} "
            f"| {row['max_ms']:.1f} | {answers} |"
        )
        for detail, count in row["errors"].items():
            print(f"  {count} x {detail}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
