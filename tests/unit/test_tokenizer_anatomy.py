"""anatomy: a request's input tokens by part, additive over calls, JSON round trip."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from pytest_tokenbudget.inspection.anatomy import Anatomy, Part, of_request
from pytest_tokenbudget.tokens import tokenizer

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search_orders",
            "description": "Search the customer's orders by date range and status.",
            "parameters": {
                "type": "object",
                "properties": {
                    "since": {"type": "string", "description": "ISO date"},
                    "status": {"type": "string", "enum": ["open", "shipped", "returned"]},
                },
            },
        },
    }
]
BODY: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are the support assistant of a shop. Be brief and polite."},
        {"role": "user", "content": "Where is my order?"},
    ],
    "tools": TOOLS,
}


@pytest.fixture(autouse=True)
def fresh_tokenizer() -> Iterator[None]:
    tokenizer.reset()
    yield
    tokenizer.reset()


def test_anatomy_of_a_request_matches_its_estimate() -> None:
    estimate = tokenizer.estimate_request("openai.chat", BODY)
    anatomy = of_request("openai.chat", BODY)
    assert anatomy.calls == 1
    assert anatomy.total == estimate.total
    assert anatomy.system == estimate.system
    assert anatomy.messages == estimate.messages
    assert anatomy.tools == estimate.tools
    assert not anatomy.approximate


def test_parts_are_largest_first_and_shares_sum_to_one() -> None:
    anatomy = of_request("openai.chat", BODY)
    parts = anatomy.parts()
    assert [p.tokens for p in parts] == sorted((p.tokens for p in parts), reverse=True)
    assert {p.name for p in parts} == {"system", "tools", "overhead", "messages:user"}
    assert sum(p.share for p in parts) == pytest.approx(1.0)
    assert parts[0] == Part("tools", anatomy.tools, anatomy.tools / anatomy.total)


def test_anatomies_add_up_over_calls() -> None:
    first = of_request("openai.chat", BODY)
    second = of_request(
        "anthropic.messages", {"system": "Be brief.", "messages": [{"role": "user", "content": "Hi"}]}
    )
    total = first + second
    assert total.calls == 2
    assert total.total == first.total + second.total
    assert total.messages["user"] == first.messages["user"] + second.messages["user"]
    assert total.approximate  # the Anthropic call is an o200k approximation
    assert sum([first, second], Anatomy()) == total


def test_anatomy_json_round_trip_keeps_no_text() -> None:
    anatomy = of_request("openai.chat", BODY)
    text = json.dumps(anatomy.to_dict())
    assert "support assistant" not in text
    assert Anatomy.from_dict(json.loads(text)) == anatomy


def test_empty_anatomy_has_no_parts() -> None:
    assert Anatomy().parts() == []
    assert Anatomy().total == 0
