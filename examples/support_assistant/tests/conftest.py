"""Cassettes for every test (pytest-recording); no credentials in them or needed to replay them."""

from __future__ import annotations

import os
from typing import Any

import pytest
from support_assistant import Article, SupportAssistant

ORDERS = {4417: {"status": "shipped", "shipped": "Monday", "eta": "Thursday"}}
ARTICLES = [
    Article("Refund policy", "Refunds are paid within 14 days of a return arriving."),
    Article("Shipping times", "Orders ship within two working days and arrive in three to five."),
    Article("Changing your address", "Edit the delivery address until the order ships."),
]

# scripts/record_cassettes.py points the SDKs at a local server and sets this to the real host each
# cassette should name, so the recorded requests read as api.openai.com / api.anthropic.com.
_RECORD_HOSTS = {"openai": "https://api.openai.com", "anthropic": "https://api.anthropic.com"}


def _as_public_host(request: Any) -> Any:
    local = os.environ.get("SUPPORT_ASSISTANT_LOCAL_URL")
    if local and request.uri.startswith(local):
        host = _RECORD_HOSTS["anthropic" if request.path.endswith("/messages") else "openai"]
        request.uri = host + request.uri[len(local) :]
    return request


@pytest.fixture(scope="module")
def vcr_config() -> dict[str, Any]:
    return {
        "filter_headers": ["authorization", "x-api-key", "openai-organization", "cookie", "host"],
        "before_record_request": _as_public_host,
        "match_on": ["method", "scheme", "host", "path"],
        "decode_compressed_response": True,
    }


@pytest.fixture(autouse=True)
def _replay_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDKs refuse to start without a key; replayed cassettes need no real one."""
    monkeypatch.setenv("OPENAI_API_KEY", os.environ.get("OPENAI_API_KEY", "sk-replay-only"))
    monkeypatch.setenv("ANTHROPIC_API_KEY", os.environ.get("ANTHROPIC_API_KEY", "sk-ant-replay-only"))


@pytest.fixture
def assistant() -> SupportAssistant:
    return SupportAssistant(lookup_order=lambda number: ORDERS.get(number, {"status": "unknown"}))


@pytest.fixture
def articles() -> list[Article]:
    return ARTICLES
