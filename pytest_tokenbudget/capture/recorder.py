"""Turn what an HTTP client saw into :class:`~pytest_tokenbudget.model.Call` records.

The client wrappers (one module per HTTP stack) call :meth:`Recorder.start` before sending and
then exactly one of :meth:`Recorder.body`, :meth:`Recorder.stream` or :meth:`Recorder.failed`.
Nothing here raises into the code under test: a response the plugin cannot read becomes an
``unparsed`` call that says why.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, NamedTuple

from ..ledger import Ledger, Owner, in_event_loop
from ..model import Call, CallState, Source, Usage
from ..units import clean
from . import replay

if TYPE_CHECKING:
    from ..providers import Route
    from ..providers.base import ApiParser, EventSink, Extracted, ParseError, StreamAccumulator
    from ..providers.framing import Decoder, Framer
    from .late import LateUsage

PreflightHook = Callable[["Exchange", Any], None]
"""Called before a request leaves with (exchange, request); may raise to stop it (hard cap)."""
Observer = Callable[[Call, "Exchange"], None]
"""Called with each call and its exchange just before it is recorded (request inspection)."""
Payload = bytes | tuple[str, list[bytes]] | None
"""What was received, kept for output estimates: a body, or (framing, decoded chunks) of a stream."""

KEEP_LIMIT = 8 * 1024 * 1024
"""A stream keeps at most this many decoded bytes for an output estimate (if it reports no usage)."""
MAX_BUFFERED_BODY = 64 * 1024 * 1024
"""A JSON body read through a stream is held to find its usage up to this size, then let go."""


_capturing: ContextVar[bool] = ContextVar("tokenbudget_capturing", default=False)


class Readers(NamedTuple):
    """What reads a response: provider routing, the parsers' error, stream framing. Imported at a
    recorder's first request, not at start-up: a suite without LLM calls never needs it. Each
    recorder imports its own (an in-process pytester session drops the modules it imported: a
    later session's recorder gets fresh copies)."""

    route: Callable[[str, str, str], Route | None]
    parse_error: type[ParseError]
    decoder_for: Callable[[str], Decoder | None]
    framing_of: Callable[[str], str | None]
    sniff_framing: Callable[[bytes], str | None]
    make_framer: Callable[[EventSink, str | None], Framer]


def _load_readers() -> Readers:
    from ..providers import route
    from ..providers.base import ParseError
    from ..providers.framing import decoder_for, framing_of, make_framer, sniff_framing

    return Readers(route, ParseError, decoder_for, framing_of, sniff_framing, make_framer)


def inside_capture() -> bool:
    """True while a captured request is being sent: a nested client must not count it again.

    (LiteLLM runs an aiohttp transport under ``httpx.AsyncClient``: the call is seen at httpx.)
    """
    return _capturing.get()


def enter_capture() -> Token[bool]:
    """Mark the current context as inside a captured request; undo with :func:`leave_capture`.

    (The hot httpx path calls these directly: a generator-based context manager costs more than
    the rest of the bookkeeping around the send.)
    """
    return _capturing.set(True)


def leave_capture(token: Token[bool]) -> None:
    _capturing.reset(token)


class Exchange:
    """One request on its way: where it goes, who sent it, when."""

    __slots__ = ("owner", "replay", "request", "route", "source", "started")

    def __init__(self, route: Route, owner: Owner, request: Any = None) -> None:
        self.route = route
        self.owner = owner
        self.started = time.perf_counter()
        self.source: Source = "live"
        self.request = request  # held by reference; parsed only when an estimate needs it
        self.replay: tuple[Any, Any] | None = None  # (cassette, recorded response) under vcrpy

    def note_replay(self) -> None:
        """Remember which recorded interaction served a replayed response (same context as send)."""
        if self.source == "replayed" and self.replay is None:
            self.replay = replay.last_played()


class Recorder:
    """Shared by all HTTP-stack wrappers; records into one :class:`Ledger`."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.preflight: list[PreflightHook] = []
        self.observers: list[Observer] = []
        self.route: Callable[[str, str, str], Route | None] = self._route_first
        """Recognise a request (method, host, path); replaced when plugins add providers."""
        self._readers: Readers | None = None  # loaded at this recorder's first request
        self._tokens = itertools.count()
        self.internal_errors = 0
        """Calls the plugin failed to record because of its own bug (reported, never raised)."""
        self.first_errors: list[str] = []
        self._late: LateUsage | None = None  # made at the first response with an id to remember

    @property
    def readers(self) -> Readers:
        """What reads a response (see :class:`Readers`), imported at the first need."""
        if self._readers is None:
            self._readers = _load_readers()
        return self._readers

    def bind_readers(self) -> None:
        """Import what reads a response now (before an event loop runs), not at the first need."""
        if self._readers is None:
            self._readers = _load_readers()

    def _route_first(self, method: str, host: str, path: str) -> Route | None:
        """The built-in routing, bound at the first request: later ones go straight to it."""
        route = self.readers.route
        if self.route == self._route_first:  # unless a plugin's route replaced it meanwhile
            self.route = route
        return route(method, host, path)

    def note_internal_error(self, exc: Exception, source: str = "") -> None:
        """Keep count (and the first few messages) of an error while recording: ours, or in
        ``source`` (another plugin's hook)."""
        self.internal_errors += 1
        if len(self.first_errors) < 3:
            text = f"error in {source}: {type(exc).__name__}: {exc}" if source else _internal(exc)
            self.first_errors.append(text)

    @contextmanager
    def capturing(self) -> Iterator[None]:
        """Mark the current context as inside a captured request (see :func:`inside_capture`)."""
        token = enter_capture()
        try:
            yield
        finally:
            leave_capture(token)

    def start(self, route: Route, request: Any = None, source: Source = "live") -> Exchange:
        """A request is about to leave: note who sends it and run the preflight hooks.

        ``source`` is "mocked" when the client's transport is known to answer in-process.
        """
        self.bind_readers()  # a route from a plugin's hook (or a test) rather than ours
        replay.ensure_installed()  # vcrpy may have been imported since the last request
        exchange = Exchange(route, self.ledger.owner, request)
        exchange.source = source
        for hook in () if route.follow_up else self.preflight:  # a poll costs nothing: not capped
            try:
                hook(exchange, request)
            except Exception as exc:  # only a refusal (a BaseException: TokenBudgetExceeded) stops it
                self.note_internal_error(exc, source="a preflight hook")
        return exchange

    # -- outcomes -------------------------------------------------------------------------------

    def body(
        self, exchange: Exchange, status_code: int, body: bytes, content_type: str = "", headers: Any = None
    ) -> None:
        """A complete response body (an event stream read whole, too); ``headers`` (a mapping),
        when given, are offered to a parser that reads usage from them (Bedrock InvokeModel)."""
        exchange.note_replay()
        if status_code >= 400:
            self._record(exchange, status_code, None, CallState.FAILED, f"HTTP {status_code}")
            return
        parser = exchange.route.parser
        readers = self.readers
        try:
            framing = (
                _fixed_framing(parser) or readers.framing_of(content_type) or readers.sniff_framing(body[:64])
            )
            if framing is not None:
                accumulator = parser.stream()
                framer = readers.make_framer(accumulator, framing)
                framer.feed(body)
                framer.finish()
                extracted = accumulator.result()
                payload = (framing, [body])
                self._record_extracted(exchange, status_code, extracted, CallState.COMPLETE, True, payload)
                return
            extracted = _parse(parser, body, headers)
        except readers.parse_error as exc:
            self._record(exchange, status_code, None, CallState.UNPARSED, str(exc))
            return
        except Exception as exc:  # a bug in a parser must not fail the user's test
            self._record(exchange, status_code, None, CallState.UNPARSED, _internal(exc))
            return
        self._record_extracted(exchange, status_code, extracted, CallState.COMPLETE, payload=body)

    def parsed(
        self,
        exchange: Exchange,
        status_code: int,
        extracted: Extracted,
        *,
        streamed: bool = False,
        state: CallState = CallState.COMPLETE,
    ) -> None:
        """Usage a client library already parsed (botocore); ``state`` says how a stream ended."""
        exchange.note_replay()
        self._record_extracted(exchange, status_code, extracted, state, streamed)

    def unparsed(self, exchange: Exchange, status_code: int, exc: Exception, streamed: bool = False) -> None:
        """A response a client library handed over that the plugin failed to read: listed, not raised."""
        exchange.note_replay()
        detail = str(exc) if isinstance(exc, self.readers.parse_error) else _internal(exc)
        self._record(exchange, status_code, None, CallState.UNPARSED, detail, streamed)

    def failed(self, exchange: Exchange, exc: BaseException) -> None:
        """The request raised (connection error, timeout, a cassette miss …)."""
        self._record(exchange, 0, None, CallState.FAILED, type(exc).__name__)

    def stream(
        self,
        exchange: Exchange,
        status_code: int,
        content_type: str,
        content_encoding: str,
        headers: Any = None,
    ) -> StreamTap:
        """A tap to feed the raw bytes of a streamed response as the caller consumes them
        (``headers``: as for :meth:`body`, for a whole body read through the stream)."""
        exchange.note_replay()
        token = next(self._tokens)
        tap = StreamTap(self, exchange, status_code, content_type, content_encoding, token, headers)
        self.ledger.stream_opened(exchange.owner.nodeid, token, tap.settle)
        return tap

    # -- internals ------------------------------------------------------------------------------

    def _record_extracted(
        self,
        exchange: Exchange,
        status_code: int,
        extracted: Extracted,
        state: CallState,
        streamed: bool = False,
        payload: Payload = None,
    ) -> None:
        if extracted.usage is None and state == CallState.COMPLETE:
            state = CallState.NO_USAGE
        self._record(exchange, status_code, extracted, state, _DETAILS.get(state, ""), streamed, payload)

    def _record(
        self,
        exchange: Exchange,
        status_code: int,
        extracted: Extracted | None,
        state: CallState,
        detail: str,
        streamed: bool = False,
        payload: Payload = None,
    ) -> None:
        try:
            if exchange.route.follow_up or (extracted is not None and extracted.key is not None):
                charged = self._late_usage().resolve(exchange, status_code, extracted, state, streamed)
                if charged is None:
                    return  # pending, counted already, or a poll of nothing new
                exchange = charged
            self._record_call(exchange, status_code, extracted, state, detail, streamed, payload)
            if extracted is not None and extracted.parts:
                self._record_parts(exchange, status_code, extracted, state, streamed)
        except Exception as exc:  # a bug of ours (or of a listener) must not reach the caller's request
            self.note_internal_error(exc)

    def _late_usage(self) -> LateUsage:
        """What counts a response once across its exchanges (OpenAI background mode)."""
        if self._late is None:
            from .late import LateUsage

            self._late = LateUsage(self.ledger, self._tokens, self._record)
        return self._late

    def _record_parts(
        self, exchange: Exchange, status_code: int, extracted: Extracted, state: CallState, streamed: bool
    ) -> None:
        """The shares of one response billed on other models: tokens and cost, not calls."""
        route = exchange.route
        owner = exchange.owner
        for model, usage in extracted.parts:
            part = Call(
                owner=owner.nodeid,
                phase=owner.phase,
                provider=route.provider,
                api=route.api,
                host=route.host,
                model=clean(model),
                usage=usage,
                streamed=streamed,
                status_code=status_code,
                source=exchange.source,
                state=state,
                part=True,
            )
            self.ledger.record(part, owner.kind)

    def _record_call(
        self,
        exchange: Exchange,
        status_code: int,
        extracted: Extracted | None,
        state: CallState,
        detail: str,
        streamed: bool,
        payload: Payload,
    ) -> None:
        route = exchange.route
        owner = exchange.owner
        usage = extracted.usage if extracted is not None and extracted.usage is not None else None
        call = Call(
            owner=owner.nodeid,
            phase=owner.phase,
            provider=route.provider,
            api=route.api,
            host=route.host,
            model=clean(
                (extracted.model if extracted is not None else None)
                or route.model_hint
                or _requested_model(exchange.request)
            ),
            usage=usage or Usage(),
            streamed=streamed,
            status_code=status_code,
            source=exchange.source,
            duration_s=time.perf_counter() - exchange.started,
            state=state,
            detail=clean(detail),
        )
        gaps = getattr(extracted, "gaps", ()) if usage is not None else ()  # counts it left out
        if (usage is None or gaps) and extracted is not None and state != CallState.FAILED:
            if in_event_loop():  # the tokenizer may have to read files: not inside the loop
                self.ledger.later(lambda: self._guard(self._estimated, call, exchange, payload, gaps))
                return
            _estimate(call, exchange.request, payload, gaps)
        self._announce(call, exchange)

    def _estimated(self, call: Call, exchange: Exchange, payload: Payload, gaps: tuple[str, ...]) -> None:
        """Estimate a call that reports no usage, then record it (deferred out of an event loop)."""
        _estimate(call, exchange.request, payload, gaps)
        self._announce(call, exchange)

    def _announce(self, call: Call, exchange: Exchange) -> None:
        for observe in self.observers:
            observe(call, exchange)
        self.ledger.record(call, exchange.owner.kind)

    def _guard(self, work: Callable[..., None], *args: Any) -> None:
        try:
            work(*args)
        except Exception as exc:  # a bug of ours must not stop the other deferred work
            self.note_internal_error(exc)


_SNIFF_BYTES = 16
"""Bytes to see before telling an unlabelled body's framing (``data:`` vs ``{``)."""


class StreamTap:
    """Sees a streamed body chunk by chunk; records the call once, when the stream ends."""

    __slots__ = (
        "_accumulator",
        "_buffer",
        "_decode",
        "_error",
        "_exchange",
        "_framer",
        "_framing",
        "_head",
        "_headers",
        "_kept",
        "_kept_bytes",
        "_lock",
        "_readers",
        "_recorder",
        "_settled",
        "_status",
        "_token",
    )

    def __init__(
        self,
        recorder: Recorder,
        exchange: Exchange,
        status_code: int,
        content_type: str,
        content_encoding: str,
        token: int,
        headers: Any = None,
    ) -> None:
        self._recorder = recorder
        self._readers = readers = recorder.readers
        self._headers = headers
        self._exchange = exchange
        self._status = status_code
        self._token = token
        self._settled = False
        self._lock = threading.Lock()
        self._error = ""
        self._decode: Decoder | None = None
        self._accumulator: StreamAccumulator | None = None
        self._framer: Framer | None = None
        self._buffer: bytearray | None = None  # a non-streamed body read through stream=True
        self._framing = ""
        self._head = b""  # first bytes of a body whose headers did not say SSE or JSON, until sniffed
        self._kept: list[bytes] | None = None  # decoded chunks of a framed stream, read at its end
        self._kept_bytes = 0
        if status_code >= 400:
            self._error = f"HTTP {status_code}"  # not read: stops feed(); _finish records it as failed
            return
        try:
            self._decode = readers.decoder_for(content_encoding)
        except readers.parse_error as exc:
            self._error = str(exc)
            return
        framing = _fixed_framing(exchange.route.parser) or readers.framing_of(content_type)
        if framing is not None:
            self._start_framing(framing)
        # else (JSON or no type): decided from the first bytes; recorders strip headers, and a
        # replayed stream may be labelled application/json

    def set_content_encoding(self, content_encoding: str) -> None:
        """Decode what follows (a caller reading raw, still-encoded bytes)."""
        try:
            self._decode = self._readers.decoder_for(content_encoding)
        except self._readers.parse_error as exc:
            self._error = str(exc)

    def _start_framing(self, framing: str | None = None) -> None:
        self._accumulator = self._exchange.route.parser.stream()
        self._framer = self._readers.make_framer(self._accumulator, framing)
        self._framing = framing or self._accumulator.framing
        self._kept = []

    def feed(self, chunk: bytes) -> None:
        """Called with each raw chunk the caller receives; never raises."""
        if self._settled or self._error or not chunk:
            return
        try:
            if self._decode is not None:
                chunk = self._decode(chunk)
            kept = self._kept
            if kept is not None:  # the common case: a framed stream, read when it ends
                kept.append(chunk)
                self._kept_bytes += len(chunk)
                if self._kept_bytes > KEEP_LIMIT:
                    self._read_kept()  # too large to hold: read it as it comes from now on
            elif self._framer is not None:
                self._framer.feed(chunk)
            elif self._buffer is not None:
                if len(self._buffer) + len(chunk) > MAX_BUFFERED_BODY:
                    self._buffer = None
                    self._error = f"response body over {MAX_BUFFERED_BODY >> 20} MiB: not read for usage"
                    return
                self._buffer += chunk
            else:
                head = self._head + chunk if self._head else chunk
                if len(head) < _SNIFF_BYTES and b"\n" not in head:
                    self._head = head  # too little to tell SSE from JSON yet
                    return
                self._decide(head)
        except Exception as exc:  # bad compression or a parser bug: report, never raise
            self._error = _internal(exc) if not isinstance(exc, self._readers.parse_error) else str(exc)

    def _decide(self, head: bytes) -> None:
        """Frame or buffer the body from its first bytes (the headers did not say SSE)."""
        self._head = b""
        if self._readers.sniff_framing(head[:64]) is not None:
            self._start_framing("sse")
            self._kept.append(head)  # type: ignore[union-attr]
            self._kept_bytes += len(head)
        else:
            self._buffer = bytearray(head)

    def _read_kept(self) -> None:
        """Frame the chunks held so far and stop holding them (the output is then not estimated).

        A stream's chunks are only held — a reference each, no copy — while it runs, and read
        in one go when it ends: framing each chunk as it arrives cost the caller several times
        more, between its own work. A stream over :data:`KEEP_LIMIT` is read as it comes.
        """
        kept, self._kept = self._kept, None
        if kept and self._framer is not None:
            feed = self._framer.feed
            for chunk in kept:
                feed(chunk)

    def eof(self) -> None:
        """The stream was read to its end."""
        self._finish(CallState.COMPLETE)

    def close(self) -> None:
        """The caller closed the stream (possibly before its end)."""
        self._finish(CallState.COMPLETE)

    def settle(self) -> None:
        """The owning test ended and the stream was never closed."""
        self._finish(CallState.UNCLOSED)

    def settle_then(self, then: Callable[[], None]) -> None:
        """At the owning test's end, :meth:`settle` as usual and then call ``then`` (a wrapper's own
        clean-up, e.g. removing methods it set on the response)."""

        def settle_and_clean_up() -> None:
            try:
                self.settle()
            finally:
                then()

        self._recorder.ledger.stream_opened(self._exchange.owner.nodeid, self._token, settle_and_clean_up)

    def _finish(self, state: CallState) -> None:
        with self._lock:
            if self._settled:
                return
            self._settled = True
        if self._head and not self._error:
            try:
                self._decide(self._head)
            except Exception as exc:
                self._error = _internal(exc) if not isinstance(exc, self._readers.parse_error) else str(exc)
        recorder = self._recorder
        exchange = self._exchange
        recorder.ledger.stream_closed(exchange.owner.nodeid, self._token)
        if self._status >= 400:
            recorder._record(exchange, self._status, None, CallState.FAILED, f"HTTP {self._status}", True)
            return
        if self._error:
            recorder._record(exchange, self._status, None, CallState.UNPARSED, self._error, True)
            return
        try:
            if self._framer is not None and self._accumulator is not None:
                kept = self._kept
                self._read_kept()
                self._framer.finish()
                extracted = self._accumulator.result()
                if not self._accumulator.done and state == CallState.COMPLETE:
                    state = CallState.CLOSED_EARLY
                if extracted.usage is None and state == CallState.COMPLETE:
                    state = CallState.NO_USAGE
                payload = (self._framing, kept) if kept is not None else None
                recorder._record_extracted(exchange, self._status, extracted, state, True, payload)
                return
            if self._buffer is None:
                recorder._record(exchange, self._status, None, CallState.NO_USAGE, "empty body", True)
                return
            body = bytes(self._buffer)
            extracted = _parse(exchange.route.parser, body, self._headers)
        except self._readers.parse_error as exc:
            recorder._record(exchange, self._status, None, CallState.UNPARSED, str(exc), True)
            return
        except Exception as exc:
            recorder._record(exchange, self._status, None, CallState.UNPARSED, _internal(exc), True)
            return
        recorder._record_extracted(exchange, self._status, extracted, state, payload=body)


def _fixed_framing(parser: ApiParser) -> str | None:
    """The framing an API always answers in (Bedrock streams: the AWS event stream), if it has one."""
    return getattr(parser, "framing", None)


def _parse(parser: ApiParser, body: bytes, headers: Any) -> Extracted:
    """A whole body's usage: from the response headers where the parser reads them and they
    carry it (Bedrock InvokeModel's token counts), else from the body."""
    if headers is not None:
        read_headers = getattr(parser, "parse_headers", None)
        if read_headers is not None:
            extracted: Extracted | None = read_headers(headers)
            if extracted is not None:
                return extracted
    return parser.parse(body)


def _estimate(call: Call, request: Any, payload: Payload, gaps: tuple[str, ...] = ()) -> None:
    """Fill a call that reports no usage (or left ``gaps`` in it) with estimates, or mark it
    unmetered; never raises."""
    from ..tokens.estimates import fill

    try:
        fill(call, request, payload, gaps)
    except Exception as exc:  # a bug in the estimator must not fail the user's test
        if not gaps:  # a call that reported some usage keeps it
            call.state = CallState.UNMETERED
        call.detail = _internal(exc)


_DETAILS = {
    CallState.CLOSED_EARLY: "stream closed before its final event",
    CallState.UNCLOSED: "stream never closed; settled at teardown",
    CallState.NO_USAGE: "response reports no usage",
}


def _requested_model(request: Any) -> str:
    """The model the request asked for: for responses that do not name theirs (AI21, Cohere v1)."""
    if request is None:
        return "unknown"
    from ..request_body import request_json

    body = request_json(request)
    model = body.get("model") if body is not None else None
    return model if isinstance(model, str) and model else "unknown"


def _internal(exc: Exception) -> str:
    return f"internal error in pytest-tokenbudget: {type(exc).__name__}: {exc}"
