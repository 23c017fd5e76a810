"""Request anatomy: where the input tokens of one request, or of many, go.

Built from :class:`~pytest_tokenbudget.tokens.tokenizer.RequestEstimate` breakdowns; additive, so a test's
or a run's anatomy is the sum of its calls'. Numbers only: no prompt text is kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..tokens.tokenizer import RequestEstimate, estimate_request

__all__ = ["Anatomy", "Part", "of_request"]


@dataclass(frozen=True, slots=True)
class Part:
    """One slice of the input: ``system``, ``messages:<role>``, ``tools`` or ``overhead``."""

    name: str
    tokens: int
    share: float  # of the total, 0..1


@dataclass(frozen=True, slots=True)
class Anatomy:
    """Estimated input tokens by part, summed over ``calls`` requests."""

    calls: int = 0
    system: int = 0
    messages: dict[str, int] = field(default_factory=dict)
    tools: int = 0
    overhead: int = 0
    attachments_unknown: int = 0
    approximate: bool = False  # some call was not counted with its model's own encoding

    @classmethod
    def from_estimate(cls, estimate: RequestEstimate) -> Anatomy:
        return cls(
            calls=1,
            system=estimate.system,
            messages=dict(estimate.messages),
            tools=estimate.tools,
            overhead=estimate.overhead,
            attachments_unknown=estimate.attachments_unknown,
            approximate=not estimate.method.startswith("tiktoken:"),
        )

    @property
    def total(self) -> int:
        return self.system + sum(self.messages.values()) + self.tools + self.overhead

    def __add__(self, other: Anatomy) -> Anatomy:
        if not isinstance(other, Anatomy):
            return NotImplemented
        messages = dict(self.messages)
        for role, tokens in other.messages.items():
            messages[role] = messages.get(role, 0) + tokens
        return Anatomy(
            calls=self.calls + other.calls,
            system=self.system + other.system,
            messages=messages,
            tools=self.tools + other.tools,
            overhead=self.overhead + other.overhead,
            attachments_unknown=self.attachments_unknown + other.attachments_unknown,
            approximate=self.approximate or other.approximate,
        )

    def parts(self) -> list[Part]:
        """Non-empty parts, largest first (ties by name), with their share of the total."""
        total = self.total
        raw = [("system", self.system), ("tools", self.tools), ("overhead", self.overhead)]
        raw += [(f"messages:{role}", tokens) for role, tokens in self.messages.items()]
        return [
            Part(name, tokens, tokens / total if total else 0.0)
            for name, tokens in sorted(raw, key=lambda item: (-item[1], item[0]))
            if tokens
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "total": self.total,
            "system": self.system,
            "messages": dict(sorted(self.messages.items())),
            "tools": self.tools,
            "overhead": self.overhead,
            "attachments_unknown": self.attachments_unknown,
            "approximate": self.approximate,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Anatomy:
        messages = data.get("messages") or {}
        return cls(
            calls=int(data.get("calls", 0)),
            system=int(data.get("system", 0)),
            messages={str(k): int(v) for k, v in messages.items()},
            tools=int(data.get("tools", 0)),
            overhead=int(data.get("overhead", 0)),
            attachments_unknown=int(data.get("attachments_unknown", 0)),
            approximate=bool(data.get("approximate", False)),
        )


def of_request(api: str, body: Mapping[str, Any], model: str | None = None) -> Anatomy:
    """The anatomy of one request body (see :func:`~pytest_tokenbudget.tokens.tokenizer.estimate_request`)."""
    return Anatomy.from_estimate(estimate_request(api, body, model))
