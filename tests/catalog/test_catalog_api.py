"""The catalog API over a real imported library, on SQLite and PostgreSQL: search, every
filter and sort, pagination, the user's fields, bulk actions, previews, registration,
background imports, auth and bad parameters."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from lora_manager.api import create_app
from lora_manager.core.config import load_settings
from lora_manager.core.db import make_engine, make_session_factory
from lora_manager.ingest.service import Importer
from tests.support.library import write_safetensors
from tests.support.migrate import migrate

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)

# name, stem, base model, tags, trained words, author, downloads, published, nsfw, preview
LIBRARY = [
    (
        "Ink Wash",
        "ink-wash",
        "SDXL 1.0",
        ["style", "ink"],
        ["inkwash"],
        "painter",
        500,
        "2024-01-05T00:00:00Z",
        0,
        True,
    ),
    (
        "Cat Girl",
        "cat-girl",
        "SD 1.5",
        ["character", "anime"],
        ["catgirl"],
        "drawer",
        2000,
        "2023-06-01T00:00:00Z",
        2,
        False,
    ),
    (
        "Neon City",
        "neon-city",
        "SDXL 1.0",
        ["style", "city", "neon"],
        ["neoncity"],
        "painter",
        50,
        "2024-07-09T00:00:00Z",
        0,
        True,
    ),
    (
        "Flux Portrait",
        "flux-portrait",
        "Flux.1 D",
        ["portrait", "photo"],
        ["fluxface"],
        "lens",
        900,
        "2025-02-02T00:00:00Z",
        1,
        False,
    ),
    (
        "Watercolor Wash",
        "watercolor",
        "SD 1.5",
        ["style", "paint"],
        ["watercolour"],
        "painter",
        10,
        "2022-03-03T00:00:00Z",
        0,
        False,
    ),
]


def write_adapter(folder: Path, entry: tuple[Any, ...], size_pad: int) -> Path:
    name, stem, base, tags, words, author, downloads, published, nsfw, preview = entry
    model = folder / f"{stem}.safetensors"
    write_safetensors(model, {"ss_output_name": stem}, tensor_bytes=64 * size_pad)
    version = {
        "id": size_pad,
        "modelId": 100 + size_pad,
        "name": "v1",
        "baseModel": base,
        "trainedWords": words,
        "publishedAt": published,
        "nsfwLevel": nsfw,
        "stats": {"downloadCount": downloads},
        "model": {"name": name, "type": "LORA", "nsfw": nsfw > 0},
        "files": [{"name": model.name, "primary": True, "sizeKB": 1}],
    }
    (folder / f"{stem}.civitai.info").write_text(json.dumps(version))
    model_json = {
        "id": 100 + size_pad,
        "name": name,
        "description": f"<p>{name} for everyone</p>",
        "tags": tags,
        "creator": {"username": author},
        "modelVersions": [version],
    }
    (folder / f"{stem}.json").write_text(json.dumps(model_json))
    if preview:
        (folder / f"{stem}.preview.png").write_bytes(PNG)
    return model


@dataclass
class Catalog:
    client: TestClient
    root: Path
    url: str
    ids: dict[str, str]

    def get(self, path: str, **params: Any) -> Any:
        response = self.client.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def names(self, **params: Any) -> list[str]:
        return [item["name"] for item in self.get("/v1/adapters", **params)["items"]]

    def sql(self, statement: str, **params: Any) -> None:
        engine = make_engine(load_settings(database_url=self.url))
        with engine.begin() as connection:
            connection.execute(text(statement), params)
        engine.dispose()


def import_root(url: str, root: Path) -> None:
    settings = load_settings(database_url=url, lora_roots=[str(root)])
    engine = make_engine(settings)
    try:
        summary = Importer(settings, make_session_factory(engine)).run([root])
    finally:
        engine.dispose()
    assert summary.failed == 0, summary.failures


@pytest.fixture
def catalog(db_url: str, tmp_path: Path) -> Iterator[Catalog]:
    root = tmp_path / "loras"
    for index, entry in enumerate(LIBRARY):
        folder = root / ("sdxl" if "SDXL" in entry[2] else "other")
        folder.mkdir(parents=True, exist_ok=True)
        write_adapter(folder, entry, index + 1)
    migrate(db_url)
    import_root(db_url, root)
    settings = load_settings(database_url=db_url, lora_roots=[str(root)])
    with TestClient(create_app(settings, migrate_on_startup=False)) as client:
        items = client.get("/v1/adapters").json()["items"]
        yield Catalog(client, root, db_url, {item["name"]: item["id"] for item in items})


def test_first_page_lists_everything_by_name(catalog: Catalog) -> None:
    page = catalog.get("/v1/adapters")
    assert page["total"] == len(LIBRARY)
    assert [item["name"] for item in page["items"]] == sorted(e[0] for e in LIBRARY)
    ink = next(item for item in page["items"] if item["name"] == "Ink Wash")
    assert ink["base_model"] == "SDXL 1.0" and ink["author_username"] == "painter"
    assert ink["tags"] == ["style", "ink"] and ink["download_count"] == 500
    assert ink["has_preview"] is True and len(ink["sha256"]) == 64
    assert "extra" not in ink  # the list stays light; the detail has the raw sidecars


def test_pages_are_stable_and_complete(catalog: Catalog) -> None:
    seen: list[str] = []
    for offset in range(0, len(LIBRARY), 2):
        page = catalog.get("/v1/adapters", limit=2, offset=offset, sort="downloads")
        assert page["total"] == len(LIBRARY)
        seen.extend(item["id"] for item in page["items"])
    assert sorted(seen) == sorted(catalog.ids.values()) and len(set(seen)) == len(seen)
    assert catalog.get("/v1/adapters", offset=100)["items"] == []


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("ink", ["Ink Wash"]),
        ("wash", ["Ink Wash", "Watercolor Wash"]),
        ("inkw", ["Ink Wash"]),  # prefix of a trained word
        ("painter neon", ["Neon City"]),  # author and name, both must match
        ("anime", ["Cat Girl"]),  # a tag
        ("everyone", sorted(e[0] for e in LIBRARY)),  # the description
        ("zebra", []),
    ],
)
def test_text_search(catalog: Catalog, query: str, expected: list[str]) -> None:
    assert catalog.names(q=query) == expected


def test_filters(catalog: Catalog) -> None:
    assert catalog.names(tag="neon") == ["Neon City"]
    assert catalog.names(tag=["ink", "anime"]) == ["Cat Girl", "Ink Wash"]
    assert catalog.names(tag_all=["style", "city"]) == ["Neon City"]
    assert catalog.names(tag_all=["style", "anime"]) == []
    assert catalog.names(base_model="SD 1.5") == ["Cat Girl", "Watercolor Wash"]
    assert catalog.names(nsfw_max=0) == ["Ink Wash", "Neon City", "Watercolor Wash"]
    assert catalog.names(has_preview=True) == ["Ink Wash", "Neon City"]
    assert catalog.names(has_preview=False) == ["Cat Girl", "Flux Portrait", "Watercolor Wash"]
    ids = catalog.ids
    catalog.client.put(f"/v1/adapters/{ids['Cat Girl']}/rating", json={"rating": 5})
    catalog.client.put(f"/v1/adapters/{ids['Neon City']}/rating", json={"rating": 3})
    assert catalog.names(rating_min=4) == ["Cat Girl"]
    assert catalog.names(rating_min=3) == ["Cat Girl", "Neon City"]
    catalog.client.put(f"/v1/adapters/{ids['Flux Portrait']}/favorite", json={"favorite": True})
    assert catalog.names(favorite=True) == ["Flux Portrait"]
    catalog.client.post(f"/v1/adapters/{ids['Ink Wash']}/activate", json={})
    assert catalog.names(active=True) == ["Ink Wash"]
    assert len(catalog.names(active=False)) == len(LIBRARY) - 1


def test_missing_filter_after_a_file_vanishes(catalog: Catalog) -> None:
    for path in (catalog.root / "other").glob("cat-girl.*"):
        path.unlink()
    import_root(catalog.url, catalog.root)
    assert catalog.names(missing=True) == ["Cat Girl"]
    assert "Cat Girl" not in catalog.names(missing=False)
    gone = catalog.get(f"/v1/adapters/{catalog.ids['Cat Girl']}")
    assert gone["ingest_status"] == "missing" and gone["missing_since"] is not None


@pytest.mark.parametrize(
    ("sort", "order", "first"),
    [
        ("name", "asc", "Cat Girl"),
        ("name", "desc", "Watercolor Wash"),
        ("downloads", "desc", "Cat Girl"),
        ("downloads", "asc", "Watercolor Wash"),
        ("published", "desc", "Flux Portrait"),
        ("published", "asc", "Watercolor Wash"),
        ("size", "desc", "Watercolor Wash"),
        ("size", "asc", "Ink Wash"),
    ],
)
def test_sorts(catalog: Catalog, sort: str, order: str, first: str) -> None:
    assert catalog.names(sort=sort, order=order)[0] == first


def test_sort_by_rating_ordinal_created_and_updated(catalog: Catalog) -> None:
    ids = catalog.ids
    catalog.client.put(f"/v1/adapters/{ids['Neon City']}/rating", json={"rating": 2})
    catalog.client.put(f"/v1/adapters/{ids['Ink Wash']}/rating", json={"rating": 4})
    assert catalog.names(sort="rating", order="desc")[:2] == ["Ink Wash", "Neon City"]
    assert catalog.names(sort="rating")[:2] == ["Neon City", "Ink Wash"]  # unrated last
    catalog.client.post(f"/v1/adapters/{ids['Cat Girl']}/activate", json={"ordinal": 2})
    catalog.client.post(f"/v1/adapters/{ids['Flux Portrait']}/activate", json={"ordinal": 1})
    assert catalog.names(sort="ordinal")[:2] == ["Flux Portrait", "Cat Girl"]
    time.sleep(0.01)
    catalog.client.patch(f"/v1/adapters/{ids['Watercolor Wash']}", json={"notes": "touched"})
    assert catalog.names(sort="updated", order="desc")[0] == "Watercolor Wash"
    created = catalog.names(sort="created")
    assert sorted(created) == sorted(e[0] for e in LIBRARY)


@pytest.mark.parametrize(
    "params",
    [
        {"sort": "bogus"},
        {"order": "sideways"},
        {"limit": 0},
        {"limit": 501},
        {"offset": -1},
        {"rating_min": 9},
        {"nsfw_max": -1},
        {"status": "weird"},
        {"favorite": "perhaps"},
    ],
)
def test_bad_parameters_are_422_with_json(catalog: Catalog, params: dict[str, Any]) -> None:
    response = catalog.client.get("/v1/adapters", params=params)
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], list)


def test_detail_patch_and_user_fields(catalog: Catalog) -> None:
    adapter_id = catalog.ids["Ink Wash"]
    detail = catalog.get(f"/v1/adapters/{adapter_id}")
    assert detail["extra"]["civitai_info"]["baseModel"] == "SDXL 1.0"
    response = catalog.client.patch(
        f"/v1/adapters/{adapter_id}",
        json={
            "weight": 0.6,
            "notes": "lovely",
            "rating": 4,
            "is_favorite": True,
            "user_tags": ["Mine", "mine", " Ink "],
        },
    )
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["weight"] == 0.6 and patched["notes"] == "lovely"
    assert patched["rating"] == 4 and patched["rating_updated_at"] is not None
    assert patched["is_favorite"] is True and patched["favorite_updated_at"] is not None
    assert patched["user_tags"] == ["mine", "ink"]
    assert catalog.names(tag="mine") == ["Ink Wash"]
    assert catalog.names(q="mine") == ["Ink Wash"]
    cleared = catalog.client.patch(f"/v1/adapters/{adapter_id}", json={"rating": None}).json()
    assert cleared["rating"] is None
    for bad in ({"rating": 6}, {"weight": 99}, {"name": "renamed"}, {"weight": None}):
        assert catalog.client.patch(f"/v1/adapters/{adapter_id}", json=bad).status_code == 422
    assert catalog.client.patch("/v1/adapters/nope", json={}).status_code == 404
    assert (
        catalog.client.put(f"/v1/adapters/{adapter_id}/rating", json={"rating": 0}).status_code
        == 422
    )


def test_activate_and_deactivate(catalog: Catalog) -> None:
    first = catalog.client.post(
        f"/v1/adapters/{catalog.ids['Ink Wash']}/activate", json={"ordinal": 3, "weight": 0.9}
    ).json()
    assert (first["active"], first["ordinal"], first["weight"]) == (True, 3, 0.9)
    second = catalog.client.post(f"/v1/adapters/{catalog.ids['Cat Girl']}/activate").json()
    assert second["active"] and second["ordinal"] == 4  # after the last active one
    off = catalog.client.post(f"/v1/adapters/{catalog.ids['Ink Wash']}/deactivate").json()
    assert (off["active"], off["ordinal"]) == (False, None)
    assert catalog.client.post("/v1/adapters/nope/activate").status_code == 404


def test_bulk_actions(catalog: Catalog) -> None:
    ids = [catalog.ids["Ink Wash"], catalog.ids["Neon City"], "nope"]
    tagged = catalog.client.post(
        "/v1/adapters/bulk", json={"ids": ids, "action": "tag", "tags": ["keep"]}
    ).json()
    assert (tagged["matched"], tagged["changed"], tagged["not_found"]) == (2, 2, ["nope"])
    assert catalog.names(tag="keep") == ["Ink Wash", "Neon City"]
    untag = {"ids": ids[:1], "action": "untag", "tags": ["keep"]}
    assert catalog.client.post("/v1/adapters/bulk", json=untag).json()["changed"] == 1
    assert catalog.names(tag="keep") == ["Neon City"]
    for action, filter_name in (("activate", "active"), ("favorite", "favorite")):
        body = {"ids": ids[:2], "action": action}
        assert catalog.client.post("/v1/adapters/bulk", json=body).json()["changed"] == 2
        assert catalog.names(**{filter_name: True}) == ["Ink Wash", "Neon City"]
    active = catalog.get("/v1/adapters", active=True, sort="ordinal")["items"]
    assert [a["ordinal"] for a in active] == [1, 2]
    deactivated = catalog.client.post(
        "/v1/adapters/bulk", json={"ids": ids[:2], "action": "deactivate"}
    ).json()
    assert deactivated["changed"] == 2 and catalog.names(active=True) == []
    deleted = catalog.client.post(
        "/v1/adapters/bulk", json={"ids": ids[:1], "action": "delete"}
    ).json()
    assert deleted["changed"] == 1 and "Ink Wash" not in catalog.names()
    assert catalog.names(q="ink") == []  # gone from the search index too
    assert (catalog.root / "sdxl" / "ink-wash.safetensors").exists()  # the file stays
    bad = catalog.client.post("/v1/adapters/bulk", json={"ids": ids, "action": "tag"})
    assert bad.status_code == 422
    assert (
        catalog.client.post("/v1/adapters/bulk", json={"ids": [], "action": "favorite"}).status_code
        == 422
    )
    assert (
        catalog.client.post("/v1/adapters/bulk", json={"ids": ids, "action": "explode"}).status_code
        == 422
    )


def test_delete_one(catalog: Catalog) -> None:
    adapter_id = catalog.ids["Cat Girl"]
    assert catalog.client.delete(f"/v1/adapters/{adapter_id}").status_code == 204
    assert catalog.client.get(f"/v1/adapters/{adapter_id}").status_code == 404
    assert catalog.client.delete(f"/v1/adapters/{adapter_id}").status_code == 404


def test_tags_base_models_and_duplicates(catalog: Catalog) -> None:
    tags = {row["tag"]: row["count"] for row in catalog.get("/v1/adapters/tags")}
    assert tags["style"] == 3 and tags["neon"] == 1
    assert catalog.get("/v1/adapters/tags", limit=1) == [{"tag": "style", "count": 3}]
    bases = {row["base_model"]: row["count"] for row in catalog.get("/v1/adapters/base-models")}
    assert bases == {"SDXL 1.0": 2, "SD 1.5": 2, "Flux.1 D": 1}
    assert catalog.get("/v1/adapters/duplicates") == []
    copy = catalog.root / "copy"
    copy.mkdir()
    shutil.copy(catalog.root / "sdxl" / "ink-wash.safetensors", copy / "ink-copy.safetensors")
    import_root(catalog.url, catalog.root)
    groups = catalog.get("/v1/adapters/duplicates")
    assert len(groups) == 1 and len(groups[0]["adapters"]) == 2
    assert {a["file_path"].rsplit("/", 1)[1] for a in groups[0]["adapters"]} == {
        "ink-wash.safetensors",
        "ink-copy.safetensors",
    }


def test_preview_is_served_only_from_inside_the_roots(catalog: Catalog) -> None:
    response = catalog.client.get(f"/v1/adapters/{catalog.ids['Ink Wash']}/preview")
    assert response.status_code == 200 and response.content == PNG
    assert response.headers["content-type"] == "image/png"
    no_preview = catalog.client.get(f"/v1/adapters/{catalog.ids['Cat Girl']}/preview")
    assert no_preview.status_code == 404
    outside = catalog.root.parent / "secret.png"
    outside.write_bytes(PNG)
    catalog.sql(
        "UPDATE adapter SET preview_path = :p WHERE id = :id",
        p=str(outside),
        id=catalog.ids["Neon City"],
    )
    refused = catalog.client.get(f"/v1/adapters/{catalog.ids['Neon City']}/preview")
    assert refused.status_code == 403 and "outside" in refused.json()["detail"]


def test_register_one_file(catalog: Catalog) -> None:
    folder = catalog.root / "new"
    folder.mkdir()
    model = write_adapter(
        folder,
        ("Solo", "solo", "Pony", ["horse"], ["solo"], "x", 1, "2025-01-01T00:00:00Z", 0, False),
        9,
    )
    created = catalog.client.post("/v1/adapters", json={"path": str(model)})
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "Solo" and created.json()["base_model"] == "Pony"
    again = catalog.client.post("/v1/adapters", json={"path": str(model)})
    assert again.status_code == 201 and again.json()["id"] == created.json()["id"]
    outside = catalog.root.parent / "outside.safetensors"
    write_safetensors(outside, {})
    refused = catalog.client.post("/v1/adapters", json={"path": str(outside)})
    assert refused.status_code == 403
    sneaky = catalog.client.post(
        "/v1/adapters", json={"path": str(catalog.root / ".." / "outside.safetensors")}
    )
    assert sneaky.status_code == 403
    missing = catalog.client.post("/v1/adapters", json={"path": str(folder / "nope.safetensors")})
    assert missing.status_code == 404


def test_background_import_reports_progress_and_summary(catalog: Catalog) -> None:
    folder = catalog.root / "later"
    folder.mkdir()
    write_adapter(
        folder,
        ("Later", "later", "SDXL 1.0", ["x"], ["later"], "x", 1, "2025-01-01T00:00:00Z", 0, False),
        11,
    )
    started = catalog.client.post("/v1/imports", json={})
    assert started.status_code == 202, started.text
    run_id = started.json()["id"]
    deadline = time.monotonic() + 60
    while (run := catalog.get(f"/v1/imports/{run_id}"))["status"] in ("pending", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert run["status"] == "succeeded", run
    assert run["summary"]["new"] == 1 and run["summary"]["unchanged"] == len(LIBRARY)
    assert run["progress"]["files_done"] == run["progress"]["files_total"] == len(LIBRARY) + 1
    assert "Later" in catalog.names()
    assert [r["id"] for r in catalog.get("/v1/imports")] == [run_id]
    outside = catalog.client.post("/v1/imports", json={"paths": ["/etc"]})
    assert outside.status_code == 403
    not_folder = catalog.client.post(
        "/v1/imports", json={"paths": [str(catalog.root / "sdxl" / "ink-wash.safetensors")]}
    )
    assert not_folder.status_code == 422
    assert catalog.client.get("/v1/imports/nope").status_code == 404
    assert catalog.client.post("/v1/imports", json={"bogus": 1}).status_code == 422


def test_imports_need_configured_roots(sqlite_url: str) -> None:
    migrate(sqlite_url)
    with TestClient(create_app(load_settings(database_url=sqlite_url))) as client:
        response = client.post("/v1/imports", json={})
        assert response.status_code == 409 and "LORA_ROOTS" in response.json()["detail"]


def test_every_catalog_route_requires_the_key(db_url: str, tmp_path: Path) -> None:
    migrate(db_url)
    settings = load_settings(database_url=db_url, api_key="k3y", lora_roots=[str(tmp_path)])
    app = create_app(settings, migrate_on_startup=False)
    routes = [
        ("GET", "/v1/adapters"),
        ("GET", "/v1/adapters/tags"),
        ("GET", "/v1/adapters/x"),
        ("GET", "/v1/adapters/base-models"),
        ("GET", "/v1/adapters/duplicates"),
        ("PATCH", "/v1/adapters/x"),
        ("DELETE", "/v1/adapters/x"),
        ("POST", "/v1/adapters"),
        ("POST", "/v1/adapters/bulk"),
        ("POST", "/v1/adapters/x/activate"),
        ("POST", "/v1/adapters/x/deactivate"),
        ("PUT", "/v1/adapters/x/rating"),
        ("PUT", "/v1/adapters/x/favorite"),
        ("GET", "/v1/adapters/x/preview"),
        ("POST", "/v1/imports"),
        ("GET", "/v1/imports"),
        ("GET", "/v1/imports/x"),
        ("POST", "/v1/compose"),
    ]
    with TestClient(app) as client:
        for method, path in routes:
            assert client.request(method, path).status_code == 401, (method, path)
        ok = client.get("/v1/adapters", headers={"X-API-Key": "k3y"})
        assert ok.status_code == 200


def test_openapi_documents_the_catalog(catalog: Catalog) -> None:
    spec = catalog.get("/openapi.json")
    paths = spec["paths"]
    for path in (
        "/v1/adapters",
        "/v1/adapters/{adapter_id}",
        "/v1/adapters/bulk",
        "/v1/adapters/tags",
        "/v1/imports",
        "/v1/imports/{import_id}",
    ):
        assert path in paths, path
    assert "404" in paths["/v1/adapters/{adapter_id}"]["get"]["responses"]
    assert "403" in paths["/v1/adapters"]["post"]["responses"]
    schemas = spec["components"]["schemas"]
    assert schemas["RatingIn"]["examples"] and schemas["BulkIn"]["examples"]
