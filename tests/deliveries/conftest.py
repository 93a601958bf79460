"""Fixtures the delivery tests share: the loopback servers the back ends deliver to."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fake_servers import SDNextServer, WebhookServer, running_sdnext, running_webhook


@pytest.fixture
def webhook() -> Iterator[WebhookServer]:
    """A webhook receiver on loopback that records what it is sent."""
    with running_webhook() as server:
        yield server


@pytest.fixture
def sdnext() -> Iterator[SDNextServer]:
    """The SDNext look-alike on loopback."""
    with running_sdnext() as server:
        yield server
