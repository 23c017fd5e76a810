"""Answers customers with OpenAI (a tool-call round trip), summarises tickets with Anthropic (streamed)
and finds help articles by OpenAI embeddings.

Nothing here knows about tests or token budgets: it is ordinary application code using the
official SDKs with their default endpoints.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anthropic
import openai

CHAT_MODEL = "gpt-4o-mini"
SUMMARY_MODEL = "claude-sonnet-4-6"
EMBEDDING_MODEL = "text-embedding-3-small"

SYSTEM = (
    "You are the support assistant of an online shop. Answer in two sentences at most. "
    "Use lookup_order for anything about an order."
)
LOOKUP_ORDER = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "description": "Shipping status of an order.",
        "parameters": {
            "type": "object",
            "properties": {"order": {"type": "integer", "description": "the order number"}},
            "required": ["order"],
        },
    },
}


@dataclass(frozen=True)
class Article:
    title: str
    body: str


OrderLookup = Callable[[int], dict[str, Any]]


class SupportAssistant:
    """The three things the support desk asks of an LLM."""

    def __init__(
        self,
        lookup_order: OrderLookup,
        openai_client: openai.OpenAI | None = None,
        anthropic_client: anthropic.Anthropic | None = None,
    ) -> None:
        self._lookup_order = lookup_order
        self._openai = openai_client or openai.OpenAI()
        self._anthropic = anthropic_client or anthropic.Anthropic()

    def answer(self, question: str) -> str:
        """Answer a customer, looking orders up through the ``lookup_order`` tool when asked to."""
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": question},
        ]
        for _ in range(3):  # a tool call, then the answer
            reply = self._openai.chat.completions.create(
                model=CHAT_MODEL, messages=messages, tools=[LOOKUP_ORDER]
            )
            message = reply.choices[0].message
            if not message.tool_calls:
                return message.content or ""
            messages.append(message.model_dump(exclude_none=True))
            for call in message.tool_calls:
                order = json.loads(call.function.arguments)["order"]
                result = self._lookup_order(order)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)})
        raise RuntimeError("the model kept calling tools")

    def summarise(self, ticket: str) -> str:
        """A one-paragraph summary of a support ticket, streamed as Claude writes it."""
        with self._anthropic.messages.stream(
            model=SUMMARY_MODEL,
            max_tokens=300,
            system="Summarise this support ticket for the next agent, in one paragraph.",
            messages=[{"role": "user", "content": ticket}],
        ) as stream:
            return "".join(stream.text_stream)

    def related_articles(self, query: str, articles: Sequence[Article], top: int = 2) -> list[Article]:
        """The help articles closest in meaning to ``query`` (one embeddings request)."""
        texts = [query, *(f"{a.title}. {a.body}" for a in articles)]
        result = self._openai.embeddings.create(model=EMBEDDING_MODEL, input=texts)
        vectors = [item.embedding for item in sorted(result.data, key=lambda item: item.index)]
        scored = sorted(
            zip(articles, vectors[1:], strict=True),
            key=lambda pair: _cosine(vectors[0], pair[1]),
            reverse=True,
        )
        return [article for article, _ in scored[:top]]


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0
