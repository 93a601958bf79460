"""Benchmark the delivery queue: jobs per second end to end, and enqueue latency from the API.

A. Throughput in webhook mode (`mode: http` to a loopback receiver that answers 200 at once),
   for (1) a SQLite database with the SQLite queue and one `lora-manager worker` process, and
   (2) a PostgreSQL database with the Redis queue and two `lora-manager worker` processes.
   The workers are started first and left idle; then N job rows are inserted in bulk (not
   timed) and the clock starts: one producer queues their ids as fast as it can with
   `DeliveryQueue(settings).enqueue` while the workers consume; the clock stops at the
   `finished_at` of the last job, once the database says all N succeeded. Repetitions run in
   rounds (each configuration once per round) after an untimed warm-up batch. The CPU time
   every process spent during each batch (workers, PostgreSQL, Redis, this process) is read
   from /proc, so the report shows where the machine's cores went, per job.
B. Latency of `POST /v1/deliveries` (http mode) against a real `lora-manager serve
   --no-worker` process over loopback, sequential requests with httpx, for SQLite + SQLite
   queue and PostgreSQL + Redis; `GET /health/live` on the same server in the same run, in
   alternating blocks, as the baseline.

    .venv/bin/python bench/bench_deliveries.py [--quick] [--out docs/benchmarks.md]

Every process, server and temporary file lives under one temporary directory or in this
process's clean-up list and is stopped or removed on exit, including Ctrl-C and SIGTERM;
every wait has a time limit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
for _path in (REPO_ROOT, BENCH_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench_catalog import (  # noqa: E402
    Databases,
    fmt,
    fmt_ms,
    make_settings,
    median,
    percentile,
    scrub_environment,
    verdict,
)
from bench_migrations import (  # noqa: E402
    BIN_DIR,
    BenchError,
    Cleanup,
    base_env,
    deferred_signals,
    invocation,
    load_average,
    machine_facts,
    postgres_version,
    probe,
    run_bench,
    say,
    tail,
)

from tests.support.postgres import PostgresServer, free_port  # noqa: E402

SECTION_TITLE = "## Delivery queue"
PARTS = ("throughput", "latency")
CONFIGS = ("sqlite", "redis")
LABELS = {"sqlite": "SQLite DB + SQLite queue", "redis": "PostgreSQL DB + Redis queue"}
WORKERS = {"sqlite": 1, "redis": 2}  # `lora-manager worker` processes per configuration
TARGET_JOBS_PER_S = {"redis": 200.0}
POLL_INTERVAL = 0.05  # seconds between the producer's "all done?" queries
STALL_TIMEOUT = 30.0  # a batch with no job finishing for this long aborts the run
READY_TIMEOUT = 60.0  # a worker or API process must be up within this
SETTLE_WINDOW = 0.3  # a worker is idle once it uses less than SETTLED_CPU s of CPU in this
SETTLED_CPU = 0.015
IDLE_PAUSE = 1.0  # seconds the workers sit idle before each batch
LATENCY_BLOCK = 50  # requests per block, alternating POST and GET
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- the webhook receiver ------------------------------------------------------------------


class Receiver:
    """A loopback webhook receiver: reads the body, answers 200 with a tiny JSON body, keeps
    connections alive (HTTP/1.1, Nagle off) and counts what it received. A thread per
    connection; the workers' httpx clients hold a few pooled connections each."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                with receiver._lock:
                    receiver.count += 1
                body = b'{"ok":true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,), name="receiver", daemon=True
        )
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def hook(self) -> str:
        return f"{self.base}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


# -- clean-up ------------------------------------------------------------------------------


class Resources(Cleanup):
    """bench_migrations' clean-up (processes, PostgreSQL servers, the temp root) plus Redis,
    the receiver and SQLAlchemy engines; the workers and API processes stop first."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.stack = contextlib.ExitStack()
        self.engines: list[Any] = []

    def redis(self) -> Any:
        from tests.support.redis import running_redis

        with deferred_signals():
            return self.stack.enter_context(running_redis(self.root))

    def receiver(self) -> Receiver:
        with deferred_signals():
            receiver = Receiver()
            self.stack.callback(receiver.close)
        return receiver

    def engine(self, settings: Any) -> Any:
        from lora_manager.core.db import make_engine

        engine = make_engine(settings)
        self.engines.append(engine)
        return engine

    def close(self) -> None:
        with deferred_signals(reraise=False):
            self.stop(*self.processes)
            for engine in self.engines:
                with contextlib.suppress(Exception):
                    engine.dispose()
            self.engines.clear()
            with contextlib.suppress(Exception):
                self.stack.close()
        super().close()


# -- CPU accounting ------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # [state, ppid, ..., utime at 11, stime at 12, ...]


def process_cpu(pid: int, children: bool = False) -> float:
    """CPU seconds (user + system, all threads) of a process; with `children`, plus those of
    its children it has already reaped."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def postgres_cpu(server: PostgresServer) -> float:
    """The postmaster, its live backends and the ones it has reaped."""
    try:
        postmaster = int((server.data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    total = process_cpu(postmaster, children=True)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and fields[1] == str(postmaster):
                total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal
    idle = values[3] + values[4]
    return (total - idle) / CLK_TCK, total / CLK_TCK


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- A. throughput -------------------------------------------------------------------------


@dataclass
class Batch:
    jobs: int
    seconds: float  # first enqueue → last finished_at
    enqueue_seconds: float  # first enqueue → last enqueue returned
    cpu: dict[str, float]  # component → CPU seconds during the batch
    busy: float  # CPU seconds the whole machine was busy during the batch (all cores)
    capacity: float  # CPU seconds all cores together had during the batch

    @property
    def other(self) -> float:
        """CPU seconds of everything not counted in `cpu`: other users of the machine, the
        idle configuration's workers, the kernel's share not charged to a process."""
        return max(self.busy - sum(self.cpu.values()), 0.0)

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds


@dataclass
class Throughput:
    config: str
    workers: int
    threads: int
    batches: list[Batch] = field(default_factory=list)
    enqueue_calls: list[float] = field(default_factory=list)  # seconds per enqueue() call

    def rates(self) -> list[float]:
        return [b.rate for b in self.batches]

    def components(self) -> list[str]:
        names: list[str] = []
        for batch in self.batches:
            names += [n for n in batch.cpu if n not in names]
        return names

    def cpu_ms_per_job(self, name: str) -> float | None:
        return median([b.cpu.get(name, 0.0) / b.jobs * 1000 for b in self.batches])

    def total_cpu_ms_per_job(self) -> float | None:
        return median([sum(b.cpu.values()) / b.jobs * 1000 for b in self.batches])

    def busy_share(self) -> float | None:
        return median([b.busy / b.capacity for b in self.batches if b.capacity > 0])

    def other_ms_per_job(self) -> float | None:
        return median([b.other / b.jobs * 1000 for b in self.batches])


class Setup:
    """One configuration's database, queue and worker processes for part A."""

    def __init__(
        self,
        config: str,
        args: argparse.Namespace,
        resources: Resources,
        databases: Databases,
        receiver: Receiver,
        redis: Any,
        server: PostgresServer | None,
    ) -> None:
        self.config = config
        self.args = args
        self.resources = resources
        self.receiver = receiver
        self.server = server
        self.redis_pid = redis.process.pid if redis is not None else None
        redis_url = redis.url if redis is not None else None
        self.redis_url = redis_url
        backend = "sqlite" if config == "sqlite" else "postgresql"
        self.url = databases.fresh(backend, f"jobs-{config}")
        queue_path = resources.root / f"queue-{config}.db"
        self.settings = make_settings(
            self.url,
            redis_url=redis_url,
            queue_path=queue_path,
            delivery_http_allowlist=[receiver.base + "/"],
        )
        self.env = {
            **base_env(resources.root),
            "DATABASE_URL": self.url,
            "QUEUE_PATH": str(queue_path),
            "DELIVERY_HTTP_ALLOWLIST": receiver.base + "/",
            "WORKER_SHUTDOWN_TIMEOUT": "5",
        }
        if redis_url:
            self.env["REDIS_URL"] = redis_url
        self.engine = resources.engine(self.settings)
        self.procs: list[Any] = []
        self.logs: list[Path] = []
        self.finished = 0  # jobs of this database already finished (earlier batches)
        self.result = Throughput(config, WORKERS[config], args.threads or self._threads())

    def _threads(self) -> int:
        from lora_manager.core.config import Settings

        return int(Settings.model_fields["worker_threads"].default)

    def start_workers(self) -> None:
        argv = [str(BIN_DIR / "lora-manager"), "worker"]
        if self.args.threads:
            argv += ["--workers", str(self.args.threads)]
        for index in range(WORKERS[self.config]):
            path = self.resources.root / "logs" / f"worker-{self.config}-{index}.log"
            path.parent.mkdir(exist_ok=True)
            with path.open("wb") as handle:
                self.procs.append(self.resources.spawn(argv, self.env, handle))
            self.logs.append(path)

    def wait_consuming(self) -> None:
        """Until every worker is up and idle, judged by behaviour rather than log messages:
        its start-up CPU has settled (under SETTLED_CPU seconds in SETTLE_WINDOW) and, on
        Redis, every one of its threads waits in BRPOP on the queue. The warm-up batch then
        proves they consume."""
        deadline = time.monotonic() + READY_TIMEOUT
        expected = len(self.procs) * self.result.threads
        last = [process_cpu(p.pid) for p in self.procs]
        while True:
            time.sleep(SETTLE_WINDOW)
            self.check_alive()
            now = [process_cpu(p.pid) for p in self.procs]
            settled = all(b - a < SETTLED_CPU for a, b in zip(last, now, strict=True))
            last = now
            waiting = self._threads_in_brpop()
            if settled and (waiting is None or waiting >= expected):
                return
            if time.monotonic() > deadline:
                state = "" if waiting is None else f", {waiting}/{expected} threads on the queue"
                raise BenchError(
                    f"{LABELS[self.config]}: workers not idle on the queue after "
                    f"{READY_TIMEOUT:g}s (CPU settled: {settled}{state})\n{tail(self.logs[0])}"
                )

    def _threads_in_brpop(self) -> int | None:
        """Clients of the Redis queue's database blocked in BRPOP; None without Redis."""
        if not self.redis_url:
            return None
        import redis as redis_client

        client = redis_client.Redis.from_url(self.redis_url, socket_timeout=2)
        try:
            db = client.connection_pool.connection_kwargs.get("db", 0)
            return sum(
                1
                for c in client.client_list()
                if c.get("cmd") == "brpop" and c.get("db") == str(db)
            )
        except redis_client.RedisError:
            return 0
        finally:
            client.close()

    def stop_workers(self) -> None:
        self.resources.stop(*self.procs)
        self.procs.clear()

    def check_alive(self) -> None:
        for index, proc in enumerate(self.procs):
            if proc.poll() is not None:
                raise BenchError(
                    f"{LABELS[self.config]}: worker {index} exited with {proc.returncode}\n"
                    f"{tail(self.logs[index])}"
                )

    # -- one batch ---------------------------------------------------------------------

    def insert_jobs(self, count: int, tag: str) -> list[str]:
        """`count` pending http jobs, bulk-inserted in one transaction (not timed)."""
        from sqlalchemy import insert

        from lora_manager.core.models import DeliveryJob, new_id, utcnow

        params = json.dumps({"url": self.receiver.hook, "data": {"steps": 20, "seed": 1}})
        now = utcnow()
        rows = [
            {
                "id": new_id(),
                "prompt": f"<lora:ink-style:0.8> a cat in the rain, {tag} {i}",
                "negative_prompt": "blurry",
                "adapters": [{"name": "ink-style", "weight": 0.8}],
                "mode": "http",
                "params": params,
                "status": "pending",
                "attempts": 0,
                "max_attempts": 3,
                "created_at": now,
                "is_favorite": False,
                "cancel_requested": False,
            }
            for i in range(count)
        ]
        with self.engine.begin() as conn:
            conn.execute(insert(DeliveryJob.__table__), rows)
        return [row["id"] for row in rows]

    def counts(self) -> dict[str, int]:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT status, count(*) FROM deliveryjob GROUP BY status")
            ).all()
        return {str(status): int(n) for status, n in rows}

    def last_finished(self) -> datetime:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            value = conn.execute(text("SELECT max(finished_at) FROM deliveryjob")).scalar()
        if isinstance(value, str):  # SQLite through a text() query
            value = datetime.fromisoformat(value)
        if not isinstance(value, datetime):
            raise BenchError(f"{LABELS[self.config]}: no finished_at after the batch")
        return value

    def cpu_snapshot(self) -> dict[str, float]:
        snap = {"worker processes": sum(process_cpu(p.pid) for p in self.procs)}
        if self.server is not None:
            snap["PostgreSQL"] = postgres_cpu(self.server)
        if self.redis_pid is not None:
            snap["Redis"] = process_cpu(self.redis_pid)
        snap["bench process (receiver, producer, poll)"] = self_cpu()
        return snap

    def run_batch(self, count: int, tag: str, record: bool) -> Batch:
        from lora_manager.core.models import utcnow
        from lora_manager.core.queue import DeliveryQueue

        self.check_alive()
        ids = self.insert_jobs(count, tag)
        queue = DeliveryQueue(self.settings)
        received_before = self.receiver.count
        time.sleep(IDLE_PAUSE)
        try:
            calls: list[float] = []
            cpu_before, busy_before = self.cpu_snapshot(), machine_busy()
            started = utcnow()
            t0 = time.perf_counter()
            for job_id in ids:
                c0 = time.perf_counter()
                queue.enqueue(job_id)
                calls.append(time.perf_counter() - c0)
            enqueue_seconds = time.perf_counter() - t0
            self._wait_done(count, tag)
            cpu_after, busy_after = self.cpu_snapshot(), machine_busy()
        finally:
            queue.close()
        seconds = (self.last_finished() - started).total_seconds()
        if seconds <= 0:
            raise BenchError(f"{LABELS[self.config]}: batch {tag} ended before it began")
        cpu = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
        received = self.receiver.count - received_before
        if received != count:
            raise BenchError(
                f"{LABELS[self.config]}: batch {tag}: the receiver got {received} webhooks "
                f"for {count} jobs"
            )
        batch = Batch(
            jobs=count,
            seconds=seconds,
            enqueue_seconds=enqueue_seconds,
            cpu=cpu,
            busy=busy_after[0] - busy_before[0],
            capacity=busy_after[1] - busy_before[1],
        )
        if record:
            self.result.batches.append(batch)
            self.result.enqueue_calls += calls
        say(
            f"  {LABELS[self.config]:<28} {tag:<8} {count} jobs in {seconds:6.2f} s = "
            f"{batch.rate:6.0f} jobs/s (queued in {enqueue_seconds:.2f} s; CPU/job "
            + ", ".join(f"{k.split(' ')[0]} {v / count * 1000:.1f} ms" for k, v in cpu.items())
            + f"; not ours {batch.other / count * 1000:.1f} ms)"
        )
        return batch

    def _wait_done(self, count: int, tag: str) -> None:
        target = self.finished + count
        last_done, last_change = -1, time.monotonic()
        deadline = time.monotonic() + self.args.timeout
        while True:
            counts = self.counts()
            done = counts.get("succeeded", 0)
            bad = counts.get("failed", 0) + counts.get("cancelled", 0)
            if bad:
                raise BenchError(
                    f"{LABELS[self.config]}: {bad} job(s) failed or were cancelled: "
                    f"{self._last_error()}\n{tail(self.logs[0])}"
                )
            if done >= target:
                self.finished = target
                return
            now = time.monotonic()
            if done != last_done:
                last_done, last_change = done, now
            elif now - last_change > STALL_TIMEOUT:
                raise BenchError(
                    f"{LABELS[self.config]}: batch {tag} stalled at {done - self.finished}/"
                    f"{count} for {STALL_TIMEOUT:g}s ({counts})\n{tail(self.logs[0])}"
                )
            if now > deadline:
                raise BenchError(
                    f"{LABELS[self.config]}: batch {tag} not done after {self.args.timeout:g}s "
                    f"({counts})"
                )
            self.check_alive()
            time.sleep(POLL_INTERVAL)

    def _last_error(self) -> str:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT status, last_error FROM deliveryjob "
                    "WHERE status IN ('failed', 'cancelled') LIMIT 1"
                )
            ).first()
        return f"{row[0]}: {row[1]}" if row else "?"


def bench_throughput(
    args: argparse.Namespace,
    resources: Resources,
    databases: Databases,
    receiver: Receiver,
    redis: Any,
    server: PostgresServer | None,
) -> list[Throughput]:
    setups: list[Setup] = []
    for config in args.configs:
        on_redis = config == "redis"
        setups.append(
            Setup(
                config,
                args,
                resources,
                databases,
                receiver,
                redis if on_redis else None,
                server if on_redis else None,
            )
        )
    for setup in setups:
        say(f"throughput: starting {WORKERS[setup.config]} worker(s) on {LABELS[setup.config]}")
        setup.start_workers()
    for setup in setups:
        setup.wait_consuming()
    say(f"throughput: warm-up batch of {args.warmup} jobs per configuration")
    for setup in setups:
        setup.run_batch(args.warmup, "warm-up", record=False)
    for index in range(args.runs):
        say(f"throughput: round {index + 1}/{args.runs}, {args.jobs} jobs per configuration")
        for setup in setups:
            setup.run_batch(args.jobs, f"round {index + 1}", record=True)
    for setup in setups:
        setup.stop_workers()
    return [s.result for s in setups]


# -- B. enqueue latency from the API -------------------------------------------------------


@dataclass
class Latency:
    config: str
    post: list[float] = field(default_factory=list)
    live: list[float] = field(default_factory=list)
    startup: float = 0.0


class ApiServer:
    def __init__(
        self,
        config: str,
        resources: Resources,
        databases: Databases,
        receiver: Receiver,
        redis_url: str | None,
    ) -> None:
        self.config = config
        self.receiver = receiver
        backend = "sqlite" if config == "sqlite" else "postgresql"
        url = databases.fresh(backend, f"api-{config}")
        self.port = free_port()
        env = {
            **base_env(resources.root),
            "DATABASE_URL": url,
            "QUEUE_PATH": str(resources.root / f"api-queue-{config}.db"),
            "DELIVERY_HTTP_ALLOWLIST": receiver.base + "/",
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
        }
        if redis_url:
            env["REDIS_URL"] = redis_url
        self.log = resources.root / "logs" / f"api-{config}.log"
        self.log.parent.mkdir(exist_ok=True)
        argv = [str(BIN_DIR / "lora-manager"), "serve", "--no-worker"]
        started = time.perf_counter()
        with self.log.open("wb") as handle:
            self.proc = resources.spawn(argv, env, handle)
        deadline = started + READY_TIMEOUT
        while not probe(self.port):
            if self.proc.poll() is not None:
                raise BenchError(
                    f"API on {LABELS[config]} exited with {self.proc.returncode} before it was "
                    f"ready\n{tail(self.log)}"
                )
            if time.perf_counter() > deadline:
                raise BenchError(
                    f"API on {LABELS[config]} not ready after {READY_TIMEOUT:g}s\n{tail(self.log)}"
                )
            time.sleep(0.05)
        self.result = Latency(config, startup=time.perf_counter() - started)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def body(self, index: int) -> dict[str, Any]:
        return {
            "mode": "http",
            "prompt": f"<lora:ink-style:0.8> a cat in the rain, request {index}",
            "negative_prompt": "blurry",
            "params": {"url": self.receiver.hook, "data": {"steps": 20, "seed": index}},
        }


def bench_latency(
    args: argparse.Namespace,
    resources: Resources,
    databases: Databases,
    receiver: Receiver,
    redis: Any,
) -> list[Latency]:
    import httpx

    servers = []
    for config in args.configs:
        say(f"latency: starting `lora-manager serve --no-worker` on {LABELS[config]}")
        redis_url = redis.url.rsplit("/", 1)[0] + "/1" if config == "redis" else None
        servers.append(ApiServer(config, resources, databases, receiver, redis_url))
    with contextlib.ExitStack() as stack:
        clients = [
            stack.enter_context(httpx.Client(base_url=s.base, trust_env=False, timeout=10.0))
            for s in servers
        ]

        def post(server: ApiServer, client: httpx.Client, index: int) -> float:
            body = server.body(index)
            t0 = time.perf_counter()
            reply = client.post("/v1/deliveries", json=body)
            elapsed = time.perf_counter() - t0
            if reply.status_code != 201 or reply.json().get("status") != "pending":
                raise BenchError(
                    f"POST /v1/deliveries on {LABELS[server.config]}: HTTP "
                    f"{reply.status_code} {reply.text[:300]}"
                )
            return elapsed

        def live(server: ApiServer, client: httpx.Client) -> float:
            t0 = time.perf_counter()
            reply = client.get("/health/live")
            elapsed = time.perf_counter() - t0
            if reply.status_code != 200:
                raise BenchError(
                    f"GET /health/live on {LABELS[server.config]}: {reply.status_code}"
                )
            return elapsed

        say(f"latency: {args.warmup_requests} warm-up requests of each kind per server")
        for server, client in zip(servers, clients, strict=True):
            for i in range(args.warmup_requests):
                post(server, client, -1 - i)
                live(server, client)
        say(f"latency: {args.requests} timed requests of each kind per server, in blocks")
        deadline = time.monotonic() + args.timeout * 2
        counter = 0
        while any(len(s.result.post) < args.requests for s in servers):
            for server, client in zip(servers, clients, strict=True):
                res = server.result
                todo = min(LATENCY_BLOCK, args.requests - len(res.post))
                for _ in range(todo):
                    counter += 1
                    res.post.append(post(server, client, counter))
                for _ in range(todo):
                    res.live.append(live(server, client))
            if time.monotonic() > deadline:
                raise BenchError(f"latency: requests still running after {args.timeout * 2:g}s")
    for server in servers:
        res = server.result
        say(
            f"  {LABELS[server.config]:<28} POST p50 {fmt_ms(median(res.post))} ms, p99 "
            f"{fmt_ms(percentile(res.post, 99))} ms; /health/live p50 "
            f"{fmt_ms(median(res.live))} ms"
        )
        resources.stop(server.proc)
    return [s.result for s in servers]


# -- the report ----------------------------------------------------------------------------


@dataclass
class Report:
    facts: dict[str, str]
    command: str
    args: argparse.Namespace
    load_before: str
    load_after: str = ""
    minutes: float = 0.0
    throughput: list[Throughput] = field(default_factory=list)
    latency: list[Latency] = field(default_factory=list)

    THROUGHPUT_HEAD = (
        "configuration",
        "workers",
        "n",
        "median jobs/s",
        "min",
        "max",
        "spread",
        "queued/s (producer)",
        "CPU ms/job",
        "machine busy",
        "target",
        "result",
    )

    def throughput_rows(self) -> list[list[str]]:
        rows = []
        for res in self.throughput:
            rates = res.rates()
            mid = median(rates)
            spread = (max(rates) - min(rates)) / mid if rates and mid else None
            queued = median([b.jobs / b.enqueue_seconds for b in res.batches])
            target = TARGET_JOBS_PER_S.get(res.config)
            busy = res.busy_share()
            rows.append(
                [
                    LABELS[res.config],
                    f"{res.workers} x {res.threads} threads",
                    str(len(rates)),
                    fmt(mid, 0),
                    fmt(min(rates) if rates else None, 0),
                    fmt(max(rates) if rates else None, 0),
                    "—" if spread is None else f"{spread * 100:.0f} %",
                    fmt(queued, 0),
                    fmt(res.total_cpu_ms_per_job()),
                    "—" if busy is None else f"{busy * 100:.0f} %",
                    "—" if target is None else f"≥ {target:g}",
                    verdict(None if target is None or mid is None else mid >= target),
                ]
            )
        return rows

    CPU_HEAD = ("configuration", "component", "CPU ms/job", "share")

    def cpu_rows(self) -> list[list[str]]:
        rows = []
        for res in self.throughput:
            total = res.total_cpu_ms_per_job() or 0.0
            for name in res.components():
                value = res.cpu_ms_per_job(name)
                share = f"{value / total * 100:.0f} %" if value is not None and total else "—"
                rows.append([LABELS[res.config], name, fmt(value, 2), share])
            rows.append([LABELS[res.config], "total (the processes above)", fmt(total, 2), "100 %"])
            rows.append(
                [
                    LABELS[res.config],
                    "not this benchmark (see below)",
                    fmt(res.other_ms_per_job(), 2),
                    "—",
                ]
            )
        return rows

    ENQUEUE_HEAD = ("configuration", "n", "p50 ms", "p99 ms", "max ms")

    def enqueue_rows(self) -> list[list[str]]:
        return [
            [
                LABELS[res.config],
                str(len(res.enqueue_calls)),
                fmt_ms(median(res.enqueue_calls)),
                fmt_ms(percentile(res.enqueue_calls, 99)),
                fmt_ms(max(res.enqueue_calls) if res.enqueue_calls else None),
            ]
            for res in self.throughput
        ]

    LATENCY_HEAD = ("request", "configuration", "n", "p50", "p90", "p99", "max", "÷ live p50")

    def latency_rows(self) -> list[list[str]]:
        rows = []
        for res in self.latency:
            live = median(res.live)
            for label, values in (
                ("`POST /v1/deliveries` (http mode)", res.post),
                ("baseline: `GET /health/live`", res.live),
            ):
                p50 = median(values)
                rows.append(
                    [
                        label,
                        LABELS[res.config],
                        str(len(values)),
                        fmt_ms(p50),
                        fmt_ms(percentile(values, 90)),
                        fmt_ms(percentile(values, 99)),
                        fmt_ms(max(values) if values else None),
                        f"{p50 / live:.1f}x" if p50 and live else "—",
                    ]
                )
        return rows

    # -- plain text -------------------------------------------------------------------

    def text(self) -> str:
        f = self.facts
        out = [
            f"Delivery queue benchmark — {f['date']}",
            f"{f['nproc']} CPUs ({f['cpu']}), {f['memory']}, {f['python']}, {f['postgres']}, "
            f"{f.get('redis', 'Redis ?')}; load avg before {self.load_before}, after "
            f"{self.load_after} ({self.minutes:.1f} min run)",
        ]
        if self.throughput:
            out += [
                "",
                f"A. Jobs/s end to end, webhook mode, {self.args.jobs} jobs per batch, "
                f"{self.args.runs} batches per configuration after a {self.args.warmup}-job "
                "warm-up; workers running and idle, ids queued by one producer",
                "",
                _text_table(self.THROUGHPUT_HEAD, self.throughput_rows()),
                "",
                "CPU time per job by process (median over batches):",
                _text_table(self.CPU_HEAD, self.cpu_rows()),
                "",
                "DeliveryQueue.enqueue per call, from the producer (during the batches):",
                _text_table(self.ENQUEUE_HEAD, self.enqueue_rows()),
            ]
        if self.latency:
            out += [
                "",
                f"B. Request latency against `lora-manager serve --no-worker`, "
                f"{self.args.requests} sequential requests of each kind after "
                f"{self.args.warmup_requests} warm-up; times in ms",
                "",
                _text_table(self.LATENCY_HEAD, self.latency_rows()),
            ]
        return "\n".join(out)

    # -- markdown ---------------------------------------------------------------------

    def markdown(self) -> str:
        f = self.facts
        a = self.args
        lines = [
            SECTION_TITLE,
            "",
            f"- **Date:** {f['date']}",
            f"- **Machine:** {f['nproc']} CPUs ({f['cpu']}), {f['memory']} RAM, {f['os']}; "
            f"load average (1/5/15 min) {self.load_before} before, {self.load_after} after "
            f"({self.minutes:.1f} min run)",
            f"- **Software:** {f['python']}, {f['postgres']} (throwaway local cluster, fsync "
            f"off, synchronous_commit off), {f.get('redis', 'Redis')} (no persistence), "
            f"SQLite {_sqlite_version()}, huey {_version('huey')}",
            f"- **Command:** `{self.command}`",
            "",
        ]
        if self.throughput:
            threads = {r.threads for r in self.throughput}
            lines += [
                "### A. Jobs per second end to end (webhook mode)",
                "",
                "Every job is `mode: http`: the worker claims the row (one UPDATE … RETURNING), "
                "POSTs the "
                "prompt to a loopback webhook receiver in the benchmark process (a "
                "`ThreadingHTTPServer`, HTTP/1.1 keep-alive, answering 200 with an 11-byte "
                "body at once) and marks the row succeeded. `lora-manager worker` processes "
                f"with the default {'/'.join(str(t) for t in sorted(threads))} threads each "
                "(`WORKER_THREADS`) and the default `LOG_LEVEL=INFO` (one log line per job, "
                "to a file) are started first and left idle "
                f"({IDLE_PAUSE:g} s before each batch); then {a.jobs:,} pending rows are "
                "bulk-inserted (not timed) and the clock starts: one producer in the "
                "benchmark process queues their ids with `DeliveryQueue(settings).enqueue` "
                "as fast as it can while the workers already consume. The clock stops at "
                "the latest `finished_at` once the database reports all of them succeeded "
                f"(polled every {POLL_INTERVAL * 1000:.0f} ms with one `GROUP BY status` "
                f"query). {a.runs} batches per configuration in rounds (each configuration "
                f"once per round) after a {a.warmup}-job warm-up batch; every batch is "
                "checked: all rows succeeded, none failed, the receiver got exactly one "
                "webhook per job. *spread* is (max - min) ÷ median; *queued/s* is how fast "
                "the producer got the ids in (the workers start on them meanwhile). *CPU "
                "ms/job* sums the CPU time (user + system, from `/proc`) of every process "
                "of this benchmark during the batch, divided by the jobs; *machine busy* is "
                f"the share of all {f['nproc']} cores' time that was busy over the batch, "
                "from `/proc/stat`, whoever used it.",
                "",
                _md_table(self.THROUGHPUT_HEAD, self.throughput_rows()),
                "",
                "Where the CPU goes, per job (median over the batches; *bench process* is "
                "the webhook receiver, the producer's enqueues and the polling; PostgreSQL "
                "is the postmaster and its backends, including those that exited). *not "
                "this benchmark* is the machine's busy time minus all of the above: other "
                "users of the shared machine, the idle configuration's workers and kernel "
                "time not charged to a process. With a total of *T* ms per job, the "
                f"{f['nproc']} cores cannot complete more than {f['nproc']} x 1000 ÷ *T* jobs "
                "per second, however the work is spread:",
                "",
                _md_table(self.CPU_HEAD, self.cpu_rows()),
                "",
                "`DeliveryQueue.enqueue` alone, per call, as timed by the producer during "
                "the batches (so with the workers busy on the same cores):",
                "",
                _md_table(self.ENQUEUE_HEAD, self.enqueue_rows()),
                "",
            ]
        if self.latency:
            lines += [
                "### B. Enqueue latency from the API",
                "",
                "A real `lora-manager serve --no-worker` process per configuration (a fresh "
                "migrated database; on the Redis configuration a Redis database of its own, "
                "nobody consuming), requests over loopback from one `httpx.Client` "
                "(keep-alive), strictly sequential. `POST /v1/deliveries` with a typed "
                "prompt, `mode: http` and a webhook URL on the allow-list (201, job "
                "pending: validated, row inserted and committed, id queued). "
                f"{a.warmup_requests} untimed requests of each kind per server, then "
                f"{a.requests} timed `POST`s and {a.requests} `GET /health/live` (the bare "
                f"HTTP stack: routing, a threadpool hop, a tiny JSON answer) in alternating "
                f"blocks of {LATENCY_BLOCK}, server after server. Client-side wall times in "
                "ms; percentiles interpolated.",
                "",
                _md_table(self.LATENCY_HEAD, self.latency_rows()),
                "",
            ]
        lines += [self.summary(), ""]
        return "\n".join(lines)

    def summary(self) -> str:
        parts: list[str] = []
        for res in self.throughput:
            rate = median(res.rates())
            target = TARGET_JOBS_PER_S.get(res.config)
            total = res.total_cpu_ms_per_job()
            cores = int(self.facts["nproc"]) if self.facts["nproc"].isdigit() else 0
            text_ = (
                f"{LABELS[res.config]}, {res.workers} worker process(es) x {res.threads} "
                f"threads: {fmt(rate, 0)} jobs/s"
            )
            if target is not None:
                text_ += f" ({'meets' if rate and rate >= target else 'misses'} the ≥ {target:g})"
            if total and cores:
                top = max(res.components(), key=lambda n: res.cpu_ms_per_job(n) or 0.0)
                other = res.other_ms_per_job() or 0.0
                worker = res.cpu_ms_per_job("worker processes") or 0.0
                text_ += (
                    f"; it costs {fmt(total)} ms of CPU per job across its processes, so "
                    f"{cores} idle cores would cap it at about {cores * 1000 / total:,.0f} "
                    "jobs/s"
                )
                if worker:
                    text_ += (
                        f", and its {res.workers} worker process(es), each held to about one "
                        f"core by the GIL, at about {res.workers * 1000 / worker:,.0f} jobs/s "
                        f"({fmt(worker)} ms/job in the workers)"
                    )
                text_ += (
                    f"; the largest share is {top}, and other work on the machine took "
                    f"{fmt(other)} ms per job's worth of CPU meanwhile"
                )
            parts.append(text_ + ".")
        for lat in self.latency:
            p50, live = median(lat.post), median(lat.live)
            parts.append(
                f"{LABELS[lat.config]} API: `POST /v1/deliveries` p50 {fmt_ms(p50)} ms, p99 "
                f"{fmt_ms(percentile(lat.post, 99))} ms, against {fmt_ms(live)} ms for "
                "`/health/live`."
            )
        parts.append(
            "The machine is shared: compare medians; the receiver and the producer run on "
            "the same cores as the workers and the databases."
        )
        return " ".join(parts)


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def _sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


def _redis_version(redis: Any) -> str:
    import redis as redis_client

    try:
        client = redis_client.Redis.from_url(redis.url, socket_timeout=2)
        try:
            return f"Redis {client.info('server').get('redis_version', '?')}"
        finally:
            client.close()
    except redis_client.RedisError:
        return "Redis (unknown)"


def _text_table(head: tuple[str, ...], rows: list[list[str]]) -> str:
    head_ = [h.replace("`", "") for h in head]
    rows_ = [[c.replace("`", "") for c in r] for r in rows]
    widths = [max(len(c) for c in column) for column in zip(head_, *rows_, strict=True)]
    left = {i for i, h in enumerate(head) if h in _TEXT_COLUMNS}

    def line(row: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    return "\n".join([line(head_), "  ".join("-" * w for w in widths), *(line(r) for r in rows_)])


_TEXT_COLUMNS = {"configuration", "component", "request", "workers", "target", "result"}


def _md_table(head: tuple[str, ...], rows: list[list[str]]) -> str:
    align = ["---" if h in _TEXT_COLUMNS else "---:" for h in head]
    out = ["| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run (~1 min)")
    parser.add_argument("--jobs", type=int, help="jobs per timed batch (default 2000)")
    parser.add_argument("--warmup", type=int, help="jobs in the warm-up batch (default 200)")
    parser.add_argument("--runs", type=int, help="timed batches per configuration (default 5)")
    parser.add_argument(
        "--threads", type=int, help="threads per worker process (default: WORKER_THREADS' default)"
    )
    parser.add_argument("--requests", type=int, help="timed requests of each kind (default 500)")
    parser.add_argument("--warmup-requests", type=int, help="untimed requests (default 50)")
    parser.add_argument(
        "--parts", default=",".join(PARTS), help="throughput,latency (default both)"
    )
    parser.add_argument("--configs", default=",".join(CONFIGS), help="sqlite, redis (default both)")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds a batch or step may take"
    )
    parser.add_argument("--out", type=Path, help="write/replace the section in this Markdown file")
    args = parser.parse_args(argv)
    defaults = (
        {"jobs": 300, "warmup": 50, "runs": 2, "requests": 100, "warmup_requests": 10}
        if args.quick
        else {"jobs": 2000, "warmup": 200, "runs": 5, "requests": 500, "warmup_requests": 50}
    )
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if set(args.parts) - set(PARTS) or not args.parts:
        parser.error(f"--parts: choose from {', '.join(PARTS)}")
    if set(args.configs) - set(CONFIGS) or not args.configs:
        parser.error(f"--configs: choose from {', '.join(CONFIGS)}")
    for name in ("jobs", "warmup", "runs", "requests", "warmup_requests"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.threads is not None and not 1 <= args.threads <= 64:
        parser.error("--threads must be between 1 and 64")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s [%(name)s] %(message)s")
    return run_bench(
        args,
        invocation(argv, __file__),
        prefix="lora-bench-deliveries-",
        make_cleanup=Resources,
        measure=measure,
        title=SECTION_TITLE,
        prepare=scrub_environment,
    )


def measure(args: argparse.Namespace, resources: Resources, command: str) -> Report:
    started = time.monotonic()
    report = Report(
        facts=machine_facts(None), command=command, args=args, load_before=load_average()
    )
    server = redis = None
    if "redis" in args.configs:
        say("starting a throwaway PostgreSQL server and redis-server")
        try:
            server = resources.postgres()
        except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", None) or b""
            raise BenchError(
                f"PostgreSQL did not start: {exc}\n{detail.decode(errors='replace')[-2000:]}"
            ) from None
        report.facts["postgres"] = postgres_version(server)
        try:
            redis = resources.redis()
        except (OSError, RuntimeError) as exc:
            raise BenchError(f"redis-server did not start: {exc}") from None
        report.facts["redis"] = _redis_version(redis)
    receiver = resources.receiver()
    databases = Databases(resources.root, server)
    if "throughput" in args.parts:
        report.throughput = bench_throughput(args, resources, databases, receiver, redis, server)
    if "latency" in args.parts:
        report.latency = bench_latency(args, resources, databases, receiver, redis)
    report.load_after = load_average()
    report.minutes = (time.monotonic() - started) / 60
    return report


if __name__ == "__main__":
    sys.exit(main())
