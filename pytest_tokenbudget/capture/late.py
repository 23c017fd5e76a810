"""Usage that arrives later than its request: OpenAI Responses in background mode.

A background response answers its POST ``queued``/``in_progress`` with ``usage: null``; the usage
comes with ``GET /responses/{id}`` (polling) or the resumed stream. Every exchange that carries a
response names it by its id (:attr:`Extracted.key`), and this module counts each id once:

* a POST whose response is finished is recorded at once, and its id remembered;
* a POST whose response is pending is *held*: no call yet, no estimate;
* a follow-up (a poll, a resumed stream) that carries the finished response supplies the held
  call's usage — the call is recorded then, charged to the owner the POST left under, as one call
  however many polls came before; a poll of an unfinished response records nothing, and one of an
  id already counted records nothing either (the same response retrieved twice counts once);
* a follow-up carrying a finished response this module never saw (made before the plugin, or by
  an owner that has ended) is counted as a call of the follow-up's owner.

What is remembered is per owner, and dropped when the owner ends: the ledger's per-owner settling
(``stream_opened``/``settle_streams``, which the plugin runs at each test's and fixture's end) calls
:meth:`LateUsage.settle`, which records a response still held as ``pending`` — visible, not zero.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, NamedTuple

from ..model import CallState, Usage

if TYPE_CHECKING:
    from ..ledger import Ledger
    from ..providers.base import Extracted
    from .recorder import Exchange

Record = Callable[["Exchange", int, "Extracted | None", CallState, str, bool], None]
"""Records a call: (exchange, status code, extracted, state, detail, streamed)."""

MAX_KEYS_PER_OWNER = 10_000
"""Ids an owner remembers at most (an endless session-scoped loop stays bounded): the oldest go."""


class _Held(NamedTuple):
    exchange: Exchange
    status_code: int
    extracted: Extracted
    streamed: bool


class LateUsage:
    """The response ids each running owner has counted or is waiting for; thread-safe."""

    def __init__(self, ledger: Ledger, tokens: Iterator[int], record: Record) -> None:
        self._ledger = ledger
        self._tokens = tokens
        self._record = record
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}  # id -> the POST of a pending response
        self._counted: dict[str, str] = {}  # id -> the owner that counted it
        self._by_owner: dict[str, dict[str, None]] = {}  # owner -> its ids, oldest first

    def resolve(
        self,
        exchange: Exchange,
        status_code: int,
        extracted: Extracted | None,
        state: CallState,
        streamed: bool,
    ) -> Exchange | None:
        """The exchange to charge a call to now, or None when nothing is to be recorded now."""
        key = extracted.key if extracted is not None else None
        if not exchange.route.follow_up:
            if key is None or extracted is None:
                return exchange
            if not extracted.pending:
                self._remember(exchange.owner.nodeid, key, None)
                return exchange
            if state == CallState.UNCLOSED:  # settled at its owner's end: no later exchange now
                self._record_pending(_Held(exchange, status_code, extracted, streamed))
                return None
            self._remember(exchange.owner.nodeid, key, _Held(exchange, status_code, extracted, streamed))
            return None
        # A follow-up: a poll or a resumed stream. It is never a call of its own.
        if key is None or extracted is None or extracted.pending or state == CallState.FAILED:
            return None
        with self._lock:
            held = self._held.pop(key, None)
            if held is None and key in self._counted:
                return None  # counted already (by its POST or an earlier poll)
        if held is not None:
            self._remember(held.exchange.owner.nodeid, key, None)
            return held.exchange
        if extracted.usage is None:
            return None  # nothing billed that this exchange can tell
        self._remember(exchange.owner.nodeid, key, None)
        return exchange

    def settle(self, owner: str) -> None:
        """``owner`` ended: forget its ids, and record its responses still pending as such."""
        with self._lock:
            keys = self._by_owner.pop(owner, {})
            held = [h for h in (self._held.pop(k, None) for k in keys) if h is not None]
            for key in keys:
                self._counted.pop(key, None)
        for item in held:
            self._record_pending(item)

    def _remember(self, owner: str, key: str, held: _Held | None) -> None:
        """Note ``key`` as counted (``held`` None) or pending for ``owner``."""
        register = False
        displaced: list[_Held | None] = []
        with self._lock:
            keys = self._by_owner.get(owner)
            if keys is None:
                keys = self._by_owner[owner] = {}
                register = True
            keys[key] = None
            if len(keys) > MAX_KEYS_PER_OWNER:
                oldest = next(iter(keys))
                del keys[oldest]
                self._counted.pop(oldest, None)
                displaced.append(self._held.pop(oldest, None))
            if held is None:
                self._counted[key] = owner
            else:  # the same id held twice (a cassette replayed twice): both are calls
                displaced.append(self._held.get(key))
                self._held[key] = held
        if register:  # settled with the owner's streams, at its end
            self._ledger.stream_opened(owner, next(self._tokens), lambda: self.settle(owner))
        for item in displaced:
            if item is not None:
                self._record_pending(item)

    def _record_pending(self, held: _Held) -> None:
        """Record a response never seen finished: one call, no usage, no estimate, said why."""
        extracted = replace(held.extracted, usage=Usage(), key=None, pending=False)  # as is, now
        detail = f"background response {held.extracted.key} unfinished when its owner ended: usage unknown"
        self._record(held.exchange, held.status_code, extracted, CallState.PENDING, detail, held.streamed)
