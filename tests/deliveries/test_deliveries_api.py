"""The delivery-jobs API (/v1/deliveries and POST /v1/compose with `deliver`), end to end.

The app is built without a worker, so it only queues: states other than pending are set on the
rows directly, and the one test that needs a job to run calls the `JobRunner` itself. The core
flows run on SQLite and PostgreSQL (`db_url`); the table-driven refusals share one SQLite app.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from lora_manager.api import create_app
from lora_manager.core.config import Settings
from lora_manager.core.db import make_engine, make_session_factory
from lora_manager.core.models import DeliveryJob, utcnow
from lora_manager.core.queue import JobQueue
from lora_manager.deliveries.runner import JobRunner
from tests.support.adapters import three_adapters
from tests.support.apps import app_settings
from tests.support.fake_servers import WebhookServer, tiny_png
from tests.support.orm import edit_row
from tests.support.postgres import PostgresServer, free_port
from tests.support.templates import MigratedTemplates

HOOK = "https://hooks.example.com/lora"
HOOK_URL = f"{HOOK}/in"
# The app is built without settings from the environment, for the whole module.
pytestmark = pytest.mark.usefixtures("clean_environment")
API_KEY = "test-api-key-123"
PNG = tiny_png()
T0 = datetime(2024, 5, 1, 12, 0, 0)


# --- helpers ----------------------------------------------------------------------------------


def http_job(prompt: str = "a cat", **changes: Any) -> dict[str, Any]:
    """A valid POST /deliveries body for the webhook mode."""
    return {"mode": "http", "prompt": prompt, "params": {"url": HOOK_URL}, **changes}


# Every back end configured (nothing is ever called).
BACKENDS: dict[str, Any] = {
    "delivery_http_allowlist": [HOOK],
    "delivery_cli_command": [sys.executable, "-c", "pass"],
    "sdnext_url": "http://127.0.0.1:9",
}


def detail_text(response: Any) -> str:
    """The error detail as one text: ours is a string, FastAPI's a list of field errors."""
    detail = response.json()["detail"]
    if isinstance(detail, str):
        return detail
    return "; ".join(
        ".".join(str(part) for part in error["loc"]) + ": " + error["msg"] for error in detail
    )


def route_ids(routes: list[tuple[str, str, Any]]) -> list[str]:
    return [f"{method} {path}" for method, path, _ in routes]


def when(value: str | None) -> datetime | None:
    """A timestamp as the API sends it (UTC, with its offset), as the naive UTC rows hold."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0), value
    return parsed.replace(tzinfo=None)


@dataclass
class Api:
    client: TestClient
    settings: Settings
    sessions: sessionmaker[Session]
    queue: JobQueue  # a second handle on the queue the app writes to

    def create(self, body: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
        response = self.client.post("/v1/deliveries", json={**(body or http_job()), **changes})
        assert response.status_code == 201, response.text
        job: dict[str, Any] = response.json()
        return job

    def get(self, job_id: str) -> dict[str, Any]:
        response = self.client.get(f"/v1/deliveries/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job

    def page(self, **query: Any) -> dict[str, Any]:
        response = self.client.get("/v1/deliveries", params=query)
        assert response.status_code == 200, response.text
        page: dict[str, Any] = response.json()
        return page

    def ids(self, **query: Any) -> list[str]:
        return [job["id"] for job in self.page(**query)["items"]]

    def set_row(self, job_id: str, **values: Any) -> None:
        """Change a job's row behind the API's back (what a worker would do)."""
        edit_row(self.sessions, DeliveryJob, job_id, **values)

    def row(self, job_id: str) -> DeliveryJob | None:
        with self.sessions() as session:
            return session.get(DeliveryJob, job_id)

    def count(self) -> int:
        with self.sessions() as session:
            return session.scalar(select(func.count()).select_from(DeliveryJob)) or 0

    def queued_ids(self) -> list[str]:
        """The job ids waiting on the queue, read back through the queue's own serializer."""
        huey = self.queue.huey
        return [huey.serializer.deserialize(raw).args[0] for raw in huey.storage.enqueued_items()]

    def write_result(self, job_id: str, names: list[str]) -> None:
        """Mark a job succeeded with these images; the first one is written to disk."""
        self.set_row(
            job_id,
            status="succeeded",
            started_at=utcnow(),
            finished_at=utcnow(),
            attempts=1,
            result=json.dumps({"backend": "sdnext", "images": names}),
        )
        first = Path(self.settings.results_dir) / names[0]
        first.parent.mkdir(parents=True, exist_ok=True)
        first.write_bytes(PNG)

    def mark_running(self, job_id: str) -> None:
        self.set_row(
            job_id,
            status="running",
            lease_owner="worker-1:4242:abcd",
            lease_expires_at=utcnow() + timedelta(minutes=5),
            started_at=utcnow(),
            attempts=1,
        )


@contextmanager
def open_api(url: str, folder: Path, **overrides: Any) -> Iterator[Api]:
    """The app (no worker) on a database already at head, a session and a queue handle."""
    settings = app_settings(url, folder, **(BACKENDS | overrides))
    engine = make_engine(settings)
    queue = JobQueue(settings)
    try:
        with TestClient(create_app(settings, migrate_on_startup=False)) as client:
            yield Api(client, settings, make_session_factory(engine), queue)
    finally:
        queue.close()
        engine.dispose()


@contextmanager
def job_runner(api: Api) -> Iterator[JobRunner]:
    """What a worker runs for each id it takes off the queue, on the same settings."""
    engine = make_engine(api.settings)
    runner = JobRunner(api.settings, engine, owner="test-runner")
    try:
        yield runner
    finally:
        runner.close()
        engine.dispose()


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def api(migrated_db_url: str, tmp_path: Path) -> Iterator[Api]:
    """The app on a fresh database of each kind."""
    with open_api(migrated_db_url, tmp_path) as opened:
        yield opened


@pytest.fixture
def sqlite_api(migrated_sqlite_url: str, tmp_path: Path) -> Iterator[Api]:
    with open_api(migrated_sqlite_url, tmp_path) as opened:
        yield opened


@contextmanager
def module_api(
    templates: MigratedTemplates, factory: pytest.TempPathFactory, name: str, **overrides: Any
) -> Iterator[Api]:
    folder = factory.mktemp(name)
    url = f"sqlite:///{folder / 'lora.db'}"
    templates.fill(url)
    with open_api(url, folder, **overrides) as opened:
        yield opened


@pytest.fixture(scope="module")
def shared_api(
    templates: MigratedTemplates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    """One SQLite app for the table-driven refusals: each case checks its own job or count."""
    with module_api(templates, tmp_path_factory, "shared") as opened:
        yield opened


@pytest.fixture(scope="module")
def unconfigured_api(
    templates: MigratedTemplates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    """No allow-list, no CLI command, no SDNext URL."""
    with module_api(
        templates,
        tmp_path_factory,
        "unconfigured",
        delivery_http_allowlist=[],
        delivery_cli_command=[],
        sdnext_url=None,
    ) as opened:
        yield opened


def seed_adapters(api: Api) -> None:
    with api.sessions() as session:
        session.add_all(three_adapters())
        session.commit()


COMPOSED_PROMPT = "a cat, one, two, <lora:first:1> <lora:second:0.6>"
COMPOSED_ADAPTERS = [
    {"id": "id-first", "name": "First", "token_name": "first", "weight": 1.0, "triggers": ["one"]},
    {
        "id": "id-second",
        "name": "Second",
        "token_name": "second",
        "weight": 0.6,
        "triggers": ["two"],
    },
]


# --- create -----------------------------------------------------------------------------------


def test_create_saves_a_pending_job_and_puts_its_id_on_the_queue(api: Api) -> None:
    assert api.queue.backlog() == 0
    job = api.create(http_job("a cat", negative_prompt="blurry"))
    assert job["status"] == "pending"
    assert (job["mode"], job["prompt"], job["negative_prompt"]) == ("http", "a cat", "blurry")
    assert job["params"] == {"url": HOOK_URL}
    assert job["adapters"] == [] and job["images"] == [] and job["result"] is None
    assert (job["attempts"], job["max_attempts"]) == (0, api.settings.job_max_attempts)
    assert job["cancel_requested"] is False and job["is_favorite"] is False
    assert job["rating"] is None and job["started_at"] is None and job["finished_at"] is None
    assert api.queue.backlog() == 1
    assert api.queued_ids() == [job["id"]]
    assert api.get(job["id"]) == job

    second = api.create(max_attempts=7)
    assert second["max_attempts"] == 7
    assert api.queue.backlog() == 2
    assert api.queued_ids() == [job["id"], second["id"]]


def test_create_accepts_each_configured_mode(shared_api: Api) -> None:
    cli = shared_api.create({"mode": "cli", "prompt": "a dog"})
    assert (cli["mode"], cli["params"]) == ("cli", {})
    params = {"steps": 30, "width": 768, "height": 512, "cfg_scale": 6.5, "sampler_name": "Euler"}
    sdnext = shared_api.create({"mode": "sdnext", "prompt": "a fox", "params": params})
    assert (sdnext["mode"], sdnext["params"]) == ("sdnext", params)
    data = {"url": HOOK_URL, "data": {"channel": "art"}}
    http = shared_api.create({"mode": "http", "prompt": "an owl", "params": data})
    assert http["params"] == data
    for job in (cli, sdnext, http):
        assert shared_api.get(job["id"])["status"] == "pending"
        assert job["id"] in shared_api.queued_ids()


@pytest.mark.parametrize(
    "params",
    [
        {"steps": 1, "cfg_scale": 1, "width": 64, "height": 4096},
        {"steps": 150, "cfg_scale": 30, "width": 4096, "height": 64},
        {"seed": -1, "batch_size": 8, "n_iter": 16},
        {"seed": 2**32 - 1, "batch_size": 1, "n_iter": 1},
    ],
    ids=["low-edges", "high-edges", "seed-random-max-batch", "seed-max"],
)
def test_sdnext_params_at_the_edges_of_their_ranges_are_accepted(
    shared_api: Api, params: dict[str, Any]
) -> None:
    job = shared_api.create({"mode": "sdnext", "prompt": "a fox", "params": params})
    assert job["params"] == params


# (body, a fragment of the 422 detail); the app has every back end configured.
INVALID_BODIES: dict[str, tuple[dict[str, Any], str]] = {
    "unknown mode": ({"mode": "ftp", "prompt": "x"}, "body.mode: Input should be 'http'"),
    "no mode": ({"prompt": "x"}, "body.mode: Field required"),
    "neither prompt nor compose": (
        {"mode": "cli"},
        "give exactly one of prompt and compose",
    ),
    "both prompt and compose": (
        {"mode": "cli", "prompt": "x", "compose": {"prefix": "y"}},
        "give exactly one of prompt and compose",
    ),
    "negative prompt beside compose": (
        {"mode": "cli", "compose": {"prefix": "y"}, "negative_prompt": "z"},
        "put negative_prompt inside compose",
    ),
    "extra field": (http_job(priority=1), "body.priority: Extra inputs are not permitted"),
    "extra field in compose": (
        {"mode": "cli", "compose": {"prefix": "y", "color": "red"}},
        "body.compose.color: Extra inputs are not permitted",
    ),
    "empty prompt": (http_job(""), "body.prompt: String should have at least 1 character"),
    "blank prompt": (http_job("   "), "the prompt is empty"),
    "max_attempts 0": (http_job(max_attempts=0), "body.max_attempts"),
    "max_attempts 21": (http_job(max_attempts=21), "body.max_attempts"),
    "params not an object": (http_job(params=["url"]), "body.params"),
    # http
    "http without url": (http_job(params={}), "http mode needs params.url"),
    "http url not text": (http_job(params={"url": 42}), "http mode needs params.url"),
    "http unknown param": (
        http_job(params={"url": HOOK_URL, "headers": {"A": "b"}}),
        "unknown http params: headers (allowed: url, data)",
    ),
    "http data not an object": (
        http_job(params={"url": HOOK_URL, "data": [1, 2]}),
        "params.data must be a JSON object",
    ),
    "http url off the allow-list": (
        http_job(params={"url": "https://evil.example.com/lora/in"}),
        "params.url is not under any DELIVERY_HTTP_ALLOWLIST entry",
    ),
    "http url sharing only a name prefix": (
        http_job(params={"url": "https://hooks.example.com/lora-evil"}),
        "DELIVERY_HTTP_ALLOWLIST",
    ),
    "http url climbing out with dot-dot": (
        http_job(params={"url": "https://hooks.example.com/lora/../admin"}),
        "DELIVERY_HTTP_ALLOWLIST",
    ),
    "http url with other scheme": (
        http_job(params={"url": "http://hooks.example.com/lora/in"}),
        "DELIVERY_HTTP_ALLOWLIST",
    ),
    "http url with other port": (
        http_job(params={"url": "https://hooks.example.com:8443/lora/in"}),
        "DELIVERY_HTTP_ALLOWLIST",
    ),
    "http url with credentials": (
        http_job(params={"url": "https://user:pw@hooks.example.com/lora/in"}),
        "DELIVERY_HTTP_ALLOWLIST",
    ),
    # cli
    "cli with params": (
        {"mode": "cli", "prompt": "x", "params": {"args": ["-v"]}},
        "cli mode takes no params",
    ),
    # sdnext
    "sdnext unknown param": (
        {"mode": "sdnext", "prompt": "x", "params": {"enable_hr": True}},
        "unknown sdnext params: enable_hr (allowed: batch_size, cfg_scale, height",
    ),
    "sdnext steps 0": (
        {"mode": "sdnext", "prompt": "x", "params": {"steps": 0}},
        "params: steps must be between 1 and 150",
    ),
    "sdnext steps 151": (
        {"mode": "sdnext", "prompt": "x", "params": {"steps": 151}},
        "params: steps must be between 1 and 150",
    ),
    "sdnext steps not an integer": (
        {"mode": "sdnext", "prompt": "x", "params": {"steps": 20.5}},
        "params: steps must be an integer",
    ),
    "sdnext steps a boolean": (
        {"mode": "sdnext", "prompt": "x", "params": {"steps": True}},
        "params: steps must be an integer",
    ),
    "sdnext width not a multiple of 8": (
        {"mode": "sdnext", "prompt": "x", "params": {"width": 500}},
        "params: width must be between 64 and 4096, a multiple of 8",
    ),
    "sdnext width 56": (
        {"mode": "sdnext", "prompt": "x", "params": {"width": 56}},
        "params: width must be between 64 and 4096",
    ),
    "sdnext height 4104": (
        {"mode": "sdnext", "prompt": "x", "params": {"height": 4104}},
        "params: height must be between 64 and 4096",
    ),
    "sdnext cfg_scale 0.5": (
        {"mode": "sdnext", "prompt": "x", "params": {"cfg_scale": 0.5}},
        "params: cfg_scale must be a number between 1 and 30",
    ),
    "sdnext cfg_scale 31": (
        {"mode": "sdnext", "prompt": "x", "params": {"cfg_scale": 31}},
        "params: cfg_scale must be a number between 1 and 30",
    ),
    "sdnext cfg_scale as text": (
        {"mode": "sdnext", "prompt": "x", "params": {"cfg_scale": "7"}},
        "params: cfg_scale must be a number between 1 and 30",
    ),
    "sdnext seed -2": (
        {"mode": "sdnext", "prompt": "x", "params": {"seed": -2}},
        "params: seed must be between -1",
    ),
    "sdnext batch_size 9": (
        {"mode": "sdnext", "prompt": "x", "params": {"batch_size": 9}},
        "params: batch_size must be between 1 and 8",
    ),
    "sdnext n_iter 17": (
        {"mode": "sdnext", "prompt": "x", "params": {"n_iter": 17}},
        "params: n_iter must be between 1 and 16",
    ),
    "sdnext empty sampler": (
        {"mode": "sdnext", "prompt": "x", "params": {"sampler_name": " "}},
        "params: sampler_name must be a short non-empty text",
    ),
    # compose
    "compose with unknown adapters": (
        {"mode": "cli", "compose": {"adapter_ids": ["nope"]}},
        "unknown adapter ids: nope",
    ),
    "compose with nothing to compose": (
        {"mode": "cli", "compose": {"prefix": ""}},
        "the prompt is empty",
    ),
}


@pytest.mark.parametrize("case", list(INVALID_BODIES))
def test_invalid_delivery_is_refused_with_a_clear_422_and_nothing_queued(
    shared_api: Api, case: str
) -> None:
    body, expected = INVALID_BODIES[case]
    rows, backlog = shared_api.count(), shared_api.queue.backlog()
    response = shared_api.client.post("/v1/deliveries", json=body)
    assert response.status_code == 422, response.text
    assert expected in detail_text(response)
    assert (shared_api.count(), shared_api.queue.backlog()) == (rows, backlog)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (http_job(), "params.url is not under any DELIVERY_HTTP_ALLOWLIST entry"),
        ({"mode": "cli", "prompt": "x"}, "cli mode is not configured: set DELIVERY_CLI_COMMAND"),
        ({"mode": "sdnext", "prompt": "x"}, "sdnext mode is not configured: set SDNEXT_URL"),
    ],
    ids=["http-empty-allowlist", "cli", "sdnext"],
)
def test_a_back_end_that_is_not_configured_is_refused(
    unconfigured_api: Api, body: dict[str, Any], expected: str
) -> None:
    response = unconfigured_api.client.post("/v1/deliveries", json=body)
    assert response.status_code == 422, response.text
    assert detail_text(response) == expected
    assert unconfigured_api.count() == 0
    assert unconfigured_api.queue.backlog() == 0


def test_a_job_is_saved_even_when_the_queue_is_unreachable(
    migrated_sqlite_url: str, tmp_path: Path
) -> None:
    # The row is the truth; a worker's sweeper queues a pending job whose message never left.
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    with open_api(migrated_sqlite_url, tmp_path, redis_url=dead_redis) as api:
        job = api.create()
        assert job["status"] == "pending"
        stored = api.row(job["id"])
        assert stored is not None and stored.status == "pending"


def test_a_created_job_lands_in_redis_when_redis_url_is_set(
    migrated_sqlite_url: str, tmp_path: Path, redis_url: str
) -> None:
    with open_api(migrated_sqlite_url, tmp_path, redis_url=redis_url) as api:
        assert api.queue.backlog() == 0
        job = api.create()
        assert api.queue.backlog() == 1
        elsewhere = JobQueue(api.settings)  # what a worker process would build
        try:
            assert elsewhere.backlog() == 1
        finally:
            elsewhere.close()
        client = redis.Redis.from_url(redis_url)
        try:
            raw = client.lrange(api.queue.huey.storage.queue_key, 0, -1)
        finally:
            client.close()
        assert [json.loads(message)["args"] for message in raw] == [[job["id"]]]


# --- compose and deliver ----------------------------------------------------------------------


def test_create_can_compose_the_prompt_from_the_active_adapters(api: Api) -> None:
    seed_adapters(api)
    job = api.create(
        {
            "mode": "http",
            "compose": {"prefix": "a cat", "negative_prompt": "blurry"},
            "params": {"url": HOOK_URL},
        }
    )
    assert job["prompt"] == COMPOSED_PROMPT
    assert job["negative_prompt"] == "blurry"
    assert job["adapters"] == COMPOSED_ADAPTERS
    assert api.get(job["id"])["adapters"] == COMPOSED_ADAPTERS
    assert api.queued_ids() == [job["id"]]


def test_compose_with_deliver_queues_the_composed_prompt_in_one_call(api: Api) -> None:
    seed_adapters(api)
    response = api.client.post(
        "/v1/compose",
        json={
            "prefix": "a cat",
            "negative_prompt": "blurry",
            "deliver": {"mode": "http", "params": {"url": HOOK_URL}, "max_attempts": 5},
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    job = body["job"]
    assert body["prompt"] == COMPOSED_PROMPT
    assert (job["prompt"], job["negative_prompt"]) == (body["prompt"], body["negative_prompt"])
    assert job["adapters"] == body["adapters"] == COMPOSED_ADAPTERS
    assert (job["status"], job["mode"], job["max_attempts"]) == ("pending", "http", 5)
    assert job["params"] == {"url": HOOK_URL}
    assert api.get(job["id"]) == job
    assert api.queued_ids() == [job["id"]]


def test_compose_without_deliver_queues_nothing(sqlite_api: Api) -> None:
    seed_adapters(sqlite_api)
    response = sqlite_api.client.post("/v1/compose", json={"prefix": "a cat"})
    assert response.status_code == 200, response.text
    assert response.json()["prompt"] == COMPOSED_PROMPT
    assert response.json()["job"] is None
    assert (sqlite_api.count(), sqlite_api.queue.backlog()) == (0, 0)


@pytest.mark.parametrize(
    ("deliver", "expected"),
    [
        (
            {"mode": "http", "params": {"url": "https://evil.example.com/x"}},
            "params.url is not under any DELIVERY_HTTP_ALLOWLIST entry",
        ),
        ({"mode": "sdnext", "params": {"steps": 500}}, "steps must be between 1 and 150"),
        ({"mode": "fax"}, "body.deliver.mode"),
        ({"mode": "cli", "prompt": "x"}, "body.deliver.prompt: Extra inputs are not permitted"),
    ],
    ids=["off-allowlist", "bad-sdnext-param", "unknown-mode", "extra-field"],
)
def test_compose_with_an_invalid_deliver_is_refused_and_queues_nothing(
    shared_api: Api, deliver: dict[str, Any], expected: str
) -> None:
    rows, backlog = shared_api.count(), shared_api.queue.backlog()
    response = shared_api.client.post("/v1/compose", json={"prefix": "a cat", "deliver": deliver})
    assert response.status_code == 422, response.text
    assert expected in detail_text(response)
    assert (shared_api.count(), shared_api.queue.backlog()) == (rows, backlog)


# --- list: filters, sort, pages ---------------------------------------------------------------


def seed_jobs(api: Api) -> dict[str, dict[str, Any]]:
    """Six jobs, one per line below, with distinct times; returns their rows' values by name."""
    table = {
        #     mode      status       rating fav  created started finished (minutes after T0)
        "a": ("http", "pending", None, False, 0, None, None),
        "b": ("cli", "running", None, True, 10, 11, None),
        "c": ("sdnext", "succeeded", 5, True, 20, 21, 25),
        "d": ("http", "failed", 2, False, 30, 31, 32),
        "e": ("http", "cancelled", 4, False, 40, None, 41),
        "f": ("cli", "succeeded", 3, False, 50, 51, 53),
    }
    bodies = {"http": http_job(), "cli": {"mode": "cli", "prompt": "x"}}
    bodies["sdnext"] = {"mode": "sdnext", "prompt": "x"}

    def at(minutes: int | None) -> datetime | None:
        return None if minutes is None else T0 + timedelta(minutes=minutes)

    jobs: dict[str, dict[str, Any]] = {}
    for name, (mode, status, rating, favorite, created, started, finished) in table.items():
        job_id = api.create(bodies[mode])["id"]
        values = {
            "status": status,
            "rating": rating,
            "is_favorite": favorite,
            "created_at": at(created),
            "started_at": at(started),
            "finished_at": at(finished),
        }
        api.set_row(job_id, **values)
        jobs[name] = {"id": job_id, "mode": mode, **values}
    return jobs


def names(jobs: dict[str, dict[str, Any]], ids: list[str]) -> list[str]:
    by_id = {job["id"]: name for name, job in jobs.items()}
    return [by_id[job_id] for job_id in ids]


@dataclass
class Seeded:
    api: Api
    jobs: dict[str, dict[str, Any]]

    def names(self, **query: Any) -> list[str]:
        return names(self.jobs, self.api.ids(**query))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def seeded(
    request: pytest.FixtureRequest,
    templates: MigratedTemplates,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Seeded]:
    """The six jobs of `seed_jobs` on each kind of database, shared by the read-only list tests."""
    folder = tmp_path_factory.mktemp(f"seeded-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'lora.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("pg_server")
        url = server.create_database()
    templates.fill(url, request)
    with open_api(url, folder) as api:
        yield Seeded(api, seed_jobs(api))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, "abcdef"),
        ({"status": "succeeded"}, "cf"),
        ({"status": ["failed", "cancelled"]}, "de"),
        ({"mode": "http"}, "ade"),
        ({"mode": ["cli", "sdnext"]}, "bcf"),
        ({"favorite": "true"}, "bc"),
        ({"favorite": "false"}, "adef"),
        ({"rating": 4}, "e"),
        ({"rating_min": 3}, "cef"),
        ({"rated": "true"}, "cdef"),
        ({"rated": "false"}, "ab"),
        ({"mode": "http", "rating_min": 3}, "e"),
        ({"status": "succeeded", "favorite": "true"}, "c"),
        ({"rated": "false", "rating_min": 1}, ""),
    ],
    ids=lambda value: json.dumps(value) if isinstance(value, dict) else value,
)
def test_list_filters(seeded: Seeded, query: dict[str, Any], expected: str) -> None:
    page = seeded.api.page(sort="created_at", order="asc", **query)
    assert "".join(names(seeded.jobs, [job["id"] for job in page["items"]])) == expected
    assert page["total"] == len(expected)


def expected_order(jobs: dict[str, dict[str, Any]], key: str, descending: bool) -> list[str]:
    """Value order (ties by id, the same direction), then the jobs without a value, by id."""
    valued = [name for name in jobs if jobs[name][key] is not None]
    empty = [name for name in jobs if jobs[name][key] is None]
    valued.sort(key=lambda name: (jobs[name][key], jobs[name]["id"]), reverse=descending)
    empty.sort(key=lambda name: jobs[name]["id"], reverse=descending)
    return valued + empty


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("sort", ["created_at", "started_at", "finished_at", "rating", "status"])
def test_list_sorts_by_each_key_with_nulls_last_either_way(
    seeded: Seeded, sort: str, order: str
) -> None:
    got = seeded.names(sort=sort, order=order)
    assert got == expected_order(seeded.jobs, sort, order == "desc")


def test_list_by_rating_puts_unrated_jobs_last(seeded: Seeded) -> None:
    best_first = seeded.names(sort="rating", order="desc")
    worst_first = seeded.names(sort="rating", order="asc")
    assert best_first[:4] == ["c", "e", "f", "d"] and set(best_first[4:]) == {"a", "b"}
    assert worst_first[:4] == ["d", "f", "e", "c"] and set(worst_first[4:]) == {"a", "b"}


def test_list_defaults_to_newest_first_fifty_a_page(seeded: Seeded) -> None:
    page = seeded.api.page()
    assert (page["total"], page["limit"], page["offset"]) == (6, 50, 0)
    assert names(seeded.jobs, [job["id"] for job in page["items"]]) == list("fedcba")


@pytest.mark.parametrize(("sort", "order"), [("created_at", "asc"), ("rating", "desc")])
def test_pages_never_overlap_even_when_sort_values_tie(api: Api, sort: str, order: str) -> None:
    created = [api.create(http_job(f"job {n}"))["id"] for n in range(7)]
    for n, job_id in enumerate(created):  # one shared time; ratings 5, 5, 5, then unrated
        api.set_row(job_id, created_at=T0, rating=5 if n < 3 else None)
    pages = [api.page(sort=sort, order=order, limit=3, offset=offset) for offset in (0, 3, 6, 9)]
    assert [p["total"] for p in pages] == [7, 7, 7, 7]
    assert [(p["limit"], p["offset"]) for p in pages] == [(3, 0), (3, 3), (3, 6), (3, 9)]
    seen = [job["id"] for p in pages for job in p["items"]]
    assert [len(p["items"]) for p in pages] == [3, 3, 1, 0]
    assert len(seen) == len(set(seen)) == 7 and set(seen) == set(created)
    if sort == "rating":
        assert [job["rating"] for job in pages[0]["items"]] == [5, 5, 5]


@pytest.mark.parametrize(
    "query",
    [
        {"sort": "prompt"},
        {"order": "up"},
        {"limit": 0},
        {"limit": 501},
        {"offset": -1},
        {"rating": 0},
        {"rating": 6},
        {"rating_min": 0},
        {"status": "done"},
        {"mode": "ftp"},
        {"favorite": "maybe"},
        {"rated": "perhaps"},
    ],
    ids=lambda query: "&".join(f"{k}={v}" for k, v in query.items()),
)
def test_list_refuses_bad_query_parameters(shared_api: Api, query: dict[str, Any]) -> None:
    response = shared_api.client.get("/v1/deliveries", params=query)
    assert response.status_code == 422, response.text
    name = next(iter(query))
    assert [error["loc"][:2] for error in response.json()["detail"]] == [["query", name]]


# --- unknown ids ------------------------------------------------------------------------------


JOB_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/v1/deliveries/{id}", None),
    ("POST", "/v1/deliveries/{id}/cancel", None),
    ("POST", "/v1/deliveries/{id}/retry", None),
    ("PUT", "/v1/deliveries/{id}/rating", {"rating": 3}),
    ("PUT", "/v1/deliveries/{id}/favorite", {"favorite": True}),
    ("DELETE", "/v1/deliveries/{id}", None),
    ("GET", "/v1/deliveries/{id}/results/0", None),
]


@pytest.mark.parametrize(("method", "path", "body"), JOB_ROUTES, ids=route_ids(JOB_ROUTES))
def test_an_unknown_job_id_is_404_on_every_route(
    shared_api: Api, method: str, path: str, body: dict[str, Any] | None
) -> None:
    rows = shared_api.count()
    response = shared_api.client.request(method, path.format(id="no-such-job"), json=body)
    assert response.status_code == 404, response.text
    assert response.json()["detail"] == "no delivery job no-such-job"
    assert shared_api.count() == rows


# --- cancel -----------------------------------------------------------------------------------


def test_cancel_pending_cancels_at_once(api: Api) -> None:
    job_id = api.create()["id"]
    response = api.client.post(f"/v1/deliveries/{job_id}/cancel")
    assert response.status_code == 200, response.text
    job = response.json()
    assert (job["status"], job["cancel_requested"]) == ("cancelled", True)
    assert job["finished_at"] is not None
    assert api.get(job_id) == job


def test_a_cancelled_pending_job_never_runs(
    migrated_sqlite_url: str, tmp_path: Path, webhook: WebhookServer
) -> None:
    with open_api(migrated_sqlite_url, tmp_path, delivery_http_allowlist=[webhook.url]) as api:
        body = http_job(params={"url": f"{webhook.url}/hook"})
        cancelled, kept = api.create(body)["id"], api.create(body)["id"]
        assert api.client.post(f"/v1/deliveries/{cancelled}/cancel").status_code == 200
        assert api.queued_ids() == [cancelled, kept]  # the message stays; the row decides

        with job_runner(api) as runner:
            runner.run(cancelled)  # what a worker does with the id it takes off the queue
            assert webhook.requests == []
            after = api.get(cancelled)
            assert (after["status"], after["attempts"], after["started_at"]) == (
                "cancelled",
                0,
                None,
            )

            runner.run(kept)  # the same runner does deliver a job that was not cancelled
            assert [request.json()["job_id"] for request in webhook.requests] == [kept]
            assert api.get(kept)["status"] == "succeeded"


def test_cancel_running_asks_the_worker_and_leaves_it_running(api: Api) -> None:
    job_id = api.create()["id"]
    api.mark_running(job_id)
    response = api.client.post(f"/v1/deliveries/{job_id}/cancel")
    assert response.status_code == 200, response.text
    job = response.json()
    assert (job["status"], job["cancel_requested"], job["finished_at"]) == ("running", True, None)
    row = api.row(job_id)
    assert row is not None and row.lease_owner == "worker-1:4242:abcd" and row.cancel_requested


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_cancel_a_finished_job_is_409_and_changes_nothing(api: Api, status: str) -> None:
    job_id = api.create()["id"]
    api.set_row(job_id, status=status, finished_at=T0)
    before = api.get(job_id)
    response = api.client.post(f"/v1/deliveries/{job_id}/cancel")
    assert response.status_code == 409, response.text
    assert response.json()["detail"] == f"job {job_id} already {status}"
    assert api.get(job_id) == before


# --- retry ------------------------------------------------------------------------------------


def test_retry_a_failed_job_makes_it_pending_with_fresh_attempts(api: Api) -> None:
    job_id = api.create(max_attempts=4)["id"]
    api.set_row(
        job_id,
        status="failed",
        attempts=4,
        started_at=T0,
        finished_at=T0 + timedelta(minutes=1),
        last_error="webhook answered HTTP 500",
        result=json.dumps({"status_code": 500}),
        progress=0.5,
    )
    backlog = api.queue.backlog()
    response = api.client.post(f"/v1/deliveries/{job_id}/retry")
    assert response.status_code == 200, response.text
    job = response.json()
    assert (job["status"], job["attempts"], job["max_attempts"]) == ("pending", 0, 4)
    assert (job["started_at"], job["finished_at"], job["result"], job["progress"]) == (
        None,
        None,
        None,
        None,
    )
    assert job["cancel_requested"] is False
    assert api.get(job_id) == job
    assert api.queue.backlog() == backlog + 1
    assert api.queued_ids().count(job_id) == 2  # created, then retried


def test_retry_a_cancelled_job_runs_it_after_all(
    migrated_sqlite_url: str, tmp_path: Path, webhook: WebhookServer
) -> None:
    with open_api(migrated_sqlite_url, tmp_path, delivery_http_allowlist=[webhook.url]) as api:
        job_id = api.create(http_job(params={"url": f"{webhook.url}/hook"}))["id"]
        assert api.client.post(f"/v1/deliveries/{job_id}/cancel").status_code == 200
        response = api.client.post(f"/v1/deliveries/{job_id}/retry")
        assert response.status_code == 200, response.text
        assert (response.json()["status"], response.json()["cancel_requested"]) == (
            "pending",
            False,
        )
        with job_runner(api) as runner:
            runner.run(job_id)
        assert [request.json()["job_id"] for request in webhook.requests] == [job_id]
        assert api.get(job_id)["status"] == "succeeded"


@pytest.mark.parametrize("status", ["pending", "running", "succeeded"])
def test_retry_a_job_that_did_not_fail_is_409(api: Api, status: str) -> None:
    job_id = api.create()["id"]
    if status == "running":
        api.mark_running(job_id)
    elif status == "succeeded":
        api.write_result(job_id, [f"{job_id}/00.png"])
    before, backlog = api.get(job_id), api.queue.backlog()
    response = api.client.post(f"/v1/deliveries/{job_id}/retry")
    assert response.status_code == 409, response.text
    assert response.json()["detail"] == (
        f"only failed or cancelled jobs are retried; job {job_id} is {status}"
    )
    assert api.get(job_id) == before
    assert api.queue.backlog() == backlog


# --- rating and favourite ---------------------------------------------------------------------


def test_rating_is_set_and_cleared_with_its_time(api: Api) -> None:
    job_id = api.create()["id"]
    for edge in (1, 5):
        response = api.client.put(f"/v1/deliveries/{job_id}/rating", json={"rating": edge})
        assert (response.status_code, response.json()["rating"]) == (200, edge)
    before = utcnow()
    rated = api.client.put(f"/v1/deliveries/{job_id}/rating", json={"rating": 4})
    assert rated.status_code == 200, rated.text
    assert rated.json()["rating"] == 4
    rated_at = when(rated.json()["rating_updated_at"])
    assert rated_at is not None and before <= rated_at <= utcnow()
    assert api.get(job_id)["rating"] == 4

    cleared = api.client.put(f"/v1/deliveries/{job_id}/rating", json={"rating": None})
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["rating"] is None
    cleared_at = when(cleared.json()["rating_updated_at"])
    assert cleared_at is not None and cleared_at >= rated_at
    stored = api.get(job_id)
    assert stored["rating"] is None and when(stored["rating_updated_at"]) == cleared_at


def test_favorite_is_set_and_unset_with_its_time(api: Api) -> None:
    job_id = api.create()["id"]
    assert api.get(job_id)["favorite_updated_at"] is None
    before = utcnow()
    starred = api.client.put(f"/v1/deliveries/{job_id}/favorite", json={"favorite": True})
    assert starred.status_code == 200, starred.text
    assert starred.json()["is_favorite"] is True
    starred_at = when(starred.json()["favorite_updated_at"])
    assert starred_at is not None and before <= starred_at <= utcnow()
    assert api.ids(favorite="true") == [job_id]

    unstarred = api.client.put(f"/v1/deliveries/{job_id}/favorite", json={"favorite": False})
    assert unstarred.status_code == 200, unstarred.text
    assert unstarred.json()["is_favorite"] is False
    unstarred_at = when(unstarred.json()["favorite_updated_at"])
    assert unstarred_at is not None and unstarred_at >= starred_at
    assert api.get(job_id)["is_favorite"] is False
    assert api.ids(favorite="true") == []


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("rating", {"rating": 0}),
        ("rating", {"rating": 6}),
        ("rating", {"rating": 2.5}),
        ("rating", {"rating": "great"}),
        ("rating", {}),
        ("rating", {"rating": 3, "note": "nice"}),
        ("favorite", {"favorite": "maybe"}),
        ("favorite", {}),
        ("favorite", {"favorite": True, "why": "nice"}),
    ],
    ids=lambda value: json.dumps(value) if isinstance(value, dict) else value,
)
def test_bad_rating_or_favorite_is_422_and_changes_nothing(
    shared_api: Api, route: str, body: dict[str, Any]
) -> None:
    job_id = shared_api.create()["id"]
    before = shared_api.get(job_id)
    response = shared_api.client.put(f"/v1/deliveries/{job_id}/{route}", json=body)
    assert response.status_code == 422, response.text
    assert detail_text(response).startswith("body")
    assert shared_api.get(job_id) == before


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/v1/deliveries/{id}/rating", {"rating": True}),
        ("POST", "/v1/deliveries", http_job(max_attempts=True)),
    ],
    ids=["rating-true", "max_attempts-true"],
)
def test_a_boolean_is_not_a_number(
    shared_api: Api, method: str, path: str, body: dict[str, Any]
) -> None:
    # JSON true must not pass for the integer 1.
    job_id = shared_api.create()["id"]
    response = shared_api.client.request(method, path.format(id=job_id), json=body)
    assert response.status_code == 422, response.text


# --- results and delete -----------------------------------------------------------------------


def test_results_serve_the_images_of_a_succeeded_job(sqlite_api: Api) -> None:
    job_id = sqlite_api.create({"mode": "sdnext", "prompt": "a fox"})["id"]
    sqlite_api.write_result(job_id, [f"{job_id}/00.png", f"{job_id}/01.png"])  # 01 not on disk
    job = sqlite_api.get(job_id)
    assert job["images"] == [f"/v1/deliveries/{job_id}/results/{n}" for n in (0, 1)]

    first = sqlite_api.client.get(job["images"][0])
    assert first.status_code == 200
    assert first.headers["content-type"] == "image/png" and first.content == PNG

    gone = sqlite_api.client.get(job["images"][1])
    assert gone.status_code == 404
    assert gone.json()["detail"] == f"image 1 of job {job_id} is no longer on disk"
    beyond = sqlite_api.client.get(f"/v1/deliveries/{job_id}/results/2")
    assert beyond.status_code == 404
    assert beyond.json()["detail"] == f"job {job_id} has 2 image(s); no image 2"
    assert sqlite_api.client.get(f"/v1/deliveries/{job_id}/results/-1").status_code == 422


def test_results_of_a_job_without_images_are_404(sqlite_api: Api) -> None:
    job_id = sqlite_api.create()["id"]
    response = sqlite_api.client.get(f"/v1/deliveries/{job_id}/results/0")
    assert response.status_code == 404
    assert response.json()["detail"] == f"job {job_id} has 0 image(s); no image 0"


def test_results_never_serve_a_file_outside_results_dir(sqlite_api: Api) -> None:
    secret = Path(sqlite_api.settings.results_dir).parent / "secret.png"
    secret.write_bytes(PNG)
    job_id = sqlite_api.create()["id"]
    link = f"{job_id}/01.png"  # inside by name, outside once resolved
    sqlite_api.write_result(job_id, [f"{job_id}/00.png", "../secret.png", str(secret), link])
    (Path(sqlite_api.settings.results_dir) / link).symlink_to(secret)
    assert sqlite_api.client.get(f"/v1/deliveries/{job_id}/results/0").status_code == 200
    for index in (1, 2, 3):
        response = sqlite_api.client.get(f"/v1/deliveries/{job_id}/results/{index}")
        assert response.status_code == 404, response.text


def test_delete_removes_the_job_and_its_images_only(api: Api) -> None:
    results = Path(api.settings.results_dir)
    done, other = api.create()["id"], api.create()["id"]
    api.write_result(done, [f"{done}/00.png"])
    api.write_result(other, [f"{other}/00.png"])
    response = api.client.delete(f"/v1/deliveries/{done}")
    assert response.status_code == 204 and response.content == b""
    assert api.row(done) is None
    assert not (results / done).exists()
    assert (results / other / "00.png").read_bytes() == PNG
    assert api.client.get(f"/v1/deliveries/{done}").status_code == 404
    assert api.client.get(f"/v1/deliveries/{done}/results/0").status_code == 404
    assert api.client.delete(f"/v1/deliveries/{done}").status_code == 404
    assert api.ids() == [other]


@pytest.mark.parametrize("status", ["pending", "failed", "cancelled"])
def test_delete_a_job_that_is_not_running(api: Api, status: str) -> None:
    job_id = api.create()["id"]
    api.set_row(job_id, status=status)
    assert api.client.delete(f"/v1/deliveries/{job_id}").status_code == 204
    assert api.row(job_id) is None


def test_delete_a_running_job_is_409_and_keeps_it_and_its_images(api: Api) -> None:
    job_id = api.create()["id"]
    folder = Path(api.settings.results_dir) / job_id
    folder.mkdir(parents=True)
    (folder / "00.png").write_bytes(PNG)
    api.mark_running(job_id)
    response = api.client.delete(f"/v1/deliveries/{job_id}")
    assert response.status_code == 409, response.text
    assert response.json()["detail"] == f"job {job_id} is running; cancel it first"
    assert api.get(job_id)["status"] == "running"
    assert (folder / "00.png").is_file()


# --- auth -------------------------------------------------------------------------------------

PROTECTED: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/v1/deliveries", http_job()),
    ("GET", "/v1/deliveries", None),
    *JOB_ROUTES,
    ("POST", "/v1/compose", {"prefix": "a cat", "deliver": {"mode": "cli"}}),
]


@pytest.fixture(scope="module")
def keyed_api(
    templates: MigratedTemplates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    with module_api(templates, tmp_path_factory, "keyed", api_key=API_KEY) as opened:
        yield opened


@pytest.mark.parametrize("key", [None, "wrong-key"], ids=["no-key", "wrong-key"])
@pytest.mark.parametrize(("method", "path", "body"), PROTECTED, ids=route_ids(PROTECTED))
def test_every_delivery_route_needs_the_api_key(
    keyed_api: Api, key: str | None, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = keyed_api.client.post(
        "/v1/deliveries", json=http_job(), headers={"X-API-Key": API_KEY}
    )
    assert response.status_code == 201, response.text
    job = response.json()
    rows, backlog = keyed_api.count(), keyed_api.queue.backlog()
    headers = {"X-API-Key": key} if key is not None else {}
    refused = keyed_api.client.request(
        method, path.format(id=job["id"]), json=body, headers=headers
    )
    assert refused.status_code == 401, refused.text
    assert refused.json()["detail"] == "invalid or missing API key (X-API-Key header)"
    assert refused.headers["www-authenticate"] == "APIKey"
    assert (keyed_api.count(), keyed_api.queue.backlog()) == (rows, backlog)
    allowed = keyed_api.client.get(f"/v1/deliveries/{job['id']}", headers={"X-API-Key": API_KEY})
    assert allowed.status_code == 200 and allowed.json() == job  # untouched
