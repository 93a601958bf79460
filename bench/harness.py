"""The machinery every benchmark in bench/ shares.

- `run(doc, title, options, measure)`: argparse (`--quick`, `--out`, `--timeout` and the
  script's own options, each with a full and a quick default), one private temporary root
  (PostgreSQL clusters land under it too) removed on every exit, Ctrl-C and SIGTERM included,
  one error line instead of a traceback, the report printed and, with `--out`, written into
  its section of docs/benchmarks.md (other sections kept).
- `Resources`: what a benchmark starts (processes in their own process groups, PostgreSQL,
  Redis, SQLAlchemy engines, anything with a close callback), stopped on exit; `run` of a
  bounded subprocess, `serve` of API processes until `/health/ready` answers 200.
- Statistics (`median`, `percentile`, `stat_row`), formatting and Markdown tables generated
  from rows; machine facts (date, CPUs, memory, load, versions); CPU time from /proc.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

BIN_DIR = Path(sys.executable).parent
STOP_TIMEOUT = 10.0  # seconds a process gets after SIGTERM before SIGKILL
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024
LABELS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
DOC_HEADER = """# Benchmarks

Measurements of LoRA Manager's processes, taken with the scripts in `bench/` (see
`bench/README.md`). Each case runs several times; the **median** is the headline figure (and,
for request latencies, the p99 the targets name): the machines these run on are shared, so
single runs are noisy. Ratios to baselines measured in the same run travel across machines.
"""

_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy from the env


class BenchError(Exception):
    """A case failed (non-zero exit, server died, timeout): the run is aborted."""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- signals, time limits, clean-up --------------------------------------------------------


@contextlib.contextmanager
def deferred_signals(reraise: bool = True) -> Iterator[None]:
    """Hold off Ctrl-C/SIGTERM while something is started and registered (or cleaned up)."""
    received: list[int] = []
    hooked = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) != signal.SIG_IGN]
    previous = {s: signal.signal(s, lambda signum, _f: received.append(signum)) for s in hooked}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received and reraise:
            raise KeyboardInterrupt(f"signal {received[0]}")


@contextlib.contextmanager
def time_limit(what: str, seconds: float) -> Iterator[None]:
    """Bound an in-process step (main thread): SIGALRM raises BenchError after `seconds`.
    Nests: an outer limit keeps counting."""

    def expire(_signum: int, _frame: Any) -> None:
        raise BenchError(f"{what}: still running after {seconds:g}s")

    started = time.monotonic()
    previous = signal.signal(signal.SIGALRM, expire)
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    if outer and outer < seconds:
        signal.setitimer(signal.ITIMER_REAL, outer)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - started), 0.001))


def wait_bounded(proc: subprocess.Popen[Any], timeout: float) -> tuple[int, bool]:
    """Wait exactly (no polling sleeps); a watchdog kills the group after `timeout`.
    Returns (exit code, expired)."""
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


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.strip().splitlines()[-lines:]) or "(no output)"


def free_port() -> int:
    from tests.support.postgres import free_port as port

    return port()


def probe(port: int, path: str = "/health/ready", timeout: float = 0.5) -> bool:
    try:
        with _HTTP.open(f"http://127.0.0.1:{port}{path}", timeout=timeout) as reply:
            reply.read()
            return bool(reply.status == 200)
    except urllib.error.HTTPError as exc:  # 503 while not ready
        exc.close()
        return False
    except (urllib.error.URLError, OSError, ValueError):
        return False


class Resources:
    """Everything a benchmark starts, under one temporary root, stopped on `close`."""

    def __init__(self, root: Path, timeout: float) -> None:
        self.root = root
        self.timeout = timeout
        self.processes: list[subprocess.Popen[bytes]] = []
        self.engines: list[Any] = []
        self.stack = contextlib.ExitStack()
        self.counter = 0
        self.last_logs: list[Path] = []
        self.facts = machine_facts()
        (root / "logs").mkdir()

    def log(self, name: str) -> Path:
        self.counter += 1
        return self.root / "logs" / f"{self.counter:04d}-{name}.log"

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
        """SIGTERM each process group, wait; SIGKILL stragglers."""
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

    def run(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, timeout: float = 0
    ) -> tuple[float, str]:
        """Run one process to completion: its wall time (fork/exec included) and output."""
        path = self.log(name)
        with path.open("wb") as out:
            started = time.perf_counter()
            proc = self.spawn(argv, dict(os.environ) if env is None else env, out)
            code, expired = wait_bounded(proc, timeout or self.timeout)
            elapsed = time.perf_counter() - started
            self.stop(proc)
        if expired:
            raise BenchError(f"{name}: still running after {timeout or self.timeout:g}s")
        if code != 0:
            raise BenchError(f"{shlex.join(argv)[:200]}: exit code {code}\n{tail(path)}")
        return elapsed, path.read_text(errors="replace")

    def run_json(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Any:
        """Run a process that prints one JSON object as its last `{` line."""
        _, output = self.run(name, argv, env)
        for line in reversed(output.strip().splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        raise BenchError(f"{name}: no result printed\n{output[-2000:]}")

    def serve(
        self, name: str, argvs: list[list[str]], envs: list[dict[str, str]], ports: list[int]
    ) -> tuple[list[subprocess.Popen[bytes]], list[float]]:
        """Launch the processes at once; seconds from the launch to each one's first 200 from
        /health/ready (polled every 20 ms, 0.5 s probe timeout). They keep running."""
        logs = self.last_logs = [self.log(f"{name}-{i}") for i in range(len(argvs))]
        procs: list[subprocess.Popen[bytes]] = []
        ready: dict[int, float] = {}
        started = time.perf_counter()
        for argv, env, path in zip(argvs, envs, logs, strict=True):
            with path.open("wb") as handle:
                procs.append(self.spawn(argv, env, handle))
        try:
            while len(ready) < len(procs):
                for i, (port, proc) in enumerate(zip(ports, procs, strict=True)):
                    if i in ready:
                        continue
                    if probe(port):
                        ready[i] = time.perf_counter() - started
                    elif proc.poll() is not None:
                        raise BenchError(
                            f"{name}: process {i} exited with {proc.returncode}"
                            f" before it was ready\n{tail(logs[i])}"
                        )
                if len(ready) < len(procs):
                    if time.perf_counter() - started > self.timeout:
                        late = next(i for i in range(len(procs)) if i not in ready)
                        raise BenchError(
                            f"{name}: not ready after {self.timeout:g}s\n{tail(logs[late])}"
                        )
                    time.sleep(0.02)
        except BaseException:
            self.stop(*procs)
            raise
        return procs, [ready[i] for i in range(len(procs))]

    def postgres(self) -> Any:
        from tests.support.postgres import start_postgres

        with deferred_signals():
            try:
                server = start_postgres()  # its data dir lands under the root (tempfile.tempdir)
            except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
                detail = (getattr(exc, "stderr", None) or b"").decode(errors="replace")
                raise BenchError(f"PostgreSQL did not start: {exc}\n{detail[-2000:]}") from None
            self.stack.callback(server.stop)
        self.facts["postgres"] = postgres_version(server)
        return server

    def redis(self) -> Any:
        from tests.support.redis import running_redis

        with deferred_signals():
            try:
                found = self.stack.enter_context(running_redis(self.root))
            except (OSError, RuntimeError) as exc:
                raise BenchError(f"redis-server did not start: {exc}") from None
        self.facts["redis"] = redis_version(found.url)
        return found

    def engine(self, settings: Any) -> Any:
        from lora_manager.core.db import make_engine

        engine = make_engine(settings)
        self.engines.append(engine)
        return engine

    @contextlib.contextmanager
    def client(self, settings: Any) -> Iterator[tuple[Any, Any]]:
        """(app, TestClient) of `create_app(settings, migrate_on_startup=False)`, after a full
        collection and `gc.freeze()`, so what the set-up left behind is not the app's garbage."""
        import gc

        from fastapi.testclient import TestClient

        from lora_manager.api.app import create_app

        gc.collect()
        gc.freeze()
        app = create_app(settings, migrate_on_startup=False)
        self.engines.append(app.state.engine)
        with TestClient(app) as client:
            yield app, client

    def dispose(self, engine: Any) -> None:
        engine.dispose()
        with contextlib.suppress(ValueError):
            self.engines.remove(engine)

    def close(self) -> None:
        with deferred_signals(reraise=False):
            self.stop(*self.processes)
            for engine in self.engines:
                with contextlib.suppress(Exception):
                    engine.dispose()
            with contextlib.suppress(Exception):
                self.stack.close()
            shutil.rmtree(self.root, ignore_errors=True)


# -- settings and databases ----------------------------------------------------------------


def scrub_environment(root: Path) -> None:
    """No LoRA Manager setting from the caller's environment or a .env file reaches us."""
    from lora_manager.core.config import ENV_FILE_VARIABLE, Settings

    names = {name.upper() for name in Settings.model_fields}
    for key in list(os.environ):
        if key.upper() in names:
            del os.environ[key]
    os.environ[ENV_FILE_VARIABLE] = str(root / "no-such.env")


def base_env(root: Path, **extra: str) -> dict[str, str]:
    """The environment for a subprocess: no LoRA Manager setting, no .env, our venv first."""
    env = dict(os.environ)
    env.update(
        PATH=f"{BIN_DIR}{os.pathsep}{env.get('PATH', '')}",
        LORA_MANAGER_ENV_FILE=str(root / "no-such.env"),
        LOG_LEVEL="INFO",
        DB_WAIT_TIMEOUT="15",
        MIGRATION_LOCK_TIMEOUT="30",
        RESULTS_DIR=str(root / "results"),
    )
    return {**env, **extra}


def make_settings(database_url: str, **overrides: Any) -> Any:
    from lora_manager.core.config import Settings

    values = {"sqlite_backup_keep": 0, "db_wait_timeout": 15, "migration_lock_timeout": 30}
    return Settings(_env_file=None, database_url=database_url, **{**values, **overrides})


@dataclass
class Databases:
    """Fresh migrated databases: SQLite files under the root, PostgreSQL on one cluster."""

    root: Path
    server: Any = None
    counter: int = 0

    def fresh(self, backend: str, label: str) -> str:
        self.counter += 1
        if backend == "sqlite":
            folder = self.root / "db" / f"{self.counter:03d}-{label}"
            folder.mkdir(parents=True)
            url = f"sqlite:///{folder / 'catalog.db'}"
        else:
            url = self.server.create_database(f"bench_{label.replace('-', '_')}")
        from lora_manager.core.migrations import MigrationRunner

        with time_limit(f"migrating a fresh {backend} database", 120):
            MigrationRunner(make_settings(url)).upgrade("head")
        return url


# -- statistics and tables -----------------------------------------------------------------


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def percentile(values: list[float], pct: int, min_n: int = 2) -> float | None:
    """Interpolated percentile (inclusive method); None below `min_n` samples."""
    if len(values) < min_n:
        return values[0] if len(values) == 1 and min_n <= 2 else None
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.{digits}f}"


def fmt_ms(seconds: float | None) -> str:
    return "—" if seconds is None else fmt(seconds * 1000)


def ratio(a: float | None, b: float | None, digits: int = 1) -> str:
    return f"{a / b:.{digits}f}x" if a and b else "—"


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("pass" if ok else "FAIL")


def stat_row(label: str, values: list[float], digits: int = 1, scale: float = 1.0) -> list[str]:
    """n, median, min, max of `values` (times `scale`)."""
    scaled = [v * scale for v in values]
    return [
        label,
        str(len(values)),
        fmt(median(scaled), digits),
        fmt(min(scaled) if scaled else None, digits),
        fmt(max(scaled) if scaled else None, digits),
    ]


def latency_row(label: str, seconds: list[float], *pcts: int) -> list[str]:
    """n, p50, the given percentiles and max, in ms."""
    return [
        label,
        str(len(seconds)),
        fmt_ms(median(seconds)),
        *(fmt_ms(percentile(seconds, p)) for p in pcts),
        fmt_ms(max(seconds) if seconds else None),
    ]


def timed(call: Callable[[int], Any], calls: int) -> list[float]:
    """Seconds of each of `calls` calls of `call(n)`."""
    times = []
    for n in range(calls):
        started = time.perf_counter()
        call(n)
        times.append(time.perf_counter() - started)
    return times


def timed_call(call: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    """Seconds taken by `call(*args)`, and what it returned."""
    started = time.perf_counter()
    result = call(*args)
    return time.perf_counter() - started, result


def blocks(
    calls: dict[str, Callable[[int], Any]],
    requests: int,
    budget: float = float("inf"),
    block: int = 20,
    check: Callable[[str, Any], None] | None = None,
    min_n: int = 50,
) -> tuple[dict[str, list[float]], set[str]]:
    """Timed calls in blocks of `block`, kind after kind, so noise spreads over all kinds; a
    kind whose calls took `budget` seconds stops once it has `min_n`. `check(kind, result)`
    runs untimed after each call. Returns the seconds per kind and the kinds over budget."""
    times: dict[str, list[float]] = {key: [] for key in calls}
    spent = dict.fromkeys(calls, 0.0)
    while True:
        pending = [
            key
            for key in calls
            if len(times[key]) < requests and not (spent[key] > budget and len(times[key]) >= min_n)
        ]
        if not pending:
            return times, {key for key in calls if len(times[key]) < requests}
        for key in pending:
            for _ in range(min(block, requests - len(times[key]))):
                started = time.perf_counter()
                result = calls[key](len(times[key]))
                elapsed = time.perf_counter() - started
                times[key].append(elapsed)
                spent[key] += elapsed
                if check is not None:
                    check(key, result)


def _numeric(cell: str) -> bool:
    return cell[:1].isdigit() or (cell[:1] == "-" and cell[1:2].isdigit())


def table(head: tuple[str, ...] | list[str], rows: list[list[str]]) -> str:
    """A Markdown table; a column whose cells are all numbers (or —) is right-aligned."""
    align = []
    for i, _ in enumerate(head):
        cells = [r[i] for r in rows if r[i] not in {"—", ""}]
        align.append("---:" if i and cells and all(_numeric(c) for c in cells) else "---")
    out = ["| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |"]
    return "\n".join(out + ["| " + " | ".join(row) + " |" for row in rows])


# -- machine facts, CPU and memory ---------------------------------------------------------


def proc_field(path: str, key: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    return None


def load_average() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def machine_facts() -> dict[str, str]:
    memory = proc_field("/proc/meminfo", "MemTotal:")
    return {
        "date": time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime()),
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "memory": f"{int(memory.split()[0]) / MIB:.1f} GiB" if memory else "unknown",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": f"{platform.system()} {platform.release()}",
        "load_before": load_average(),
        "started": str(time.monotonic()),
    }


def postgres_version(server: Any) -> str:
    import psycopg

    dsn = f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres connect_timeout=5"
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return f"PostgreSQL {row[0] if row else '?'}"


def redis_version(url: str) -> str:
    import redis as redis_client

    try:
        client = redis_client.Redis.from_url(url, socket_timeout=2)
        try:
            return f"Redis {client.info('server').get('redis_version', '?')}"
        finally:
            client.close()
    except redis_client.RedisError:
        return "Redis (unknown)"


def package_version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def process_cpu(pid: int, children: bool = False) -> float:
    """CPU seconds (user + system) of a process; with `children`, plus its reaped children."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def tree_cpu(parent: int) -> float:
    """A process, its reaped children and its live children (e.g. a postmaster's backends)."""
    total = process_cpu(parent, children=True)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and fields[1] == str(parent):
                total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(values[:8])
    return (total - values[3] - values[4]) / CLK_TCK, total / CLK_TCK


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the command line and the report -------------------------------------------------------


Option = tuple[Any, Any, str]  # (full default, quick default, help); the type is the default's


def parse(
    doc: str, options: dict[str, Option], lists: dict[str, tuple[str, ...]], argv: list[str] | None
) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run (a minute or two)")
    parser.add_argument("--out", type=Path, help="write/replace the section in this Markdown file")
    for name, (full, quick, text) in options.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(full, bool):
            parser.add_argument(flag, action="store_true", help=text)
        else:
            kind = type(full) if full is not None else Path
            parser.add_argument(flag, type=kind, help=f"{text} (default {full}, quick {quick})")
    for name, choices in lists.items():
        parser.add_argument(f"--{name}", default=",".join(choices), help="/".join(choices))
    args = parser.parse_args(argv)
    for name, (full, quick, _) in options.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
        value = getattr(args, name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value <= 0 < full:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    for name, choices in lists.items():
        chosen = [c.strip() for c in getattr(args, name).split(",") if c.strip()]
        if not chosen or set(chosen) - set(choices):
            parser.error(f"--{name}: choose from {', '.join(choices)}")
        setattr(args, name, chosen)
    return args


def invocation(script: str, argv: list[str] | None) -> str:
    def short(path: str) -> str:
        with contextlib.suppress(ValueError):
            return str(Path(path).relative_to(REPO_ROOT))
        return path

    given = sys.argv[1:] if argv is None else argv
    return shlex.join([short(sys.executable), short(str(Path(script).resolve())), *given])


def header(title: str, res: Resources, command: str, software: str) -> list[str]:
    f = res.facts
    minutes = (time.monotonic() - float(f["started"])) / 60
    return [
        title,
        "",
        f"- **Date:** {f['date']}",
        f"- **Machine:** {f['nproc']} CPUs ({f['cpu']}), {f['memory']} RAM, {f['os']}; load "
        f"average (1/5/15 min) {f['load_before']} before, {load_average()} after "
        f"({minutes:.1f} min run)",
        f"- **Software:** {f['python']}, SQLite {sqlite_version()}" + software,
        f"- **Command:** `{command}`",
        "",
    ]


def write_section(path: Path, section: str, title: str) -> None:
    """Replace (or append) the section headed `title`, keeping everything else, including the
    old section's history (its `### Earlier runs…` subsections)."""
    lines = (path.read_text() if path.exists() else DOC_HEADER).splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == title), None)
    kept: list[str] = []
    if start is None:
        before, after = lines, []
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), None)
        before, old, after = lines[:start], lines[start:end], lines[end:] if end else []
        keep = False
        for line in old:
            keep = line.startswith("### Earlier runs") if line.startswith("### ") else keep
            kept += [line] if keep else []
    while before and not before[-1].strip():
        before.pop()
    pieces = ["\n".join(before), section.strip(), "\n".join(kept).strip()]
    pieces.append("\n".join(after).rstrip())
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_text("\n\n".join(p for p in pieces if p) + "\n")
    os.replace(scratch, path)


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(
    script: str,
    doc: str,
    title: str,
    measure: Callable[[argparse.Namespace, Resources], tuple[str, list[str]]],
    options: dict[str, Option],
    lists: dict[str, tuple[str, ...]] | None = None,
    argv: list[str] | None = None,
) -> int:
    """Parse the options, run `measure(args, resources)` -> (software, body lines) in a
    private temporary root, print the section and, with --out, write it into the file."""
    args = parse(
        doc,
        {"timeout": (300.0, 300.0, "seconds any single step may take")} | options,
        lists or {},
        argv,
    )
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s [%(name)s] %(message)s")
    if signal.getsignal(signal.SIGTERM) != signal.SIG_IGN:
        signal.signal(signal.SIGTERM, _interrupt)
    root = Path(tempfile.mkdtemp(prefix=f"lora-{Path(script).stem}-"))
    root.chmod(0o755)  # the postgres user must reach its data directory beneath it
    previous_tempdir, tempfile.tempdir = tempfile.tempdir, str(root)
    res = Resources(root, args.timeout)
    try:
        scrub_environment(root)
        software, body = measure(args, res)
        section = "\n".join([*header(title, res, invocation(script, argv), software), *body])
    except KeyboardInterrupt:
        say("interrupted: stopping servers and removing temporary files")
        return 130
    except BenchError as exc:
        say(f"error: {exc}")
        return 1
    finally:
        tempfile.tempdir = previous_tempdir
        res.close()
    print(section)
    if args.out is not None:
        write_section(args.out.resolve(), section, title)
        say(f"wrote section {title!r} to {args.out}")
    return 0
