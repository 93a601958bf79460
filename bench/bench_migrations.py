"""Benchmark the migration pipeline (issue 2) on SQLite and PostgreSQL.

Whole-process wall times, measured in rounds (every case once per round, so a slow spell
on the shared machine hits all cases alike), after one untimed warm-up round:

1. `sh infrastructure/docker/migrate.sh` on a database already at head;
2. `sh infrastructure/docker/migrate.sh` from base to head on a new empty database;
3. `sh infrastructure/docker/start-api.sh` on an up-to-date database, from launch to the first
   200 from /health/ready;
4. eight start-api.sh processes launched at once on the same database, until all answer 200;

plus the bare interpreter (`python -c pass`, `python -c "import lora_manager.cli"`) as a
same-run baseline, and an import profile (`-X importtime`) of `db upgrade` and `serve`.

    .venv/bin/python bench/bench_migrations.py [--quick] [--runs N] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from typing import Any

import harness as h

MIGRATE = ["sh", "infrastructure/docker/migrate.sh"]
START_API = ["sh", "infrastructure/docker/start-api.sh"]
VERSIONS_DIR = h.REPO_ROOT / "infrastructure" / "alembic" / "versions"
TITLE = "## Migration pipeline (issue 2)"
CONCURRENT = 8
TARGETS_MS = {"head": 1000.0, "fresh": 2000.0, "startup": 1500.0}
BASELINES = {"python -c pass": "pass", "import lora_manager.cli": "import lora_manager.cli"}


class Cases:
    def __init__(self, res: h.Resources) -> None:
        self.res = res
        self.env = h.base_env(res.root)
        self.last_log = ""

    def run(self, name: str, argv: list[str], url: str | None = None) -> float:
        env = {**self.env, "DATABASE_URL": url} if url else self.env
        seconds, self.last_log = self.res.run(name, argv, env)
        return seconds

    def start(self, name: str, count: int, url: str, argv: list[str] = START_API) -> list[float]:
        """`count` API processes at once on `url`: seconds to each one's first 200."""
        ports: list[int] = []
        while len(ports) < count:
            port = h.free_port()
            ports += [port] if port not in ports else []
        envs = [
            {**self.env, "DATABASE_URL": url, "HOST": "127.0.0.1", "PORT": str(p)} for p in ports
        ]
        procs, ready = self.res.serve(name, [argv] * count, envs, ports)
        self.res.stop(*procs)
        self.last_log = self.res.last_logs[0].read_text(errors="replace")
        return ready


def parse_importtime(text: str, top: int = 8) -> tuple[float, list[tuple[str, float]]]:
    """Self time per top-level package (stdlib lumped together) from -X importtime output."""
    per_package: dict[str, float] = defaultdict(float)
    for line in text.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        try:
            self_us, _cumulative, name = line.split(":", 1)[1].split("|", 2)
            micros = int(self_us)
        except ValueError:
            continue
        package = name.strip().split(".")[0]
        if package in sys.stdlib_module_names or package.lstrip("_") in sys.stdlib_module_names:
            package = "stdlib"
        per_package[package] += micros / 1e6
    ranked = sorted(per_package.items(), key=lambda item: item[1], reverse=True)
    return sum(per_package.values()), ranked[:top]


def measure(args: argparse.Namespace, res: h.Resources) -> tuple[str, list[str]]:
    cases = Cases(res)
    urls: dict[str, tuple[str, Any]] = {}
    if "sqlite" in args.backends:
        urls["sqlite"] = (f"sqlite:///{res.root / 'head.db'}", None)
    if "postgresql" in args.backends:
        h.say("starting a throwaway PostgreSQL server")
        server = res.postgres()
        urls["postgresql"] = (server.create_database("bench_head"), server)
    for backend, (url, _) in urls.items():
        cases.run(f"{backend}-setup", MIGRATE, url)

    stats: dict[tuple[str, str], list[float]] = defaultdict(list)
    for index in range(args.runs + 1):
        h.say("warm-up round" if index == 0 else f"round {index}/{args.runs}")
        got: dict[tuple[str, str], list[float]] = defaultdict(list)
        for label, code in BASELINES.items():
            got[("baseline", label)].append(cases.run("baseline", [sys.executable, "-c", code]))
        for backend, (url, server) in urls.items():
            fresh = (
                f"sqlite:///{res.root / f'fresh-{index}.db'}"
                if server is None
                else server.create_database("bench_fresh")
            )
            got[(backend, "head")].append(cases.run(f"{backend}-head", MIGRATE, url))
            got[(backend, "fresh")].append(cases.run(f"{backend}-fresh", MIGRATE, fresh))
            got[(backend, "startup")] += cases.start(f"{backend}-api", 1, url)
            many = cases.start(f"{backend}-api8", CONCURRENT, url)
            got[(backend, "all")].append(max(many))
            got[(backend, "first")].append(min(many))
            got[(backend, "spread")].append(max(many) - min(many))
            got[(backend, "pooled")] += many
            h.say(
                f"  {backend:<10} "
                + "  ".join(f"{k} {h.fmt_ms(got[(backend, k)][0])} ms" for k in TARGETS_MS)
                + f"  {CONCURRENT}x all-ready {h.fmt_ms(max(many))} ms"
            )
        if index > 0:
            for key, values in got.items():
                stats[key] += values

    profiles: list[Profile] = []
    if not args.no_profile:
        h.say("profiling imports (-X importtime)")
        sqlite_head = f"sqlite:///{res.root / 'head.db'}"
        if "sqlite" not in urls:
            cases.run("profile-setup", MIGRATE, sqlite_head)
        argv = [sys.executable, "-X", "importtime", "-m", "lora_manager"]
        wall = cases.run("importtime-upgrade", [*argv, "db", "upgrade"], sqlite_head)
        profiles.append(
            ("`lora-manager db upgrade` at head", wall, *parse_importtime(cases.last_log))
        )
        (wall,) = cases.start("importtime-serve", 1, sqlite_head, [*argv, "serve", "--migrate"])
        profiles.append(
            ("`lora-manager serve --migrate` to ready", wall, *parse_importtime(cases.last_log))
        )
    return report(args, res, urls, stats, profiles)


Profile = tuple[str, float, float, list[tuple[str, float]]]  # label, wall, imports, top


def report(
    args: argparse.Namespace,
    res: h.Resources,
    urls: dict[str, tuple[str, Any]],
    stats: dict[tuple[str, str], list[float]],
    profiles: list[Profile],
) -> tuple[str, list[str]]:
    revisions = len(list(VERSIONS_DIR.glob("*.py")))
    labels = {
        "head": "1. migrate.sh, already at head",
        "fresh": f"2. migrate.sh, base → head ({revisions} revisions)",
        "startup": "3. start-api.sh → first 200 /health/ready",
        "all": f"4. {CONCURRENT}x start-api.sh → all 200",
        "first": f"4. {CONCURRENT}x start-api.sh → first 200",
        "spread": f"4. {CONCURRENT}x spread (last - first ready)",
        "pooled": f"4. {CONCURRENT}x per-process ready (pooled)",
    }

    def row(label: str, database: str, values: list[float], target: float | None) -> list[str]:
        med = h.median(values) or 0.0
        return [
            label,
            database,
            str(len(values)),
            *(h.fmt_ms(v) for v in (med, min(values), h.percentile(values, 90, min_n=5))),
            h.fmt_ms(max(values)),
            "—" if target is None else f"≤ {target:.0f}",
            h.verdict(None if target is None else med * 1000 <= target),
        ]

    rows = [row(f"baseline: `{k}`", "—", stats[("baseline", k)], None) for k in BASELINES]
    for key, label in labels.items():
        rows += [row(label, h.LABELS[b], stats[(b, key)], TARGETS_MS.get(key)) for b in urls]
    base = {k: h.median(stats[("baseline", k)]) for k in BASELINES}
    ratios = [
        [label, h.LABELS[b], *(h.ratio(h.median(stats[(b, key)]), base[k]) for k in BASELINES)]
        for label, key in (
            ("1. migrate.sh at head", "head"),
            ("3. start-api.sh to ready", "startup"),
        )
        for b in urls
    ]
    body = [
        f"- **Method:** {args.runs} timed rounds after one untimed warm-up round; each round "
        "runs every case once, so noise hits all cases alike. Whole-process wall times in ms, "
        "from launch to exit (or to the first 200 from `/health/ready`, polled every 20 ms "
        "with a 0.5 s timeout). A fresh database per run for case 2; one database at head "
        "shared by cases 1, 3 and 4. Pass/fail compares the median with the target; p90 is "
        "interpolated (from five samples up).",
        "",
        h.table(
            ("measurement", "database", "n", "median", "min", "p90", "max", "target", "result"),
            rows,
        ),
        "",
        "Ratios of the medians to the same run's interpreter start-up:",
        "",
        h.table(
            ("measurement", "database", "÷ `python -c pass`", "÷ `import lora_manager.cli`"), ratios
        ),
        "",
    ]
    if profiles:
        body += [
            "Where start-up time goes (`-X importtime`, one run each, self time summed per "
            "top-level package; importtime itself adds overhead):",
            "",
            *(
                f"- {label}: wall {h.fmt_ms(wall)} ms, imports {h.fmt_ms(total)} ms — "
                + ", ".join(f"{name} {h.fmt_ms(s)}" for name, s in top)
                + " (ms)"
                for label, wall, total, top in profiles
            ),
            "",
        ]
    med = {key: h.median(values) or 0.0 for key, values in stats.items()}
    parts = [
        f"These are start-up costs, not database costs. The bare interpreter starts in "
        f"{h.fmt_ms(base['python -c pass'])} ms and importing the CLI module takes "
        f"{h.fmt_ms(base['import lora_manager.cli'])} ms, yet `migrate.sh` on a database "
        "already at head takes "
        + ", ".join(f"{h.fmt_ms(med[(b, 'head')])} ms ({h.LABELS[b]})" for b in urls)
        + "."
    ]
    if profiles:
        _, wall, total, top = profiles[0]
        parts.append(
            f"Under `-X importtime` the imports of that command alone add up to "
            f"{h.fmt_ms(total)} ms of its {h.fmt_ms(wall)} ms, chiefly "
            f"{', '.join(name for name, _ in top[:4])}."
        )
    parts.append(
        f"Applying all {revisions} revisions to an empty database adds (median difference) "
        + "; ".join(
            f"{h.LABELS[b]} {h.fmt_ms(med[(b, 'fresh')] - med[(b, 'head')])} ms" for b in urls
        )
        + ". Start-up to ready: "
        + "; ".join(
            f"{h.LABELS[b]} {h.fmt_ms(med[(b, 'startup')])} ms alone, "
            f"{h.fmt_ms(med[(b, 'all')])} ms for all {CONCURRENT} "
            f"({h.ratio(med[(b, 'all')], med[(b, 'startup')])}, spread "
            f"{h.fmt_ms(med[(b, 'spread')])} ms)"
            for b in urls
        )
        + f"; purely CPU-bound start-ups would predict about "
        f"{CONCURRENT / int(res.facts['nproc']):.0f}x on {res.facts['nproc']} cores, so "
        "readiness-probe delays should allow for replicas per core. The machine is shared: "
        "compare medians; min is the uncontended cost."
    )
    pg = res.facts.get("postgres", "PostgreSQL not measured")
    software = f", {pg} (throwaway local cluster, fsync off)"
    return software, [*body, " ".join(parts), ""]


OPTIONS: dict[str, h.Option] = {
    "runs": (7, 2, "timed runs per case"),
    "timeout": (60.0, 60.0, "seconds any single wait may take"),
    "no_profile": (False, False, "skip the -X importtime profile"),
}

if __name__ == "__main__":
    sys.exit(h.run(__file__, __doc__ or "", TITLE, measure, OPTIONS, {"backends": tuple(h.LABELS)}))
