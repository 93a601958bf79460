"""The API's start-up, readiness, schema gate, auth and error shapes."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from lora_manager.api import create_app
from lora_manager.core.config import load_settings
from lora_manager.core.migrations import head_revisions
from tests.support.migrate import migrate, runner_for
from tests.support.postgres import free_port

HEAD = head_revisions()[0]


def client_for(url: str, **settings: object) -> TestClient:
    app = create_app(load_settings(database_url=url, **settings), migrate_on_startup=False)
    return TestClient(app)


def test_live_answers_even_when_the_database_is_down() -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/lora"
    with client_for(url) as client:
        assert client.get("/health/live").status_code == 200
        ready = client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json() == {"status": "not ready", "reason": "database unreachable"}
        data = client.get("/v1/adapters")
        assert data.status_code == 503
        assert data.json()["detail"] == "database unreachable"


def test_ready_is_503_while_behind_and_200_at_head(db_url: str) -> None:
    migrate(db_url, "f0a1b2c3d4e5")
    with client_for(db_url, schema_check_interval=0) as client:
        for path in ("/health/ready", "/health"):
            response = client.get(path)
            assert response.status_code == 503
            assert response.json()["reason"] == f"schema behind: at f0a1b2c3d4e5, head is {HEAD}"
        adapters = client.get("/v1/adapters")
        assert adapters.status_code == 503
        assert adapters.json() == {
            "detail": f"schema behind: at f0a1b2c3d4e5, head is {HEAD}",
            "reason": "schema behind",
        }
        migrate(db_url)
        ready = client.get("/health/ready")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "revision": HEAD}
        assert client.get("/v1/adapters").json() == {
            "total": 0,
            "limit": 50,
            "offset": 0,
            "items": [],
        }


def test_empty_database_is_behind_not_a_sql_error(sqlite_url: str) -> None:
    with client_for(sqlite_url) as client:
        response = client.get("/v1/adapters")
        assert response.status_code == 503
        assert response.json()["detail"] == f"schema behind: at base (empty), head is {HEAD}"


def test_startup_migrates_when_asked(db_url: str) -> None:
    app = create_app(load_settings(database_url=db_url), migrate_on_startup=True)
    with TestClient(app) as client:
        assert client.get("/health/ready").status_code == 200
    runner = runner_for(db_url)
    assert runner.status().at_head


def test_startup_does_not_migrate_when_told_not_to(sqlite_url: str) -> None:
    app = create_app(load_settings(database_url=sqlite_url, migrate_on_startup=False))
    with TestClient(app) as client:
        assert client.get("/health/ready").status_code == 503


def test_schema_moved_under_a_running_api_gives_503_not_sql_errors(sqlite_url: str) -> None:
    migrate(sqlite_url)
    with client_for(sqlite_url, schema_check_interval=3600) as client:
        assert client.get("/v1/adapters").status_code == 200  # gate now trusts "at head"
        runner_for(sqlite_url).downgrade("base")
        response = client.get("/v1/adapters")
        assert response.status_code == 503
        assert response.json()["reason"] == "schema behind"
        assert "no such table" not in response.text


def test_rows_are_served_at_head(sqlite_url: str) -> None:
    migrate(sqlite_url)
    engine = create_engine(sqlite_url)
    with engine.begin() as connection:
        for name in ("b-lora", "a-lora"):
            connection.execute(
                text(
                    "INSERT INTO adapter (id, name, file_path, weight, active, created_at, "
                    "updated_at) VALUES (:n, :n, '/x', 1, 0, '2025-01-01', '2025-01-01')"
                ),
                {"n": name},
            )
    engine.dispose()
    with client_for(sqlite_url) as client:
        page = client.get("/v1/adapters", params={"limit": 1}).json()
        assert page["total"] == 2 and [a["name"] for a in page["items"]] == ["a-lora"]
        assert client.get("/v1/adapters/b-lora").json()["name"] == "b-lora"
        missing = client.get("/v1/adapters/nope")
        assert missing.status_code == 404 and missing.json() == {"detail": "adapter nope not found"}
        bad = client.get("/v1/adapters", params={"limit": 0})
        assert bad.status_code == 422 and "detail" in bad.json()


def test_api_key_is_required_on_data_routes_when_configured(sqlite_url: str) -> None:
    migrate(sqlite_url)
    with client_for(sqlite_url, api_key="s3cret-key") as client:
        assert client.get("/v1/adapters").status_code == 401
        wrong = client.get("/v1/adapters", headers={"X-API-Key": "s3cret-kez"})
        assert wrong.status_code == 401
        assert wrong.json() == {"detail": "invalid or missing API key (X-API-Key header)"}
        assert "s3cret" not in wrong.text
        assert client.get("/v1/adapters", headers={"X-API-Key": "s3cret-key"}).status_code == 200
        # Probes stay open so orchestrators need no secret.
        assert client.get("/health/ready").status_code == 200
        assert client.get("/health/live").status_code == 200


def test_openapi_documents_the_readiness_errors(sqlite_url: str) -> None:
    with client_for(sqlite_url) as client:
        spec = client.get("/openapi.json").json()
    assert "503" in spec["paths"]["/health/ready"]["get"]["responses"]
    assert "401" in spec["paths"]["/v1/adapters"]["get"]["responses"]
