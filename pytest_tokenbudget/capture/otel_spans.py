"""``gen_ai`` spans of the code under test as a capture source (``ingest-otel = true``).

Code under test instrumented with OpenTelemetry's GenAI conventions (the official
``opentelemetry-instrumentation-openai-v2``, OpenLLMetry, OpenInference, Logfire, a span of its
own around a local model) ends each model call as a span carrying ``gen_ai.usage.*``. This span
processor, attached to the active tracer provider (an SDK provider is installed when there is
none), counts such a span as a call of the test that was running when the span started, with
``source = "otel"`` — unless the plugin counted that call already at the HTTP layer, which also
knows its cache and reasoning split. How a span and a captured request are matched:

1. **Context** (exact). A captured request, as it leaves, looks at the OpenTelemetry context it
   is sent in: the span current there and each of its ancestors are *covered*. Instrumentations
   wrap the SDK method in a current span and the request leaves inside it — in the same thread,
   or in a task or thread that copied the context — so two calls in flight never mix.
2. **Lifetime** (for spans made outside the request's context: a library that emits its spans
   afterwards, from a callback, with explicit times). A span whose lifetime holds the departure of
   a captured request of the same test that no span claimed yet claims that request.
3. **Innermost wins.** A span that ends covered or counted covers its parent: an agent's span
   summing its model calls, or a framework's span around an instrumented SDK call, is not counted
   again.

It trusts the instrumentation's numbers, so it is opt-in. What it did is kept in :attr:`stats`
(``meta.otel_ingest`` in the run artifact).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from ..model import Call, CallState, Usage
from ..units import clean

if TYPE_CHECKING:
    from ..ledger import Ledger, Owner
    from .recorder import Exchange

SOURCE: Final = "otel"
"""``Call.source`` of a call counted from a span."""
RECENT_REQUESTS: Final = 4096
"""Captured requests remembered for the lifetime match (2): the last few thousand are plenty."""

# ``gen_ai.provider.name`` (and the older ``gen_ai.system``) values → the plugin's provider names,
# by which calls are priced and grouped; other values are kept as they are.
_PROVIDERS: Final = {
    "azure.ai.openai": "azure",
    "az.ai.openai": "azure",
    "aws.bedrock": "bedrock",
    "gcp.gemini": "gemini",
    "gemini": "gemini",
    "gcp.gen_ai": "gemini",
    "gcp.vertex_ai": "google-vertex",
    "vertex_ai": "google-vertex",
    "mistral_ai": "mistral",
    "x_ai": "xai",
}


class _Open:
    """A span that has started and not ended: who it is charged to, its parent, whether covered."""

    __slots__ = ("covered", "owner", "parent")

    def __init__(self, owner: Owner, parent: int | None) -> None:
        self.owner = owner
        self.parent = parent
        self.covered = False


class SpanIngest:
    """A span processor (the SDK's ``SpanProcessor`` interface) counting ``gen_ai`` spans."""

    def __init__(self, ledger: Ledger) -> None:
        from opentelemetry import trace

        self._current_span = trace.get_current_span
        self._ledger = ledger
        self._lock = threading.Lock()
        self._open: dict[int, _Open] = {}
        self._requests: deque[list[Any]] = deque(maxlen=RECENT_REQUESTS)  # [test, sent at (ns), claimed]
        self.closed = False
        self.stats: dict[str, Any] = {"spans": 0, "counted": 0, "already_counted": 0, "tests": {}}
        """gen_ai spans with usage seen; counted as calls here; already counted (at the HTTP layer, or
        by an inner span); calls counted here by test."""

    # -- the span processor ---------------------------------------------------------------------

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if self.closed:
            return
        parent = span.parent
        entry = _Open(self._ledger.owner, parent.span_id if parent is not None else None)
        with self._lock:
            self._open[span.get_span_context().span_id] = entry

    def _on_ending(self, span: Any) -> None:
        return

    def on_end(self, span: Any) -> None:
        with self._lock:
            entry = self._open.pop(span.get_span_context().span_id, None)
        if entry is None or self.closed:
            return
        attributes = span.attributes or {}
        usage = _usage(attributes)
        if usage is None:
            return
        start, end = int(span.start_time or 0), int(span.end_time or 0)
        with self._lock:
            self.stats["spans"] += 1
            already_counted = entry.covered or self._claim(entry.owner.nodeid, start, end)
            parent = self._open.get(entry.parent) if entry.parent is not None else None
            if parent is not None:  # innermost wins: its parent stands for this call too
                parent.covered = True
            if already_counted:
                self.stats["already_counted"] += 1
                return
            self.stats["counted"] += 1
            tests = self.stats["tests"]
            tests[entry.owner.nodeid] = tests.get(entry.owner.nodeid, 0) + 1
        self._ledger.record(_call(entry.owner, attributes, usage, start, end, span), entry.owner.kind)

    def shutdown(self) -> None:
        self.closed = True

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    # -- the HTTP side --------------------------------------------------------------------------

    def request_leaving(self, exchange: Exchange, request: Any) -> None:
        """A recorder preflight hook: cover the spans open in the context this request leaves in."""
        if self.closed:
            return
        context = self._current_span().get_span_context()
        with self._lock:
            span_id: int | None = context.span_id if context.is_valid else None
            claimed = False
            while span_id is not None:
                entry = self._open.get(span_id)
                if entry is None:
                    break
                entry.covered = claimed = True
                span_id = entry.parent
            self._requests.append([exchange.owner.nodeid, time.time_ns(), claimed])

    def _claim(self, nodeid: str, start: int, end: int) -> bool:
        """Claim the latest unclaimed request of ``nodeid`` sent within [start, end] (lock held)."""
        for request in reversed(self._requests):
            if request[1] < start:
                break  # older ones left before the span started
            if not request[2] and request[0] == nodeid and request[1] <= end:
                request[2] = True
                return True
        return False


def install(ledger: Ledger) -> SpanIngest:
    """Attach a :class:`SpanIngest` to the global tracer provider; install an SDK provider first
    when there is none (OpenTelemetry allows one per process: one set later is refused)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    provider: Any = trace.get_tracer_provider()
    if not hasattr(provider, "add_span_processor"):  # the API's proxy: nothing set yet
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    if not hasattr(provider, "add_span_processor"):
        raise RuntimeError(f"the tracer provider in use ({type(provider).__name__}) takes no span processor")
    ingest = SpanIngest(ledger)
    provider.add_span_processor(ingest)
    return ingest


def has_sdk_provider() -> bool:
    """A tracer provider a processor can be attached to is set already."""
    from opentelemetry import trace

    return hasattr(trace.get_tracer_provider(), "add_span_processor")


# -- reading a span -------------------------------------------------------------------------------


def _usage(attributes: Mapping[str, Any]) -> Usage | None:
    """The ``gen_ai.usage.*`` of a span in the plugin's meaning (input includes cached and
    cache-write tokens, output includes reasoning); None when the span reports no usage."""
    input_tokens = _count(attributes, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
    output_tokens = _count(attributes, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
    if input_tokens is None and output_tokens is None:
        return None
    cached = _count(
        attributes, "gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens"
    )
    written = _count(
        attributes, "gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_creation_input_tokens"
    )
    reasoning = _count(attributes, "gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens")
    input_tokens, output_tokens = input_tokens or 0, output_tokens or 0
    cached, written, reasoning = cached or 0, written or 0, reasoning or 0
    if cached + written > input_tokens:  # an instrumentation that reports input without the cache
        input_tokens += cached + written
    if reasoning > output_tokens:
        output_tokens += reasoning
    return Usage(input_tokens, cached, written, output_tokens, reasoning)


def _count(attributes: Mapping[str, Any], *names: str) -> int | None:
    for name in names:
        value = attributes.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**12:
            return value
        if isinstance(value, float) and value.is_integer() and 0 <= value < 10**12:
            return int(value)
    return None


def _call(owner: Owner, attributes: Mapping[str, Any], usage: Usage, start: int, end: int, span: Any) -> Call:
    """The span as a :class:`Call` of ``owner`` (names only: never the span's messages)."""
    provider = str(attributes.get("gen_ai.provider.name") or attributes.get("gen_ai.system") or SOURCE)
    model = attributes.get("gen_ai.response.model") or attributes.get("gen_ai.request.model") or "unknown"
    operation = str(attributes.get("gen_ai.operation.name") or "chat")
    failed = getattr(getattr(span, "status", None), "status_code", None)
    return Call(
        owner=owner.nodeid,
        phase=owner.phase,
        provider=clean(_PROVIDERS.get(provider, provider)),
        api=clean(f"{SOURCE}.{operation}"),
        host=clean(str(attributes.get("server.address") or "")),
        model=clean(str(model)),
        usage=usage,
        source=SOURCE,
        duration_s=max(end - start, 0) / 1e9,
        state=CallState.FAILED if getattr(failed, "name", "") == "ERROR" else CallState.COMPLETE,
        detail=clean(str(attributes.get("error.type") or "")),
    )
