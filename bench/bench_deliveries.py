"""Benchmark the delivery queue: jobs per second end to end, and enqueue latency from the API.

A. Throughput in webhook mode (`mode: http` to a loopback receiver that answers 200 at once)
   for (1) SQLite with the SQLite queue and one `lora-manager worker` process, (2) PostgreSQL
   with the Redis queue and two. The workers start and go idle; N job rows are bulk-inserted
   (not timed); one producer queues their ids as fast as it can; the clock stops at the last
   `finished_at` once all N succeeded. Batches run in rounds after a warm-up batch; the CPU
   time of every process involved is read from /proc.
B. Latency of `POST /v1/deliveries` against `lora-manager serve --no-worker` over loopback,
   sequential, with `GET /health/live` on the same server as the baseline.

    .venv/bin/python bench/bench_deliveries.py [--quick] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import harness as h
from harness import BenchError, fmt, fmt_ms, median, percentile, say, tail

TITLE = "## Delivery queue"
LABELS = {"sqlite": "SQLite DB + SQLite queue", "redis": "PostgreSQL DB + Redis queue"}
WORKERS = {"sqlite": 1, "redis": 2}  # `lora-manager worker` processes per configuration
TARGET_JOBS_PER_S = {"redis": 200.0}
POLL_INTERVAL = 0.05  # seconds between the producer's "all done?" queries
STALL_TIMEOUT = 30.0  # a batch with no job finishing for this long aborts the run
READY_TIMEOUT = 60.0  # a worker must be up and idle within this
SETTLE_WINDOW = 0.3  # a worker is idle once it uses less than SETTLED_CPU s of CPU in this
SETTLED_CPU = 0.015
IDLE_PAUSE = 1.0  # seconds the workers sit idle before each batch
LATENCY_BLOCK = 50  # requests per block, alternating POST and GET
THROUGHPUT_HEAD = ("configuration", "workers", "n", "median jobs/s", "min", "max", "spread")
THROUGHPUT_HEAD += ("queued/s (producer)", "CPU ms/job", "machine busy", "target", "result")


def producer(settings: Any) -> tuple[Any, Any]:
    """(enqueue(job_id), the queue to close), whichever queue API src/ has: `JobQueue` with
    `deliveries.tasks.enqueue_delivery`, or the older `DeliveryQueue`."""
    from lora_manager.core import queue

    if hasattr(queue, "JobQueue"):
        from lora_manager.deliveries.tasks import enqueue_delivery

        jobs = queue.JobQueue(settings)
        return (lambda job_id: enqueue_delivery(jobs, job_id)), jobs
    old = queue.DeliveryQueue(settings)
    return old.enqueue, old


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

    def __init__(self, config: str, args: argparse.Namespace, res: h.Resources, url: str,
                 receiver: Receiver, redis: Any, server: Any) -> None:  # fmt: skip
        self.config, self.label, self.args, self.res = config, LABELS[config], args, res
        self.receiver, self.server, self.redis = receiver, server, redis
        queue_path = res.root / f"queue-{config}.db"
        allow = receiver.base + "/"
        self.settings = h.make_settings(
            url,
            redis_url=redis and redis.url,
            queue_path=queue_path,
            delivery_http_allowlist=[allow],
        )
        self.env = h.base_env(res.root, DATABASE_URL=url, QUEUE_PATH=str(queue_path))
        self.env.update(DELIVERY_HTTP_ALLOWLIST=allow, WORKER_SHUTDOWN_TIMEOUT="5")
        self.env.update({"REDIS_URL": redis.url} if redis else {})
        self.engine = res.engine(self.settings)
        self.procs: list[Any] = []
        self.logs: list[Path] = []
        self.finished = 0  # jobs of this database already finished (earlier batches)
        from lora_manager.core.config import Settings

        threads = args.threads or int(Settings.model_fields["worker_threads"].default)
        self.result = Throughput(config, WORKERS[config], threads)

    def start_workers(self) -> None:
        argv = [str(h.BIN_DIR / "lora-manager"), "worker"]
        argv += ["--workers", str(self.args.threads)] if self.args.threads else []
        for index in range(WORKERS[self.config]):
            self.logs.append(self.res.log(f"worker-{self.config}-{index}"))
            with self.logs[-1].open("wb") as handle:
                self.procs.append(self.res.spawn(argv, self.env, handle))

    def wait_consuming(self) -> None:
        """Until every worker is up and idle, judged by behaviour rather than log messages:
        its start-up CPU has settled (under SETTLED_CPU seconds in SETTLE_WINDOW) and, on
        Redis, every one of its threads waits in BRPOP on the queue. The warm-up batch then
        proves they consume."""
        deadline = time.monotonic() + READY_TIMEOUT
        expected = len(self.procs) * self.result.threads
        last = [h.process_cpu(p.pid) for p in self.procs]
        while True:
            time.sleep(SETTLE_WINDOW)
            self.check_alive()
            now = [h.process_cpu(p.pid) for p in self.procs]
            settled = all(b - a < SETTLED_CPU for a, b in zip(last, now, strict=True))
            last, waiting = now, self._threads_in_brpop()
            if settled and (waiting is None or waiting >= expected):
                return
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{self.label}: workers not idle after {READY_TIMEOUT:g}s (CPU settled: "
                    f"{settled}, {waiting}/{expected} threads in BRPOP)\n{tail(self.logs[0])}"
                )

    def _threads_in_brpop(self) -> int | None:
        """Clients of the Redis queue's database blocked in BRPOP; None without Redis."""
        if not self.redis:
            return None
        import redis as redis_client

        client = redis_client.Redis.from_url(self.redis.url, socket_timeout=2)
        try:
            db = str(client.connection_pool.connection_kwargs.get("db", 0))
            clients = client.client_list()
            return sum(c.get("cmd") == "brpop" and c.get("db") == db for c in clients)
        except redis_client.RedisError:
            return 0
        finally:
            client.close()

    def check_alive(self) -> None:
        for index, proc in enumerate(self.procs):
            if proc.poll() is not None:
                raise BenchError(f"{self.label}: worker {index} exited with {proc.returncode}"
                                 f"\n{tail(self.logs[index])}")  # fmt: skip

    def sql(self, statement: str) -> list[Any]:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return list(conn.execute(text(statement)).all())

    def insert_jobs(self, count: int, tag: str) -> list[str]:
        """`count` pending http jobs, bulk-inserted in one transaction (not timed)."""
        from sqlalchemy import insert

        from lora_manager.core.models import DeliveryJob, new_id, utcnow

        params = json.dumps({"url": self.receiver.hook, "data": {"steps": 20, "seed": 1}})
        fixed = {"negative_prompt": "blurry", "mode": "http", "params": params, "attempts": 0}
        fixed |= {"status": "pending", "max_attempts": 3, "created_at": utcnow()}
        fixed |= {"adapters": [{"name": "ink-style", "weight": 0.8}], "is_favorite": False}
        rows = [
            fixed
            | {"id": new_id(), "prompt": f"<lora:ink-style:0.8> a cat in the rain, {tag} {i}"}
            | {"cancel_requested": False}
            for i in range(count)
        ]
        with self.engine.begin() as conn:
            conn.execute(insert(DeliveryJob.__table__), rows)
        return [row["id"] for row in rows]

    def cpu_snapshot(self) -> dict[str, float]:
        snap = {"worker processes": sum(h.process_cpu(p.pid) for p in self.procs)}
        if self.server is not None:
            postmaster = (self.server.data_dir / "postmaster.pid").read_text().split()[0]
            snap["PostgreSQL"] = h.tree_cpu(int(postmaster))
        if self.redis is not None:
            snap["Redis"] = h.process_cpu(self.redis.process.pid)
        snap["bench process (receiver, producer, poll)"] = h.self_cpu()
        return snap

    def run_batch(self, count: int, tag: str, record: bool) -> None:
        from lora_manager.core.models import utcnow

        self.check_alive()
        ids = self.insert_jobs(count, tag)
        enqueue, queue = producer(self.settings)
        received_before = self.receiver.count
        time.sleep(IDLE_PAUSE)
        try:
            cpu_before, busy_before = self.cpu_snapshot(), h.machine_busy()
            started, t0 = utcnow(), time.perf_counter()
            calls = h.timed(lambda n: enqueue(ids[n]), count)
            enqueue_seconds = time.perf_counter() - t0
            self._wait_done(count, tag)
            cpu_after, busy_after = self.cpu_snapshot(), h.machine_busy()
        finally:
            queue.close()
        last = self.sql("SELECT max(finished_at) FROM deliveryjob")[0][0]
        last = datetime.fromisoformat(last) if isinstance(last, str) else last  # SQLite text()
        seconds = (last - started).total_seconds()
        received = self.receiver.count - received_before
        if seconds <= 0 or received != count:
            raise BenchError(f"{self.label}: batch {tag}: {seconds:.3f} s, the receiver got "
                             f"{received} webhooks for {count} jobs")  # fmt: skip
        cpu = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
        busy, capacity = (b - a for a, b in zip(busy_before, busy_after, strict=True))
        batch = Batch(count, seconds, enqueue_seconds, cpu, busy, capacity)
        if record:
            self.result.batches.append(batch)
            self.result.enqueue_calls += calls
        say(
            f"  {self.label:<28} {tag:<8} {count} jobs in {seconds:6.2f} s = {batch.rate:6.0f} "
            f"jobs/s (queued in {enqueue_seconds:.2f} s; CPU/job "
            + ", ".join(f"{k.split(' ')[0]} {v / count * 1000:.1f} ms" for k, v in cpu.items())
            + f"; not ours {batch.other / count * 1000:.1f} ms)"
        )

    def _wait_done(self, count: int, tag: str) -> None:
        target = self.finished + count
        last_done, last_change = -1, time.monotonic()
        deadline = time.monotonic() + self.args.timeout
        while True:
            counts = dict(self.sql("SELECT status, count(*) FROM deliveryjob GROUP BY status"))
            done, now = counts.get("succeeded", 0), time.monotonic()
            if counts.get("failed", 0) + counts.get("cancelled", 0):
                error = self.sql("SELECT status, last_error FROM deliveryjob WHERE status IN "
                                 "('failed', 'cancelled') LIMIT 1")  # fmt: skip
                raise BenchError(f"{self.label}: {error}\n{tail(self.logs[0])}")
            if done >= target:
                self.finished = target
                return
            if done != last_done:
                last_done, last_change = done, now
            if now - last_change > STALL_TIMEOUT or now > deadline:
                at = f"{done - self.finished}/{count} ({counts})"
                raise BenchError(f"{self.label}: batch {tag} stalled or too slow at {at}")
            self.check_alive()
            time.sleep(POLL_INTERVAL)


def bench_throughput(
    args: argparse.Namespace,
    res: h.Resources,
    databases: h.Databases,
    receiver: Receiver,
    redis: Any,
    server: Any,
) -> list[Throughput]:
    setups = []
    for config in args.configs:
        url = databases.fresh("sqlite" if config == "sqlite" else "postgresql", f"jobs-{config}")
        on_redis = config == "redis"
        setups.append(Setup(config, args, res, url, receiver, (on_redis and redis) or None,
                            (on_redis and server) or None))  # fmt: skip
        say(f"throughput: starting {WORKERS[config]} worker(s) on {LABELS[config]}")
        setups[-1].start_workers()
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
        res.stop(*setup.procs)
    return [s.result for s in setups]


# -- B. enqueue latency from the API -------------------------------------------------------


def bench_latency(
    args: argparse.Namespace,
    res: h.Resources,
    databases: h.Databases,
    receiver: Receiver,
    redis: Any,
) -> dict[str, dict[str, list[float]]]:
    import httpx

    clients: dict[str, Any] = {}
    for config in args.configs:
        say(f"latency: starting `lora-manager serve --no-worker` on {LABELS[config]}")
        port = h.free_port()
        env = h.base_env(
            res.root,
            DATABASE_URL=databases.fresh("sqlite" if config == "sqlite" else "postgresql", "api"),
            QUEUE_PATH=str(res.root / f"api-queue-{config}.db"),
            DELIVERY_HTTP_ALLOWLIST=receiver.base + "/",
            HOST="127.0.0.1",
            PORT=str(port),
        )
        if config == "redis":  # a Redis database of its own, nobody consuming
            env["REDIS_URL"] = redis.url.rsplit("/", 1)[0] + "/1"
        argv = [str(h.BIN_DIR / "lora-manager"), "serve", "--no-worker"]
        res.serve(f"api-{config}", [argv], [env], [port])
        clients[config] = res.stack.enter_context(
            httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=10.0)
        )

    def post(config: str, n: int) -> Any:
        body = {
            "mode": "http",
            "prompt": f"<lora:ink-style:0.8> a cat in the rain, request {n}",
            "negative_prompt": "blurry",
            "params": {"url": receiver.hook, "data": {"steps": 20, "seed": n}},
        }
        return clients[config].post("/v1/deliveries", json=body)

    calls: dict[str, Any] = {}
    for config in args.configs:
        calls[f"{config} post"] = lambda n, c=config: post(c, n)
        calls[f"{config} live"] = lambda _n, c=config: clients[c].get("/health/live")

    def check(key: str, reply: Any) -> None:
        wanted = 201 if key.endswith("post") else 200
        if reply.status_code != wanted or (
            wanted == 201 and reply.json().get("status") != "pending"
        ):
            raise BenchError(f"{key}: HTTP {reply.status_code} {reply.text[:300]}")

    say(f"latency: {args.warmup_requests} warm-up and {args.requests} timed requests per kind")
    with h.time_limit("latency requests", args.timeout * 2):
        h.blocks(calls, args.warmup_requests, block=args.warmup_requests, check=check)
        times, _ = h.blocks(calls, args.requests, block=LATENCY_BLOCK, check=check)
    for key, values in times.items():
        say(f"  {key:<12} p50 {fmt_ms(median(values))} ms, p99 {fmt_ms(percentile(values, 99))} ms")
    return {c: {"post": times[f"{c} post"], "live": times[f"{c} live"]} for c in args.configs}


# -- the report ----------------------------------------------------------------------------


Latency = dict[str, dict[str, list[float]]]  # configuration -> "post"/"live" -> seconds


def throughput_section(
    args: argparse.Namespace, results: list[Throughput], nproc: str
) -> list[str]:
    rows, cpu_rows, enqueue_rows = [], [], []
    for r in results:
        rates, label = r.rates(), LABELS[r.config]
        mid, target, busy = median(rates), TARGET_JOBS_PER_S.get(r.config), r.busy_share()
        spread = (max(rates) - min(rates)) / mid if rates and mid else None
        stats = h.stat_row(label, rates, 0)
        rows.append(
            [
                label,
                f"{r.workers} x {r.threads} threads",
                *stats[1:],
                "—" if spread is None else f"{spread * 100:.0f} %",
                fmt(median([b.jobs / b.enqueue_seconds for b in r.batches]), 0),
                fmt(r.total_cpu_ms_per_job()),
                "—" if busy is None else f"{busy * 100:.0f} %",
                "—" if target is None else f"≥ {target:g}",
                h.verdict(None if target is None or mid is None else mid >= target),
            ]
        )
        total = r.total_cpu_ms_per_job() or 0.0
        for name in r.components():
            value = r.cpu_ms_per_job(name) or 0.0
            cpu_rows.append([label, name, fmt(value, 2), f"{value / total * 100:.0f} %"])
        cpu_rows.append([label, "total (the processes above)", fmt(total, 2), "100 %"])
        cpu_rows.append([label, "not this benchmark", fmt(r.other_ms_per_job(), 2), "—"])
        enqueue_rows.append(h.latency_row(label, r.enqueue_calls, 99))
    threads = "/".join(sorted({str(r.threads) for r in results}))
    return [
        "### A. Jobs per second end to end (webhook mode)",
        "",
        "Every job is `mode: http`, POSTed by the worker to a loopback receiver in the "
        "benchmark process (HTTP/1.1 keep-alive, 200 at once). `lora-manager worker` processes "
        f"with {threads} threads each and `LOG_LEVEL=INFO` start first and sit idle "
        f"({IDLE_PAUSE:g} s before each batch); {args.jobs:,} pending rows are bulk-inserted "
        "(not timed), then one producer queues their ids while the workers consume; the clock "
        "stops at the latest `finished_at` once all succeeded (polled every "
        f"{POLL_INTERVAL * 1000:.0f} ms). {args.runs} batches per configuration in rounds after "
        f"a {args.warmup}-job warm-up; each checked (all succeeded, one webhook per job). "
        "*spread* is (max - min) ÷ median; *queued/s* the producer's rate; *CPU ms/job* the CPU "
        "time (from `/proc`) of this benchmark's processes per job; *machine busy* the share of "
        f"all {nproc} cores' time that was busy, whoever used it.",
        "",
        h.table(THROUGHPUT_HEAD, rows),
        "",
        "Where the CPU goes, per job (median over the batches; *not this benchmark* is the "
        "machine's busy time minus the processes above). With *T* ms per job, "
        f"{nproc} cores cannot complete more than {nproc} x 1000 ÷ *T* jobs per second:",
        "",
        h.table(("configuration", "component", "CPU ms/job", "share"), cpu_rows),
        "",
        "The producer's enqueue alone, per call, during the batches (in ms):",
        "",
        h.table(("configuration", "n", "p50 ms", "p99 ms", "max ms"), enqueue_rows),
        "",
    ]


def latency_section(args: argparse.Namespace, latency: Latency) -> list[str]:
    rows = []
    for config, kinds in latency.items():
        live = median(kinds["live"])
        for label, values in (
            ("`POST /v1/deliveries` (http mode)", kinds["post"]),
            ("baseline: `GET /health/live`", kinds["live"]),
        ):
            row = h.latency_row(label, values, 90, 99)
            rows.append([row[0], LABELS[config], *row[1:], h.ratio(median(values), live)])
    return [
        "### B. Enqueue latency from the API",
        "",
        "A real `lora-manager serve --no-worker` per configuration (fresh migrated database; "
        "on Redis a database of its own, nobody consuming), sequential requests over loopback "
        "from one `httpx.Client`. `POST /v1/deliveries` (http mode, 201 pending: validated, "
        f"inserted, committed, queued); {args.warmup_requests} untimed requests of each kind, "
        f"then {args.requests} `POST`s and {args.requests} `GET /health/live` in alternating "
        f"blocks of {LATENCY_BLOCK}. Client-side wall times in ms.",
        "",
        h.table(("request", "configuration", "n", "p50", "p90", "p99", "max", "÷ live p50"), rows),
        "",
    ]


def summary(results: list[Throughput], latency: Latency, cores: int) -> str:
    parts: list[str] = []
    for r in results:
        rate, target = median(r.rates()), TARGET_JOBS_PER_S.get(r.config)
        total, worker = r.total_cpu_ms_per_job() or 0.0, r.cpu_ms_per_job("worker processes")
        text = f"{LABELS[r.config]}, {r.workers} x {r.threads} threads: {fmt(rate, 0)} jobs/s"
        if target is not None:
            text += f" ({'meets' if rate and rate >= target else 'misses'} the ≥ {target:g})"
        if total:
            text += (
                f"; {fmt(total)} ms of CPU per job across its processes caps {cores} idle cores "
                f"at about {cores * 1000 / total:,.0f} jobs/s"
            )
        if worker:
            text += (
                f", and its {r.workers} worker process(es), about one core each (GIL), at about "
                f"{r.workers * 1000 / worker:,.0f} jobs/s ({fmt(worker)} ms/job in the workers)"
            )
        parts.append(text + f"; other work took {fmt(r.other_ms_per_job())} ms per job.")
    for config, kinds in latency.items():
        parts.append(
            f"{LABELS[config]} API: `POST /v1/deliveries` p50 {fmt_ms(median(kinds['post']))} ms,"
            f" p99 {fmt_ms(percentile(kinds['post'], 99))} ms, against "
            f"{fmt_ms(median(kinds['live']))} ms for `/health/live`."
        )
    return " ".join([*parts, "The machine is shared: compare medians."])


def measure(args: argparse.Namespace, res: h.Resources) -> tuple[str, list[str]]:
    server = redis = None
    if "redis" in args.configs:
        say("starting a throwaway PostgreSQL server and redis-server")
        server, redis = res.postgres(), res.redis()
    receiver = Receiver()
    res.stack.callback(receiver.close)
    databases = h.Databases(res.root, server)
    results, latency, body = [], {}, []
    if "throughput" in args.parts:
        results = bench_throughput(args, res, databases, receiver, redis, server)
        body += throughput_section(args, results, res.facts["nproc"])
    if "latency" in args.parts:
        latency = bench_latency(args, res, databases, receiver, redis)
        body += latency_section(args, latency)
    f = res.facts
    software = (
        f", {f.get('postgres', 'PostgreSQL not used')} (throwaway local cluster, fsync off, "
        f"synchronous_commit off), {f.get('redis', 'Redis not used')} (no persistence), huey "
        + h.package_version("huey")
    )
    return software, [*body, summary(results, latency, int(f["nproc"])), ""]


OPTIONS: dict[str, h.Option] = {
    "jobs": (2000, 300, "jobs per timed batch"),
    "warmup": (200, 50, "jobs in the warm-up batch"),
    "runs": (5, 2, "timed batches per configuration"),
    "threads": (0, 0, "threads per worker process (0: WORKER_THREADS' default)"),
    "requests": (500, 100, "timed requests of each kind"),
    "warmup_requests": (50, 10, "untimed requests of each kind"),
}
LISTS = {"parts": ("throughput", "latency"), "configs": ("sqlite", "redis")}

if __name__ == "__main__":
    sys.exit(h.run(__file__, __doc__ or "", TITLE, measure, OPTIONS, LISTS))
