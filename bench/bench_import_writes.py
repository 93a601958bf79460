"""Write latency on SQLite while the API imports a library (POST /v1/imports).

Starts `lora-manager serve --no-worker` on a fresh SQLite database, imports 40 adapters to
write to, generates N small models (two sidecars each) and imports them through
POST /v1/imports while W writer threads PATCH /v1/adapters/{id} and POST
/v1/adapters/{id}/activate in turn; then, as the same-run baseline, the same writers for as
long with no import. Count, median, p99 and max latency of both, and every non-2xx answer.

    .venv/bin/python bench/bench_import_writes.py [--quick] [--files 4000] [--writers 4]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

import harness as h

TITLE = "## Writes during an import on SQLite: latest run"


def measure(args: argparse.Namespace, res: h.Resources) -> tuple[str, list[str]]:
    from tests.support.library import build_bulk_library, kohya_metadata, write_safetensors
    from tests.support.writers import Writers, call, finish_import

    root = res.root / "loras"
    for seed in range(40):
        write_safetensors(root / "own" / f"m{seed:02d}.safetensors", kohya_metadata(seed=seed))
    port = h.free_port()
    env = h.base_env(
        res.root, DATABASE_URL=f"sqlite:///{res.root / 'lora.db'}", LORA_ROOTS=str(root)
    )
    env["LOG_LEVEL"] = "WARNING"
    argv = ["lora-manager", "serve", "--port", str(port), "--no-worker"]
    res.serve("serve", [argv], [env], [port])
    base = f"http://127.0.0.1:{port}"
    first = finish_import(base)
    if first["status"] != "succeeded":
        raise h.BenchError(f"first import: {first}")
    ids = [a["id"] for a in call(base, "GET", "/v1/adapters?limit=100")[1]["items"]]
    h.say(f"generating {args.files} models with sidecars")
    build_bulk_library(root, args.files)
    h.say("importing them with writers running")
    with Writers(base, ids, args.writers) as during:
        started = time.perf_counter()
        run = finish_import(base)
        seconds = time.perf_counter() - started
    if run["status"] != "succeeded":
        raise h.BenchError(f"import: {run}")
    slow = ", ".join(f"{at:.2f}/{took:.2f}" for at, took in sorted(during.slow))
    h.say(f"import: {run['summary']['new']} new in {seconds:.1f} s; writes over 0.5 s "
          f"(started at s into the import, took s): {slow or 'none'}; baseline writes")  # fmt: skip
    with Writers(base, ids, args.writers) as baseline:
        time.sleep(seconds)

    rows, errors = [], list[tuple[str, int]]()
    for label, samples in (("no import (baseline)", baseline.samples), ("during", during.samples)):
        statuses = Counter(status for status, _, _ in samples)
        answers = ", ".join(f"{n} x {status}" for status, n in sorted(statuses.items()))
        rows.append([*h.latency_row(label, [s for _, s, _ in samples], 99), answers])
        errors += Counter(f"{st} {detail}" for st, _, detail in samples if st >= 300).items()
    body = [
        f"{args.files:,} files ({run['summary']['new']:,} new) imported through "
        f"`POST /v1/imports` in {seconds:.1f} s while {args.writers} writer threads PATCH and "
        "activate adapters over HTTP; the baseline is the same writers for as long with no "
        "import. Latencies in ms.",
        "",
        h.table(("writes", "count", "median", "p99", "max", "answers"), rows),
        "",
        *(f"- {n} x {detail}" for detail, n in errors),
        "",
    ]
    return "", body


OPTIONS: dict[str, h.Option] = {
    "files": (4000, 500, "models imported during the writes"),
    "writers": (4, 4, "writer threads"),
}

if __name__ == "__main__":
    sys.exit(h.run(__file__, __doc__ or "", TITLE, measure, OPTIONS))
