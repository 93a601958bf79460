"""`/docs` and `/redoc` work offline: their pages name no other host, every asset they name
is served here with a JS/CSS/image type, and no API key is needed for them."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from lora_manager.api import create_app
from lora_manager.core.config import load_settings

API_KEY = "docs-test-key"
ASSET_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
}


@pytest.fixture
def client(sqlite_url: str) -> Iterator[TestClient]:
    # With an API key set: the pages and their assets must still load without one.
    settings = load_settings(database_url=sqlite_url, api_key=API_KEY)
    with TestClient(create_app(settings, migrate_on_startup=False)) as opened:
        yield opened


def referenced_urls(html: str) -> list[str]:
    return re.findall(r'(?:src|href|spec-url)="([^"]+)"', html) + re.findall(
        r"url: '([^']+)'", html
    )


@pytest.mark.parametrize(
    ("page", "assets"),
    [
        ("/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"}),
        ("/redoc", {"redoc.standalone.js", "favicon.png"}),
    ],
)
def test_the_docs_pages_load_everything_from_this_server(
    client: TestClient, page: str, assets: set[str]
) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert re.findall(r"(?:https?:)?//[\w.-]+", html) == []  # no CDN, no fonts, no badge
    urls = referenced_urls(html)
    assert "/openapi.json" in urls
    served = {url.rsplit("/", 1)[1] for url in urls if url.startswith("/docs-static/")}
    assert served == assets
    for url in urls:
        assert url.startswith("/"), url
        fetched = client.get(url)
        assert fetched.status_code == 200, url
        suffix = url[url.rfind(".") :]
        if url != "/openapi.json":
            assert fetched.headers["content-type"].startswith(ASSET_TYPES[suffix]), url
            assert len(fetched.content) > 1000, url


def test_the_oauth2_redirect_page_is_served(client: TestClient) -> None:
    response = client.get("/docs/oauth2-redirect")
    assert response.status_code == 200
    assert "oauth2" in response.text


def test_the_api_itself_still_needs_the_key(client: TestClient) -> None:
    assert client.get("/v1/adapters").status_code == 401
    assert client.get("/v1/adapters", headers={"X-API-Key": API_KEY}).status_code != 401


def test_the_old_cdn_pages_are_gone(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert not any(path.startswith(("/docs", "/redoc")) for path in schema["paths"])
    assert "cdn.jsdelivr.net" not in client.get("/docs").text


def test_behind_a_proxy_prefix_the_links_keep_it(sqlite_url: str) -> None:
    app = create_app(load_settings(database_url=sqlite_url), migrate_on_startup=False)
    client = TestClient(app, root_path="/lora")
    swagger = client.get("/docs").text
    assert 'href="/lora/docs-static/swagger-ui.css"' in swagger
    assert "url: '/lora/openapi.json'" in swagger
    assert "'/lora/docs/oauth2-redirect'" in swagger
    assert '<script src="/lora/docs-static/redoc.standalone.js">' in client.get("/redoc").text
