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

    .venv/bin/python bench/bench_migrations.py [--runs N] [--out docs/benchmarks.md]

Every server, PostgreSQL cluster and temporary file lives under one temporary directory
that is removed on exit, including Ctrl-C and SIGTERM; every wait has a timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.postgres import PostgresServer, free_port, start_postgres  # noqa: E402

BIN_DIR = Path(sys.executable).parent
MIGRATE_SH = "infrastructure/docker/migrate.sh"
START_API_SH = "infrastructure/docker/start-api.sh"
VERSIONS_DIR = REPO_ROOT / "infrastructure" / "alembic" / "versions"
SECTION_TITLE = "## Migration pipeline (issue 2)"
DOC_HEADER = """# Benchmarks

Measurements of LoRA Manager's processes, taken with the scripts in `bench/` (see
`bench/README.md`). Times are whole-process wall times. Each case runs several times and the
**median** is the headline figure (targets are judged on it): the machines these run on are
shared, so single runs are noisy; min shows the uncontended cost, p90/max the noise. Where a
figure is given as a **ratio** to the bare interpreter start (`python -c pass`) measured in the
same run, it is comparable across machines of different speed.
"""

POLL_INTERVAL = 0.02  # seconds between readiness probes
PROBE_TIMEOUT = 0.5  # seconds per HTTP probe
STOP_TIMEOUT = 10.0  # seconds a server gets after SIGTERM before SIGKILL
CONCURRENT_SERVERS = 8
TARGETS_MS = {"migrate_head": 1000.0, "migrate_fresh": 2000.0, "startup": 1500.0}
BACKEND_LABELS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}

# Readiness probes must not go through an http_proxy from the environment.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class BenchError(Exception):
    """A case failed (non-zero exit, server died, timeout): the run is aborted."""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- signals and cleanup -------------------------------------------------------------------


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def deferred_signals(reraise: bool = True) -> Iterator[None]:
    """Hold off Ctrl-C/SIGTERM while a process or server is started and registered (or
    while cleaning up), so nothing is left running unregistered."""
    received: list[int] = []

    def note(signum: int, _frame: Any) -> None:
        received.append(signum)

    # A signal the parent told us to ignore (e.g. SIGINT of a background job) stays ignored.
    hooked = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) != signal.SIG_IGN]
    previous = {sig: signal.signal(sig, note) for sig in hooked}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received and reraise:
            raise KeyboardInterrupt(f"signal {received[0]}")


class Cleanup:
    """Everything the benchmark starts: processes, PostgreSQL servers, one temp root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.processes: list[subprocess.Popen[bytes]] = []
        self.servers: list[PostgresServer] = []

    def spawn(
        self, argv: list[str], env: dict[str, str], log: IO[bytes]
    ) -> subprocess.Popen[bytes]:
        with deferred_signals():
            proc = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our own group: Ctrl-C reaches us, we stop them
            )
            self.processes.append(proc)
        return proc

    def stop(self, *procs: subprocess.Popen[bytes]) -> None:
        """SIGTERM each (its own process group, by its id), then wait; SIGKILL stragglers."""
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
            with contextlib.suppress(ValueError):
                self.processes.remove(proc)

    def postgres(self) -> PostgresServer:
        with deferred_signals():
            server = start_postgres()  # its data dir lands under self.root (tempfile.tempdir)
            self.servers.append(server)
        return server

    def close(self) -> None:
        import shutil

        with deferred_signals(reraise=False):
            self.stop(*self.processes)
            for server in self.servers:
                server.stop()
            self.servers.clear()
            shutil.rmtree(self.root, ignore_errors=True)


# -- statistics and formatting -------------------------------------------------------------


@dataclass
class Stats:
    samples: list[float] = field(default_factory=list)  # seconds

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)

    @property
    def p90(self) -> float | None:
        """Interpolated 90th percentile; None below five samples, where it means nothing."""
        if self.n < 5:
            return None
        return statistics.quantiles(self.samples, n=10, method="inclusive")[-1]


def ms(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    value = seconds * 1000
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def ratio(a: Stats | None, b: Stats | None) -> str:
    if a is None or b is None or not a.n or not b.n or b.median <= 0:
        return "—"
    return f"{a.median / b.median:.1f}x"


# -- environment and processes -------------------------------------------------------------


def base_env(root: Path) -> dict[str, str]:
    """The caller's environment without any LoRA Manager setting, no .env, our venv first."""
    from lora_manager.core.config import Settings

    settings = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in settings}
    env.pop("LORA_MANAGER_ENV_FILE", None)
    env["PATH"] = f"{BIN_DIR}{os.pathsep}{env.get('PATH', '')}"
    env["LORA_MANAGER_ENV_FILE"] = str(root / "no-such.env")
    env["LOG_LEVEL"] = "INFO"
    env["DB_WAIT_TIMEOUT"] = "15"
    env["MIGRATION_LOCK_TIMEOUT"] = "30"
    return env


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.strip().splitlines()[-lines:]) or "(no output)"


def wait_bounded(proc: subprocess.Popen[Any], timeout: float) -> tuple[int, bool]:
    """Wait for `proc`; kill its process group after `timeout` s. Returns (exit code, expired).

    Popen.wait(timeout) polls with sleeps of up to 50 ms, which would quantise the figures;
    a blocking wait is exact, and a watchdog bounds it instead."""
    expired = threading.Event()

    def overdue() -> None:
        expired.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    watchdog = threading.Timer(timeout, overdue)
    watchdog.daemon = True
    watchdog.start()
    try:
        code = proc.wait()
    finally:
        watchdog.cancel()
    return code, expired.is_set()


class Bench:
    def __init__(self, cleanup: Cleanup, env: dict[str, str], timeout: float) -> None:
        self.cleanup = cleanup
        self.env = env
        self.timeout = timeout
        self.root = cleanup.root
        self.counter = 0
        self.last_logs: list[Path] = []

    def _log(self, name: str) -> Path:
        self.counter += 1
        path = self.root / "logs" / f"{self.counter:04d}-{name}.log"
        self.last_logs.append(path)
        return path

    def run(self, name: str, argv: list[str], **env: str) -> float:
        """Run one process to completion; its wall time in seconds (includes fork/exec)."""
        self.last_logs = []
        log_path = self._log(name)
        log_path.parent.mkdir(exist_ok=True)
        with log_path.open("wb") as log:
            started = time.perf_counter()
            proc = self.cleanup.spawn(argv, {**self.env, **env}, log)
            code, expired = wait_bounded(proc, self.timeout)
            elapsed = time.perf_counter() - started
            self.cleanup.stop(proc)
        if expired:
            raise BenchError(f"{name}: still running after {self.timeout:g}s\n{tail(log_path)}")
        if code != 0:
            raise BenchError(f"{name}: exit code {code}\n{tail(log_path)}")
        return elapsed

    def start_servers(
        self, name: str, count: int, database_url: str, argv: list[str] | None = None
    ) -> list[float]:
        """Launch `count` API processes at once; seconds from the launch to each one's first
        200 from /health/ready. All are stopped (SIGTERM, then wait) before returning."""
        argv = argv or ["sh", START_API_SH]
        ports: list[int] = []
        while len(ports) < count:
            port = free_port()
            if port not in ports:
                ports.append(port)
        self.last_logs = []
        logs = [self._log(f"{name}-{i}") for i in range(count)]
        logs[0].parent.mkdir(exist_ok=True)
        handles: list[IO[bytes]] = []
        procs: list[subprocess.Popen[bytes]] = []
        ready: dict[int, float] = {}
        try:
            handles = [path.open("wb") for path in logs]
            started = time.perf_counter()
            for port, handle in zip(ports, handles, strict=True):
                env = {
                    **self.env,
                    "DATABASE_URL": database_url,
                    "HOST": "127.0.0.1",
                    "PORT": str(port),
                }
                procs.append(self.cleanup.spawn(argv, env, handle))
            deadline = started + self.timeout
            while len(ready) < count:
                for i, (port, proc) in enumerate(zip(ports, procs, strict=True)):
                    if i in ready:
                        continue
                    if probe(port):
                        ready[i] = time.perf_counter() - started
                    elif proc.poll() is not None:
                        raise BenchError(
                            f"{name}: server {i} exited with {proc.returncode} before it "
                            f"was ready\n{tail(logs[i])}"
                        )
                if len(ready) == count:
                    break
                if time.perf_counter() > deadline:
                    waiting = [i for i in range(count) if i not in ready]
                    raise BenchError(
                        f"{name}: servers {waiting} not ready after {self.timeout:g}s\n"
                        f"{tail(logs[waiting[0]])}"
                    )
                time.sleep(POLL_INTERVAL)
        finally:
            self.cleanup.stop(*procs)
            for handle in handles:
                handle.close()
        return [ready[i] for i in range(count)]


def probe(port: int) -> bool:
    try:
        with _HTTP.open(f"http://127.0.0.1:{port}/health/ready", timeout=PROBE_TIMEOUT) as reply:
            reply.read()
            return bool(reply.status == 200)
    except urllib.error.HTTPError as exc:  # 503 while not ready
        exc.close()
        return False
    except (urllib.error.URLError, OSError, ValueError):
        return False


# -- the cases -----------------------------------------------------------------------------


@dataclass
class BackendResult:
    name: str
    migrate_head: Stats = field(default_factory=Stats)
    migrate_fresh: Stats = field(default_factory=Stats)
    startup: Stats = field(default_factory=Stats)
    all_ready: Stats = field(default_factory=Stats)  # per run: last of the eight
    first_ready: Stats = field(default_factory=Stats)  # per run: first of the eight
    spread: Stats = field(default_factory=Stats)  # per run: last - first
    per_process: Stats = field(default_factory=Stats)  # pooled over runs


@dataclass
class Backend:
    name: str
    head_url: str
    new_database: Callable[[int], str]
    result: BackendResult


@dataclass
class ImportProfile:
    label: str
    wall: float
    total: float  # sum of the self times of every import, seconds
    top: list[tuple[str, float]]


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


def profile_imports(bench: Bench, sqlite_head_url: str) -> list[ImportProfile]:
    """Where start-up time goes: -X importtime of a real `db upgrade` at head and a real
    `serve --migrate` up to its first 200."""
    profiles: list[ImportProfile] = []
    argv = [sys.executable, "-X", "importtime", "-m", "lora_manager"]
    wall = bench.run("importtime-upgrade", [*argv, "db", "upgrade"], DATABASE_URL=sqlite_head_url)
    log = bench.last_logs[0]
    total, top = parse_importtime(log.read_text(errors="replace"))
    profiles.append(ImportProfile("`lora-manager db upgrade` at head", wall, total, top))

    (wall,) = bench.start_servers(
        "importtime-serve", 1, sqlite_head_url, argv=[*argv, "serve", "--migrate"]
    )
    log = bench.last_logs[0]
    total, top = parse_importtime(log.read_text(errors="replace"))
    profiles.append(ImportProfile("`lora-manager serve --migrate` to ready", wall, total, top))
    return profiles


def run_round(
    bench: Bench, backends: list[Backend], baselines: dict[str, Stats], index: int, record: bool
) -> None:
    for label, code in (("python -c pass", "pass"), ("import lora_manager.cli", None)):
        argv = [sys.executable, "-c", code or "import lora_manager.cli"]
        seconds = bench.run(f"baseline-{code or 'cli'}", argv)
        if record:
            baselines[label].add(seconds)
    for backend in backends:
        res = backend.result
        head = bench.run(f"{backend.name}-head", ["sh", MIGRATE_SH], DATABASE_URL=backend.head_url)
        fresh_url = backend.new_database(index)
        fresh = bench.run(f"{backend.name}-fresh", ["sh", MIGRATE_SH], DATABASE_URL=fresh_url)
        (single,) = bench.start_servers(f"{backend.name}-api", 1, backend.head_url)
        many = bench.start_servers(f"{backend.name}-api8", CONCURRENT_SERVERS, backend.head_url)
        if record:
            res.migrate_head.add(head)
            res.migrate_fresh.add(fresh)
            res.startup.add(single)
            res.all_ready.add(max(many))
            res.first_ready.add(min(many))
            res.spread.add(max(many) - min(many))
            for seconds in many:
                res.per_process.add(seconds)
        say(
            f"  {backend.name:<10} head {ms(head):>5} ms  fresh {ms(fresh):>5} ms  "
            f"start {ms(single):>5} ms  8x all-ready {ms(max(many)):>5} ms"
        )


# -- machine facts -------------------------------------------------------------------------


def command_output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip()


def machine_facts(pg_version: str | None) -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    return {
        "date": command_output(["date", "-u"]),
        "nproc": command_output(["nproc"]) or str(len(os.sched_getaffinity(0))),
        "cpu": cpu,
        "memory": memory,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "postgres": pg_version or "not measured",
        "os": f"{platform.system()} {platform.release()}",
    }


def postgres_version(server: PostgresServer) -> str:
    import psycopg

    with psycopg.connect(
        f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres connect_timeout=5"
    ) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return f"PostgreSQL {row[0]}" if row else "PostgreSQL (unknown)"


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " / ".join(f"{value:.2f}" for value in os.getloadavg())
    return "unknown"


# -- the report ----------------------------------------------------------------------------


@dataclass
class Report:
    facts: dict[str, str]
    command: str
    runs: int
    backends: list[BackendResult]
    baselines: dict[str, Stats]
    profiles: list[ImportProfile]
    load_before: str
    load_after: str
    revisions: int

    def rows(self) -> list[list[str]]:
        """Measurement, database, n, median, min, p90, max, target, result."""
        rows: list[list[str]] = []
        for label, stats in self.baselines.items():
            rows.append(self._row(f"baseline: `{label}`", "—", stats, None))
        cases = (
            ("1. migrate.sh, already at head", "migrate_head", "migrate_head"),
            (
                f"2. migrate.sh, base → head ({self.revisions} revisions)",
                "migrate_fresh",
                "migrate_fresh",
            ),
            ("3. start-api.sh → first 200 /health/ready", "startup", "startup"),
            (f"4. {CONCURRENT_SERVERS}x start-api.sh → all 200", "all_ready", None),
            (f"4. {CONCURRENT_SERVERS}x start-api.sh → first 200", "first_ready", None),
            (f"4. {CONCURRENT_SERVERS}x spread (last - first ready)", "spread", None),
            (f"4. {CONCURRENT_SERVERS}x per-process ready (pooled)", "per_process", None),
        )
        for label, attribute, target in cases:
            for backend in self.backends:
                stats = getattr(backend, attribute)
                rows.append(
                    self._row(
                        label, BACKEND_LABELS[backend.name], stats, TARGETS_MS.get(target or "")
                    )
                )
        return rows

    @staticmethod
    def _row(label: str, database: str, stats: Stats, target_ms: float | None) -> list[str]:
        if target_ms is None:
            target, verdict = "—", "—"
        else:
            target = f"≤ {target_ms:.0f}"
            verdict = "pass" if stats.median * 1000 <= target_ms else "FAIL"
        return [
            label,
            database,
            str(stats.n),
            ms(stats.median),
            ms(stats.min),
            ms(stats.p90),
            ms(stats.max),
            target,
            verdict,
        ]

    HEAD = ("measurement", "database", "n", "median", "min", "p90", "max", "target", "result")

    def ratio_rows(self) -> list[list[str]]:
        bare = self.baselines.get("python -c pass")
        cli = self.baselines.get("import lora_manager.cli")
        rows = []
        for label, attribute in (
            ("1. migrate.sh at head", "migrate_head"),
            ("3. start-api.sh to ready", "startup"),
        ):
            for backend in self.backends:
                stats = getattr(backend, attribute)
                rows.append(
                    [
                        label,
                        BACKEND_LABELS[backend.name],
                        ratio(stats, bare),
                        ratio(stats, cli),
                    ]
                )
        return rows

    RATIO_HEAD = ("measurement", "database", "÷ `python -c pass`", "÷ `import lora_manager.cli`")

    # -- plain text -------------------------------------------------------------------

    def text(self) -> str:
        out = [
            f"Migration pipeline benchmark — {self.facts['date']}",
            f"{self.facts['nproc']} CPUs ({self.facts['cpu']}), {self.facts['memory']}, "
            f"{self.facts['python']}, {self.facts['postgres']}; load avg before "
            f"{self.load_before}, after {self.load_after}",
            f"{self.runs} timed runs per case after one warm-up round; times in ms; "
            "pass/fail on the median",
            "",
            _text_table(
                [h.replace("`", "") for h in self.HEAD],
                [[c.replace("`", "") for c in r] for r in self.rows()],
            ),
            "",
            _text_table([h.replace("`", "") for h in self.RATIO_HEAD], self.ratio_rows()),
        ]
        for profile in self.profiles:
            out += [
                "",
                f"Import profile: {profile.label.replace('`', '')} — wall "
                f"{ms(profile.wall)} ms under -X importtime, imports {ms(profile.total)} ms",
            ]
            out += [f"  {name:<24} {ms(seconds):>6} ms" for name, seconds in profile.top]
        return "\n".join(out)

    # -- markdown ---------------------------------------------------------------------

    def markdown(self) -> str:
        f = self.facts
        lines = [
            SECTION_TITLE,
            "",
            f"- **Date:** {f['date']}",
            f"- **Machine:** {f['nproc']} CPUs ({f['cpu']}), {f['memory']} RAM, {f['os']}; "
            f"load average (1/5/15 min) {self.load_before} before, {self.load_after} after",
            f"- **Software:** {f['python']}, {f['postgres']} (throwaway local cluster, fsync off)",
            f"- **Command:** `{self.command}`",
            f"- **Method:** {self.runs} timed rounds after one untimed warm-up round; each round "
            "runs every case once, so noise hits all cases alike. Whole-process wall times in "
            "ms, from launch to exit (or to the first 200 from `/health/ready`, polled every "
            f"{POLL_INTERVAL * 1000:.0f} ms with a {PROBE_TIMEOUT:g} s timeout). A fresh "
            "database per run for case 2; one database at head shared by cases 1, 3 and 4. "
            "Pass/fail compares the median with the target; p90 is interpolated.",
            "",
            _md_table(self.HEAD, self.rows()),
            "",
            "Ratios of the medians to the same run's interpreter start-up:",
            "",
            _md_table(self.RATIO_HEAD, self.ratio_rows()),
            "",
        ]
        if self.profiles:
            lines += [
                "Where start-up time goes (`-X importtime`, one run each, self time summed per "
                "top-level package; importtime itself adds overhead):",
                "",
            ]
            for profile in self.profiles:
                top = ", ".join(f"{name} {ms(seconds)}" for name, seconds in profile.top)
                lines.append(
                    f"- {profile.label}: wall {ms(profile.wall)} ms, imports "
                    f"{ms(profile.total)} ms — {top} (ms)"
                )
            lines.append("")
        lines += [self.meaning(), ""]
        return "\n".join(lines)

    def meaning(self) -> str:
        bare = self.baselines["python -c pass"].median
        cli = self.baselines["import lora_manager.cli"].median
        parts: list[str] = []
        heads = ", ".join(
            f"{ms(b.migrate_head.median)} ms ({BACKEND_LABELS[b.name]})" for b in self.backends
        )
        parts.append(
            f"These are start-up costs, not database costs. The bare interpreter starts in "
            f"{ms(bare)} ms and importing the CLI module takes {ms(cli)} ms, yet `migrate.sh` "
            f"on a database already at head takes {heads}."
        )
        upgrade = next((p for p in self.profiles if "upgrade" in p.label), None)
        if upgrade is not None and upgrade.top:
            names = ", ".join(name for name, _ in upgrade.top[:4])
            parts.append(
                f"Under `-X importtime` the imports of that command alone add up to "
                f"{ms(upgrade.total)} ms of its {ms(upgrade.wall)} ms, chiefly {names}; "
                "the database round trips of the at-head fast path are a few ms."
            )
        fresh = "; ".join(
            f"{BACKEND_LABELS[b.name]} {ms(b.migrate_fresh.median - b.migrate_head.median)} ms"
            for b in self.backends
        )
        parts.append(
            f"Applying all {self.revisions} revisions to an empty database adds little to the "
            f"at-head run (median difference: {fresh}): the DDL itself is cheap."
        )
        starts = "; ".join(
            f"{BACKEND_LABELS[b.name]} {ms(b.startup.median)} ms alone, "
            f"{ms(b.all_ready.median)} ms for all {CONCURRENT_SERVERS} "
            f"({b.all_ready.median / b.startup.median:.1f}x, spread "
            f"{ms(b.spread.median)} ms)"
            for b in self.backends
        )
        cores = int(self.facts["nproc"]) if self.facts["nproc"].isdigit() else 0
        crowd = (
            f"; start-ups that were purely CPU-bound would predict about "
            f"{CONCURRENT_SERVERS / cores:.0f}x on {cores} cores"
            if cores
            else ""
        )
        parts.append(
            f"The API adds FastAPI/uvicorn imports on top of the same migration check before it "
            f"answers ready: {starts}{crowd}. Launching many replicas at once on a small node "
            "therefore stretches readiness roughly in proportion to replicas per core, so "
            "readiness-probe delays should allow for it."
        )
        parts.append(
            "The machine is shared: medians are the figures to compare, min is the uncontended "
            "cost and the gap to max/p90 is noise from other work."
        )
        return " ".join(parts)


def _text_table(head: tuple[str, ...] | list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(head, *rows, strict=True)]
    numeric = {i for i, h in enumerate(head) if h in {"n", "median", "min", "p90", "max"}}

    def fmt(row: list[str] | tuple[str, ...]) -> str:
        return "  ".join(
            str(c).rjust(w) if i in numeric else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(head), rule, *(fmt(r) for r in rows)])


def _md_table(head: tuple[str, ...], rows: list[list[str]]) -> str:
    numeric = {"n", "median", "min", "p90", "max"}
    align = ["---:" if h in numeric else "---" for h in head]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(path: Path, section: str, title: str = SECTION_TITLE) -> None:
    """Replace (or append) the section headed `title` in the benchmarks document, keeping
    everything else."""
    text = path.read_text() if path.exists() else DOC_HEADER
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == title), None)
    if start is None:
        before, after = lines, []
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        before, after = lines[:start], lines[end:]
    while before and not before[-1].strip():
        before.pop()
    pieces = ["\n".join(before), section.rstrip()]
    if after:
        pieces.append("\n".join(after).rstrip())
    new_text = "\n\n".join(p for p in pieces if p) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_text(new_text)
    os.replace(scratch, path)


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per case (default 7)")
    parser.add_argument("--out", type=Path, help="write/replace the section in this Markdown file")
    parser.add_argument(
        "--backends",
        default="sqlite,postgresql",
        help="comma-separated: sqlite, postgresql (default both)",
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds any single wait may take"
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the -X importtime profile")
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(args.backends) - set(BACKEND_LABELS)
    if unknown or not args.backends:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown)) or '(none)'}")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def invocation(argv: list[str] | None, script: str = __file__) -> str:
    """The command line that ran `script`, with paths relative to the repository."""

    def short(path: str) -> str:
        try:
            return str(Path(path).relative_to(REPO_ROOT))
        except ValueError:
            return path

    given = sys.argv[1:] if argv is None else argv
    return shlex.join([short(sys.executable), short(str(Path(script).resolve())), *given])


def run_bench(
    args: argparse.Namespace,
    command: str,
    *,
    prefix: str,
    make_cleanup: Callable[[Path], Any],
    measure: Callable[[argparse.Namespace, Any, str], Any],
    title: str,
    prepare: Callable[[Path], None] | None = None,
) -> int:
    """The harness both benchmarks share: a private temp root (where PostgreSQL clusters go
    too), clean-up on every exit, one error line instead of a traceback, the report printed
    and, with --out, written into its section of the document."""
    if signal.getsignal(signal.SIGTERM) != signal.SIG_IGN:
        signal.signal(signal.SIGTERM, _interrupt)
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)  # the postgres user must reach its data directory beneath it
    cleanup = make_cleanup(root)
    previous_tempdir = tempfile.tempdir
    tempfile.tempdir = str(root)  # start_postgres's cluster lands under root too
    try:
        if prepare is not None:
            prepare(root)
        report = measure(args, cleanup, command)
    except KeyboardInterrupt:
        say("interrupted: stopping servers and removing temporary files")
        return 130
    except BenchError as exc:
        say(f"error: {exc}")
        return 1
    finally:
        tempfile.tempdir = previous_tempdir
        cleanup.close()
    print(report.text())
    if args.out is not None:
        out = args.out if args.out.is_absolute() else Path.cwd() / args.out
        write_section(out, report.markdown(), title)
        say(f"wrote section {title!r} to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench(
        args,
        invocation(argv),
        prefix="lora-bench-",
        make_cleanup=Cleanup,
        measure=measure,
        title=SECTION_TITLE,
    )


def measure(args: argparse.Namespace, cleanup: Cleanup, command: str) -> Report:
    root = cleanup.root
    bench = Bench(cleanup, base_env(root), args.timeout)
    started_at = command_output(["date", "-u"])
    load_before = load_average()
    backends: list[Backend] = []
    pg_version = None
    if "sqlite" in args.backends:
        backends.append(
            Backend(
                "sqlite",
                f"sqlite:///{root / 'head.db'}",
                lambda i: f"sqlite:///{root / 'fresh' / f'{i}.db'}",
                BackendResult("sqlite"),
            )
        )
    if "postgresql" in args.backends:
        say("starting a throwaway PostgreSQL server")
        server = cleanup.postgres()
        pg_version = postgres_version(server)
        backends.append(
            Backend(
                "postgresql",
                server.create_database("bench_head"),
                lambda _i: server.create_database("bench_fresh"),
                BackendResult("postgresql"),
            )
        )
    for backend in backends:
        say(f"bringing the {backend.name} head database to head")
        bench.run(f"{backend.name}-setup", ["sh", MIGRATE_SH], DATABASE_URL=backend.head_url)

    baselines = {"python -c pass": Stats(), "import lora_manager.cli": Stats()}
    for index in range(args.runs + 1):
        say("warm-up round" if index == 0 else f"round {index}/{args.runs}")
        run_round(bench, backends, baselines, index, record=index > 0)

    profiles: list[ImportProfile] = []
    if not args.no_profile:
        say("profiling imports (-X importtime)")
        sqlite_head = f"sqlite:///{root / 'head.db'}"
        if "sqlite" not in args.backends:
            bench.run("profile-setup", ["sh", MIGRATE_SH], DATABASE_URL=sqlite_head)
        profiles = profile_imports(bench, sqlite_head)

    facts = machine_facts(pg_version)
    facts["date"] = started_at or facts["date"]
    return Report(
        facts=facts,
        command=command,
        runs=args.runs,
        backends=[b.result for b in backends],
        baselines=baselines,
        profiles=profiles,
        load_before=load_before,
        load_after=load_average(),
        revisions=len(list(VERSIONS_DIR.glob("*.py"))),
    )


if __name__ == "__main__":
    sys.exit(main())
