"""The support assistant's behaviour, replayed from cassettes (tests/cassettes/)."""

from __future__ import annotations

import pytest
from support_assistant import Article, SupportAssistant


@pytest.mark.vcr
def test_answer_looks_the_order_up(assistant: SupportAssistant) -> None:
    answer = assistant.answer("Where is my order #4417?")
    assert "4417" in answer
    assert "Thursday" in answer


@pytest.mark.vcr
@pytest.mark.token_budget(max_tokens=3_000, max_cost=0.01)  # the summary must stay cheap
def test_summary_is_streamed(assistant: SupportAssistant) -> None:
    ticket = (
        "Customer ordered a kettle (order 4417) on Friday, asked twice about delivery, "
        "and wants to know whether it will arrive before the weekend."
    )
    summary = assistant.summarise(ticket)
    assert summary.startswith("Your order")


@pytest.mark.vcr
def test_related_articles(assistant: SupportAssistant, articles: list[Article]) -> None:
    found = assistant.related_articles("How long does shipping take?", articles, top=1)
    assert [article.title for article in found] == ["Shipping times"]


def test_no_llm_needed_for_unknown_orders(assistant: SupportAssistant) -> None:
    assert assistant._lookup_order(1) == {"status": "unknown"}
