"""No input gives a 5xx, on SQLite and PostgreSQL: NUL and lone surrogates anywhere, NaN and
Infinity, integers past the columns, bounded 422s, compose weights, adapters deleted under a
recommendation or an embedding run, a database that refuses writes (503), and timestamps
that carry their UTC offset."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select
from sqlalchemy.engine import make_url

from lora_manager.api import create_app
from lora_manager.core.config import Settings
from lora_manager.core.db import make_engine, make_session_factory
from lora_manager.core.models import Adapter, EmbeddingRun, LoraEmbedding
from lora_manager.ingest.service import Importer
from lora_manager.recommendations.embedders import make_embedder
from lora_manager.recommendations.embedding import embed_adapters, run_embedding
from lora_manager.recommendations.service import start_run
from tests.support.apps import app_settings
from tests.support.library import kohya_metadata, write_safetensors
from tests.support.postgres import PostgresServer

KEY = "hardening-key"
STEMS = ["ink-wash", "neon-city", "soft-light"]
# A webhook prefix on loopback that nothing listens to: jobs are accepted, never delivered.
HOOK = "http://127.0.0.1:9/hook"


# Databases are copies of the module's `templates`, in an environment without settings.
pytestmark = pytest.mark.usefixtures("clean_environment")


@dataclass
class Api:
    client: TestClient
    settings: Settings
    ids: dict[str, str]  # file stem -> adapter id

    def call(self, method: str, path: str, expect: int, **kwargs: Any) -> Any:
        response = self.client.request(method, path, **kwargs)
        assert response.status_code == expect, f"{method} {path}: {response.text[:500]}"
        return response.json() if response.content else None

    def raw(self, method: str, path: str, body: str) -> Any:
        """Send `body` as it is (escapes such as \\ud800 and NaN reach the JSON parser)."""
        headers = {"content-type": "application/json"}
        return self.client.request(method, path, content=body.encode(), headers=headers)


def build_library(url: str, folder: Path) -> Settings:
    root = folder / "loras"
    for seed, stem in enumerate(STEMS):
        write_safetensors(root / f"{stem}.safetensors", kohya_metadata(seed=seed), seed=seed)
    settings = app_settings(
        url,
        folder,
        lora_roots=[str(root)],
        recommendation_index_check=0,
        schema_check_interval=0,
        api_key=KEY,
        delivery_http_allowlist=[HOOK],
    )
    engine = make_engine(settings)
    try:
        summary = Importer(settings, make_session_factory(engine)).run([root])
        assert summary.failed == 0, summary.failures
        embed_adapters(make_session_factory(engine), make_embedder("light"))
    finally:
        engine.dispose()
    return settings


@contextmanager
def open_api(settings: Settings, on_engine: Any = None) -> Iterator[Api]:
    app = create_app(settings, migrate_on_startup=False)
    if on_engine is not None:
        on_engine(app.state.engine)
    with TestClient(app, headers={"X-API-Key": KEY}) as client:
        items = client.get("/v1/adapters").json()["items"]
        ids = {Path(item["file_path"]).stem: item["id"] for item in items}
        assert sorted(ids) == sorted(STEMS)
        yield Api(client, settings, ids)


@pytest.fixture
def library(migrated_db_url: str, tmp_path: Path) -> Settings:
    return build_library(migrated_db_url, tmp_path)


@pytest.fixture
def api(library: Settings) -> Iterator[Api]:
    with open_api(library) as opened:
        yield opened


# --- NUL and lone surrogates: one validator for every string ---------------------------------


def _nul_requests(adapter_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    nul = "a\x00b"
    return [
        ("PATCH", f"/v1/adapters/{adapter_id}", {"json": {"notes": nul}}),
        ("PATCH", f"/v1/adapters/{adapter_id}", {"json": {"user_tags": ["ok", nul]}}),
        ("POST", "/v1/adapters", {"json": {"path": f"/loras/{nul}.safetensors"}}),
        ("POST", "/v1/adapters/bulk", {"json": {"ids": [nul], "action": "delete"}}),
        (
            "POST",
            "/v1/adapters/bulk",
            {"json": {"ids": [adapter_id], "action": "tag", "tags": [nul]}},
        ),
        ("POST", "/v1/compose", {"json": {"prefix": nul}}),
        ("POST", "/v1/compose", {"json": {"weights": {nul: 1}}}),
        (
            "POST",
            "/v1/deliveries",
            {"json": {"mode": "http", "prompt": nul, "params": {"url": HOOK}}},
        ),
        (
            "POST",
            "/v1/deliveries",
            {
                "json": {
                    "mode": "http",
                    "prompt": "a cat",
                    "params": {"url": HOOK, "data": {"k": [nul]}},
                }
            },
        ),
        ("POST", "/v1/recommendations/for-prompt", {"json": {"prompt": nul}}),
        (
            "PUT",
            "/v1/recommendations/preferences",
            {"json": {"preferences": [{"type": "tag", "value": nul}]}},
        ),
        (
            "POST",
            "/v1/recommendations/feedback",
            {"json": {"session_id": nul, "adapter_id": adapter_id, "feedback": "used"}},
        ),
        ("POST", "/v1/recommendations/embeddings/recompute", {"json": {"adapter_ids": [nul]}}),
        ("POST", "/v1/imports", {"json": {"paths": [nul]}}),
        ("GET", "/v1/adapters/a%00b", {}),
        ("GET", "/v1/adapters", {"params": {"q": nul}}),
        ("GET", "/v1/adapters", {"params": {"tag": nul}}),
        ("GET", "/v1/recommendations/by-trigger", {"params": {"q": nul}}),
        ("GET", f"/v1/recommendations/similar/{adapter_id}", {"params": {"exclude": nul}}),
        ("GET", "/v1/deliveries/x%00", {}),
        ("GET", "/v1/imports/%00", {}),
    ]


def test_nul_anywhere_is_422_and_nothing_is_stored(api: Api) -> None:
    adapter_id = api.ids["ink-wash"]
    for method, path, kwargs in _nul_requests(adapter_id):
        response = api.client.request(method, path, **kwargs)
        assert response.status_code == 422, f"{method} {path} {kwargs}: {response.text[:300]}"
        assert "NUL" in json.dumps(response.json()), response.text
    # A NUL prompt is refused at the API, so no job that would fail later was queued (on
    # SQLite it used to be accepted with 201), while the same request without NUL is queued.
    assert api.call("GET", "/v1/deliveries", 200)["total"] == 0
    job = {"mode": "http", "prompt": "a cat", "params": {"url": HOOK}}
    api.call("POST", "/v1/deliveries", 201, json=job)
    adapter = api.call("GET", f"/v1/adapters/{adapter_id}", 200)
    assert adapter["notes"] is None and adapter["user_tags"] is None


def test_invalid_unicode_is_422(api: Api) -> None:
    adapter_id = api.ids["ink-wash"]
    for body in ('{"notes": "a\\ud800b"}', '{"user_tags": ["\\udfff"]}'):
        response = api.raw("PATCH", f"/v1/adapters/{adapter_id}", body)
        assert response.status_code == 422, response.text
        assert "surrogate" in response.text
        assert response.json()["detail"][0]["input"].startswith(("a\\ud800", "["))
    for path in ("/v1/adapters/%ED%A0%80", "/v1/adapters?q=%ff", "/v1/adapters/%C3"):
        response = api.client.get(path)
        assert response.status_code == 422, f"{path}: {response.text}"
    # A body that is not UTF-8 at all: 422 (documented), not FastAPI's 400.
    broken = api.client.request(
        "PATCH",
        f"/v1/adapters/{adapter_id}",
        content=b'{"notes": "\xff\xfe"}',
        headers={"content-type": "application/json"},
    )
    assert broken.status_code == 422, broken.text
    assert broken.json()["detail"][0]["type"] == "json_invalid"
    assert api.call("GET", f"/v1/adapters/{adapter_id}", 200)["notes"] is None


# --- numbers: finite, and within the columns ------------------------------------------------


def test_nan_and_infinity_are_422(api: Api) -> None:
    adapter_id = api.ids["ink-wash"]
    for literal in ("NaN", "Infinity", "-Infinity", "1e999"):
        for method, path, body in [
            ("PATCH", f"/v1/adapters/{adapter_id}", f'{{"weight": {literal}}}'),
            ("POST", f"/v1/adapters/{adapter_id}/activate", f'{{"weight": {literal}}}'),
            ("POST", "/v1/compose", f'{{"weights": {{"{adapter_id}": {literal}}}}}'),
            (
                "PUT",
                "/v1/recommendations/preferences",
                f'{{"preferences": [{{"type": "tag", "value": "ink", "weight": {literal}}}]}}',
            ),
            (
                "POST",
                "/v1/deliveries",
                f'{{"mode": "http", "prompt": "a", "params": {{"url": "{HOOK}", '
                f'"data": {{"n": {literal}}}}}}}',
            ),
        ]:
            response = api.raw(method, path, body)
            assert response.status_code == 422, f"{method} {path} {body}: {response.text}"
            json.loads(response.text)  # valid JSON: no bare NaN echoed back
    for value in ("nan", "inf", "-inf"):
        response = api.client.get(f"/v1/recommendations/similar/{adapter_id}?min_score={value}")
        assert response.status_code == 422, response.text
    assert api.call("GET", f"/v1/adapters/{adapter_id}", 200)["weight"] == 1.0
    assert api.call("GET", "/v1/deliveries", 200)["total"] == 0


def test_integers_stay_within_the_columns(api: Api) -> None:
    adapter_id = api.ids["ink-wash"]
    path = f"/v1/adapters/{adapter_id}"
    for too_big in (2**31, 2**63, 10**30):
        api.call("PATCH", path, 422, json={"ordinal": too_big})
        api.call("POST", f"{path}/activate", 422, json={"ordinal": too_big})
    for wrong in ("3", True, 2.5, -1):
        api.call("PATCH", path, 422, json={"ordinal": wrong})
    assert api.call("PATCH", path, 200, json={"ordinal": 2**31 - 1})["ordinal"] == 2**31 - 1
    assert api.call("PATCH", path, 200, json={"ordinal": 7.0, "rating": 3.0})["rating"] == 3
    assert api.call("GET", path, 200)["ordinal"] == 7
    job = {"mode": "http", "prompt": "a", "params": {"url": HOOK}, "max_attempts": 2**31}
    api.call("POST", "/v1/deliveries", 422, json=job)
    api.call("POST", "/v1/recommendations/for-prompt", 422, json={"prompt": "a", "limit": 2**63})
    api.call("GET", "/v1/adapters", 422, params={"offset": 2**63})
    api.call("GET", "/v1/deliveries/x/results/99999999999", 422)
    # Booleans are JSON booleans: 0 and "yes" are not coerced.
    api.call("PATCH", path, 422, json={"is_favorite": 0})
    api.call("PUT", f"{path}/favorite", 422, json={"favorite": "yes"})
    schema = api.client.get("/openapi.json").json()["components"]["schemas"]
    ordinal = schema["AdapterPatch"]["properties"]["ordinal"]["anyOf"][0]
    assert (ordinal["minimum"], ordinal["maximum"]) == (0, 2**31 - 1)


def test_compose_weights_are_finite_bounded_and_never_negative_zero(api: Api) -> None:
    adapter_id = api.ids["ink-wash"]
    for weight in ("NaN", "1e309", "1" + "0" * 308, "5.5", "-6", '"0.5"'):
        body = f'{{"adapter_ids": ["{adapter_id}"], "weights": {{"{adapter_id}": {weight}}}}}'
        response = api.raw("POST", "/v1/compose", body)
        assert response.status_code == 422, f"{weight}: {response.text}"
    for zero in ("-0", "-0.0", "-0.001"):
        body = f'{{"adapter_ids": ["{adapter_id}"], "weights": {{"{adapter_id}": {zero}}}}}'
        response = api.raw("POST", "/v1/compose", body)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert "<lora:ink-wash:0>" in answer["prompt"], answer["prompt"]
        assert "-0" not in answer["prompt"]
        if zero != "-0.001":
            assert json.dumps(answer["adapters"][0]["weight"]) == "0.0"
    answer = api.call(
        "POST", "/v1/compose", 200, json={"adapter_ids": [adapter_id], "weights": {adapter_id: -5}}
    )
    assert "<lora:ink-wash:-5>" in answer["prompt"]


# --- 422s are bounded and always JSON --------------------------------------------------------


def test_validation_errors_repeat_little_of_the_input(api: Api) -> None:
    huge = "x" * 900_000
    response = api.client.post("/v1/recommendations/for-prompt", json={"prompt": huge})
    assert response.status_code == 422
    assert len(response.content) < 2_000, len(response.content)
    echoed = response.json()["detail"][0]["input"]
    assert echoed.startswith("xxx") and len(echoed) <= 101
    many = [{"type": "tag", "value": f"v{n}", "weight": "heavy"} for n in range(500)]
    response = api.client.put("/v1/recommendations/preferences", json={"preferences": many})
    assert response.status_code == 422
    assert len(response.json()["detail"]) == 50


# --- adapters deleted under a recommendation or an embedding run -----------------------------


def test_feedback_on_an_adapter_deleted_after_it_was_suggested_is_404(api: Api) -> None:
    adapter_id = api.ids["ink-wash"]
    answer = api.call(
        "GET",
        f"/v1/recommendations/similar/{adapter_id}",
        200,
        params={"min_score": -1, "same_base_model": False},
    )
    suggested = [item["adapter_id"] for item in answer["items"]]
    assert suggested, answer
    gone, kept = suggested[0], suggested[-1]
    api.call("DELETE", f"/v1/adapters/{gone}", 204)
    feedback = {"session_id": answer["session_id"], "adapter_id": gone, "feedback": "positive"}
    response = api.client.post("/v1/recommendations/feedback", json=feedback)
    assert response.status_code == 404, response.text
    assert "no longer exists" in response.json()["detail"]
    if kept != gone:
        feedback["adapter_id"] = kept
        api.call("POST", "/v1/recommendations/feedback", 201, json=feedback)


class DeletingEmbedder:
    """The light embedder, deleting an adapter the first time it is asked to encode: the
    adapter is gone between the run reading its batch and storing the vectors."""

    def __init__(self, settings: Settings, victim: str) -> None:
        self.inner = make_embedder("light")
        self.name, self.dim = self.inner.name, self.inner.dim
        self.settings = settings
        self.victim: str | None = victim

    def encode(self, texts: Sequence[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        if self.victim is not None:
            engine = make_engine(self.settings)
            with make_session_factory(engine)() as session:
                adapter = session.get(Adapter, self.victim)
                assert adapter is not None
                session.delete(adapter)
                session.commit()
            engine.dispose()
            self.victim = None
        return self.inner.encode(texts)


@pytest.mark.parametrize("stored", [False, True], ids=["new-vectors", "recomputed-vectors"])
def test_an_embedding_run_skips_an_adapter_deleted_mid_run(
    library: Settings, stored: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lora_manager.recommendations.embedding")
    engine = make_engine(library)
    sessions = make_session_factory(engine)
    try:
        with sessions() as session:
            if not stored:  # no vector yet: the run INSERTs (the foreign key fails)
                for row in session.scalars(select(LoraEmbedding)):
                    session.delete(row)
                session.commit()
            ids = sorted(session.scalars(select(Adapter.id)))
            # force: the stored vectors are UPDATEd (the deleted one's row is gone: stale)
            run = start_run(session, make_embedder("light").name, None, force=True)
        victim = ids[1]
        run_embedding(sessions, DeletingEmbedder(library, victim), run.id)
        with sessions() as session:
            finished = session.get(EmbeddingRun, run.id)
            assert finished is not None
            assert (finished.status, finished.error) == ("succeeded", None)
            assert finished.done == len(ids) - 1
            vectors = sorted(session.scalars(select(LoraEmbedding.adapter_id)))
            assert vectors == [i for i in ids if i != victim]
        # The deletion did hit the batch being stored (not merely an earlier read).
        assert "an adapter was deleted during embedding" in caplog.text
    finally:
        engine.dispose()


# --- a database that refuses writes ----------------------------------------------------------


def _read_only_sqlite(engine: Any) -> None:
    # Root ignores file modes, so chmod cannot make the file read-only here: the connection is.
    @event.listens_for(engine, "connect")
    def _query_only(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.execute("PRAGMA query_only = ON")


def test_writes_refused_by_the_database_answer_503_with_the_reason(
    library: Settings, request: pytest.FixtureRequest
) -> None:
    target = make_url(library.database_url)
    if target.get_backend_name() == "sqlite":
        on_engine: Any = _read_only_sqlite
        reason = "readonly"
    else:
        server: PostgresServer = request.getfixturevalue("pg_server")
        with psycopg.connect(
            f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres", autocommit=True
        ) as admin:
            admin.execute(
                f'ALTER DATABASE "{target.database}" SET default_transaction_read_only = on'
            )
        on_engine, reason = None, "read-only transaction"
    with open_api(library, on_engine) as api:
        adapter_id = api.ids["ink-wash"]
        for method, path, body in [
            ("PATCH", f"/v1/adapters/{adapter_id}", {"notes": "kept?"}),
            ("PUT", f"/v1/adapters/{adapter_id}/rating", {"rating": 4}),
            (
                "PUT",
                "/v1/recommendations/preferences",
                {"preferences": [{"type": "tag", "value": "ink"}]},
            ),
            ("DELETE", f"/v1/adapters/{adapter_id}", None),
        ]:
            response = api.client.request(method, path, json=body)
            assert response.status_code == 503, f"{method} {path}: {response.text}"
            answer = response.json()
            assert answer["reason"] == "database read-only"
            assert reason in answer["detail"]
        assert api.call("GET", f"/v1/adapters/{adapter_id}", 200)["notes"] is None


def _pg_lock_timeout(engine: Any) -> None:
    # The app sets no lock_timeout of its own; a short one makes the held lock fail fast here.
    @event.listens_for(engine, "connect")
    def _short_lock_wait(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.execute("SET lock_timeout = '300ms'")
        dbapi_connection.commit()


@contextmanager
def _held_write_lock(settings: Settings) -> Iterator[None]:
    """Another client holds the database's (SQLite) or the adapter table's (PostgreSQL)
    write lock."""
    target = make_url(settings.database_url)
    if target.get_backend_name() == "sqlite":
        import sqlite3

        holder = sqlite3.connect(str(target.database), isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
    else:
        pg = psycopg.connect(
            f"host={target.host} port={target.port} user={target.username} dbname={target.database}"
        )
        pg.execute("LOCK TABLE adapter IN ACCESS EXCLUSIVE MODE")
        holder = pg  # type: ignore[assignment]
    try:
        yield
    finally:
        holder.rollback()
        holder.close()


def test_a_database_too_busy_to_write_answers_503_with_retry_after(library: Settings) -> None:
    postgres = not library.is_sqlite
    with open_api(library, _pg_lock_timeout if postgres else None) as api:
        adapter_id = api.ids["ink-wash"]
        with _held_write_lock(library):
            # SQLite waits its busy timeout (5 s), PostgreSQL its lock_timeout, then gives up.
            response = api.client.patch(f"/v1/adapters/{adapter_id}", json={"notes": "later"})
        assert response.status_code == 503, response.text
        assert response.json()["reason"] == "database busy"
        assert response.headers["retry-after"] == "1"
        # Once the lock is gone the same write goes through.
        assert api.call("PATCH", f"/v1/adapters/{adapter_id}", 200, json={"notes": "later"})


def test_registering_a_file_while_an_import_runs_is_409_not_a_hung_request(api: Api) -> None:
    newcomer = Path(api.settings.lora_roots[0]) / "late.safetensors"
    write_safetensors(newcomer, kohya_metadata(seed=9), seed=9)
    engine = make_engine(api.settings)
    try:
        # The lock a running import holds (a file lock on SQLite, an advisory lock on PostgreSQL).
        with Importer(api.settings, make_session_factory(engine)).lock():
            busy = api.client.post("/v1/adapters", json={"path": str(newcomer)})
        assert busy.status_code == 409, busy.text
        assert "import is under way" in busy.json()["detail"]
        registered = api.call("POST", "/v1/adapters", 201, json={"path": str(newcomer)})
        assert Path(registered["file_path"]).name == "late.safetensors"
    finally:
        engine.dispose()


# --- timestamps carry their offset -----------------------------------------------------------


def _utc(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0), value
    return parsed


def test_every_timestamp_is_utc_with_an_offset(api: Api) -> None:
    adapter_id = api.ids["ink-wash"]
    adapter = api.call("PUT", f"/v1/adapters/{adapter_id}/rating", 200, json={"rating": 4})
    api.call("PUT", f"/v1/adapters/{adapter_id}/favorite", 200, json={"favorite": True})
    adapter = api.call("GET", f"/v1/adapters/{adapter_id}", 200)
    for name in ("created_at", "updated_at", "rating_updated_at", "favorite_updated_at"):
        _utc(adapter[name])
    assert abs(_utc(adapter["created_at"]) - datetime.now().astimezone()) < timedelta(hours=1)
    preference = {"type": "tag", "value": "ink", "weight": 0.5}
    saved = api.call(
        "PUT", "/v1/recommendations/preferences", 200, json={"preferences": [preference]}
    )
    _utc(saved[0]["updated_at"])
    _utc(api.call("POST", "/v1/recommendations/embeddings/recompute", 202, json={})["created_at"])
    job = api.call(
        "POST", "/v1/deliveries", 201, json={"mode": "http", "prompt": "a", "params": {"url": HOOK}}
    )
    _utc(job["created_at"])
    _utc(api.call("GET", "/v1/deliveries", 200)["items"][0]["created_at"])
    imported = api.call("POST", "/v1/imports", 202, json={"dry_run": True})
    _utc(imported["created_at"])
    _utc(api.call("GET", "/v1/imports", 200)[0]["created_at"])


# --- Allow lists every method of the path -----------------------------------------------------


def test_405_allow_names_every_method_of_the_path(api: Api) -> None:
    expected = {
        "/v1/adapters": "GET, POST",
        "/v1/adapters/x": "DELETE, GET, PATCH",
        "/v1/adapters/tags": "GET",
        "/v1/recommendations/preferences": "GET, PUT",
    }
    for path, allow in expected.items():
        response = api.client.request("OPTIONS", path)
        assert response.status_code == 405
        assert response.headers["allow"] == allow, path
