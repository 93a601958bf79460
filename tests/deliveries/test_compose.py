"""Composing prompts from adapters: the rules, and POST /v1/compose on both databases."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from lora_manager.api import create_app
from lora_manager.core.config import load_settings
from lora_manager.core.db import make_engine, make_session_factory
from lora_manager.deliveries.compose import compose, format_weight, token_name
from tests.support.adapters import adapter, three_adapters
from tests.support.migrate import migrate


def test_tokens_use_the_file_stem_and_the_weight() -> None:
    ink = adapter("Ink Wash (SDXL)", "ink_wash_v2", weight=0.8)
    assert token_name(ink) == "ink_wash_v2"
    result = compose([ink], include_triggers=False)
    assert result.prompt == "<lora:ink_wash_v2:0.8>"
    assert [(a.token_name, a.weight) for a in result.adapters] == [("ink_wash_v2", 0.8)]


@pytest.mark.parametrize(
    ("weight", "text"),
    [(1.0, "1"), (0.75, "0.75"), (0.8, "0.8"), (0.333, "0.33"), (-0.5, "-0.5"), (0.0, "0")],
)
def test_weights_are_written_briefly(weight: float, text: str) -> None:
    assert format_weight(weight) == text


def test_prefix_triggers_tokens_suffix_in_order_without_duplicates() -> None:
    ink = adapter("Ink", "ink", trained_words=["inkwash", "sumi-e"], weight=0.7)
    cat = adapter("Cat", "cat", triggers=["catgirl", "InkWash"])
    again = adapter("Ink copy", "ink", trained_words=["other"])  # same file stem
    result = compose(
        [ink, cat, again],
        prefix="masterpiece, a cat",
        suffix="night",
        negative_prompt="blurry",
        weights={"id-cat": 0.5},
    )
    assert result.prompt == (
        "masterpiece, a cat, inkwash, sumi-e, catgirl, <lora:ink:0.7> <lora:cat:0.5>, night"
    )
    assert result.negative_prompt == "blurry"
    assert result.triggers == ["inkwash", "sumi-e", "catgirl"]
    assert [a.triggers for a in result.adapters] == [["inkwash", "sumi-e"], ["catgirl"]]
    assert result.skipped == [{"id": "id-ink", "reason": "<lora:ink> already in"}]


def test_text_already_typed_is_not_repeated() -> None:
    ink = adapter("Ink", "ink", trained_words=["inkwash"])
    cat = adapter("Cat", "cat", activation_text="catgirl, ears")
    result = compose([ink, cat], prefix="<lora:INK:0.3>, Catgirl")
    assert result.prompt == "<lora:INK:0.3>, Catgirl, ears, <lora:cat:1>"
    assert [s["reason"] for s in result.skipped] == ["<lora:ink> already in"]


def test_missing_and_broken_files_are_skipped_with_the_reason() -> None:
    gone = adapter("Gone", "gone", ingest_status="missing")
    broken = adapter("Broken", "broken", ingest_status="error")
    ok = adapter("Ok", "ok")
    result = compose([gone, broken, ok], include_triggers=False)
    assert result.prompt == "<lora:ok:1>"
    assert result.skipped == [
        {"id": "id-gone", "reason": "file missing"},
        {"id": "id-broken", "reason": "file unreadable"},
    ]


def test_nothing_to_compose_gives_the_typed_text() -> None:
    result = compose([], prefix=" a cat ", suffix="")
    assert (result.prompt, result.adapters, result.negative_prompt) == ("a cat", [], None)


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    settings = load_settings(database_url=db_url)
    migrate(db_url)
    engine = make_engine(settings)
    with make_session_factory(engine)() as session:
        session.add_all(three_adapters())
        session.commit()
    engine.dispose()
    with TestClient(create_app(settings, migrate_on_startup=False)) as test_client:
        yield test_client


def test_compose_endpoint_uses_the_active_adapters_by_ordinal(client: TestClient) -> None:
    response = client.post("/v1/compose", json={"prefix": "a cat", "negative_prompt": "blurry"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["prompt"] == "a cat, one, two, <lora:first:1> <lora:second:0.6>"
    assert body["negative_prompt"] == "blurry"
    assert [a["token_name"] for a in body["adapters"]] == ["first", "second"]
    assert body["triggers"] == ["one", "two"] and body["skipped"] == []


def test_compose_endpoint_with_given_adapters_and_overrides(client: TestClient) -> None:
    body = client.post(
        "/v1/compose",
        json={
            "adapter_ids": ["id-inactive", "id-first"],
            "weights": {"id-first": 0.25},
            "include_triggers": False,
        },
    ).json()
    assert body["prompt"] == "<lora:inactive:1> <lora:first:0.25>"
    unknown = client.post("/v1/compose", json={"adapter_ids": ["id-first", "nope"]})
    assert unknown.status_code == 422 and "nope" in unknown.json()["detail"]
    assert client.post("/v1/compose", json={"bogus": True}).status_code == 422
    assert client.post("/v1/compose", json={"weights": {"x": "heavy"}}).status_code == 422
