"""Thread-safe attribution of calls to the test (or fixture) that made them.

Attribution rule (documented in the README): a call belongs to the owner that was current when
its request *left* — the running test and phase, or a module/session-scoped fixture being set up.
The owner is process-global, not a contextvar, because a contextvar is empty in thread pools and
``run_in_executor`` and goes stale in tasks started by session-scoped async fixtures. A stream that
finishes later is still charged to the owner its request left under. A thread leaked from one test
is charged to whichever owner is current when it sends — it can be flagged, not prevented.

What happens to a call, in order (:meth:`Ledger.record`): its *pricers* set its cost, it is
tallied, its *listeners* are told at once, and its *observers* (sinks that write files) too —
except inside a running event loop, where nothing may block: there they are told at the next
:meth:`Ledger.drain`, which the plugin calls between test phases, outside any loop. A pricer,
listener or observer that fails never costs the count: the failure is kept, by the sink's name,
and reported once.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from .model import Call, CallState, Run, TestUsage

Sink = Callable[[Call], None]


def in_event_loop() -> bool:
    """True inside a running asyncio event loop (where nothing may block, BlockBuster says)."""
    asyncio = sys.modules.get("asyncio")  # never imported: no loop can be running
    return asyncio is not None and asyncio._get_running_loop() is not None


SESSION_OWNER = "<session>"


class Owner(NamedTuple):
    """Who is charged for a call: a node id (or fixture label), the phase, and its kind.

    A named tuple: three are made per test, and a tuple is made several times faster than a
    frozen dataclass."""

    nodeid: str
    phase: str
    kind: str = "test"  # test | fixture | session


_SESSION = Owner(SESSION_OWNER, "session", "session")


class Ledger:
    """Collects calls into a :class:`Run`; safe to call from any thread."""

    def __init__(self, run: Run | None = None, *, keep_calls: bool = True) -> None:
        """``keep_calls=False`` (the plugin's choice) keeps only the tallies: memory stays flat in
        the number of calls; listeners (prices, the JSONL log) still see every call."""
        self.run = run if run is not None else Run()
        self._keep_calls = keep_calls
        self._lock = threading.Lock()
        self._owner_stack: list[Owner] = []  # fixtures being set up or torn down, innermost last
        self._test_owner: Owner | None = None  # the running test and phase; None between tests
        self._calls: list[Call] = []
        self._pricers: list[tuple[str, Sink]] = []
        self._listeners: list[tuple[str, Sink]] = []
        self._observers: list[tuple[str, Sink]] = []
        self._later: deque[Callable[[], None]] = deque()  # observers' calls, deferred records
        self.failures: dict[str, list[Any]] = {}
        """Sinks that raised: name -> [times, first error text]; reported, never raised."""
        self._open_streams: dict[int, Callable[[], None]] = {}
        self._open_by_owner: dict[str, set[int]] = {}

    # -- who is running -------------------------------------------------------------------------

    @property
    def owner(self) -> Owner:
        """Who a request leaving now is charged to: the fixture being set up or torn down, else the
        running test's phase, else the session."""
        stack = self._owner_stack
        return stack[-1] if stack else self._test_owner or _SESSION

    def running(self, owner: Owner | None) -> None:
        """The test (and phase) now running, or None between tests; a pushed owner overrides it."""
        self._test_owner = owner

    def push_owner(self, owner: Owner) -> None:
        with self._lock:
            self._owner_stack.append(owner)

    def pop_owner(self, owner: Owner) -> None:
        with self._lock:
            stack = self._owner_stack
            if stack and stack[-1] is owner:  # the usual case: last in, first out
                stack.pop()
                return
            # Remove the last occurrence, tolerating out-of-order pops from misbehaving hooks.
            for index in range(len(stack) - 1, -1, -1):
                if stack[index] == owner:
                    del stack[index]
                    break

    # -- recording ------------------------------------------------------------------------------

    def add_pricer(self, pricer: Sink, name: str, *, first: bool = False) -> None:
        """``pricer(call)`` may set ``call.cost_usd`` before the call is tallied; ``first`` puts
        it ahead of those already added (a plugin's price hook before genai-prices)."""
        self._pricers.insert(0 if first else len(self._pricers), (name, pricer))

    def add_listener(self, listener: Sink, name: str = "a listener") -> None:
        """``listener(call)`` right after each call is tallied (the hard cap's spend): it must be
        quick and never block (it may run inside the code under test's event loop)."""
        self._listeners.append((name, listener))

    def add_observer(self, observer: Sink, name: str) -> None:
        """``observer(call)`` after each call is tallied (sinks that write files); inside a
        running event loop, at the next :meth:`drain`."""
        self._observers.append((name, observer))

    def later(self, work: Callable[[], None]) -> None:
        """Run ``work()`` at the next :meth:`drain` (outside any event loop)."""
        self._later.append(work)  # a deque's append is atomic: no lock on the hot path

    def drain(self) -> None:
        """Do what was left for later, in order: the observers' calls and deferred records."""
        later = self._later
        while later:  # the usual case, nothing left: no exception raised per test phase
            try:
                job = later.popleft()
            except IndexError:
                return
            job()

    def record(self, call: Call, kind: str = "test") -> None:
        """Price, tally and announce ``call``; ``kind`` is the owner's kind (test/fixture/session).

        The tally never depends on a sink: each pricer, listener and observer is guarded.
        """
        for name, pricer in self._pricers:
            self._guarded(name, pricer, call)
        self._tally(call, kind)
        for name, listener in self._listeners:
            self._guarded(name, listener, call)
        if not self._observers:
            return
        if in_event_loop():
            for name, observer in self._observers:
                self._later.append(functools.partial(self._guarded, name, observer, call))
            return
        self.drain()  # what an event loop left for later comes first: the order stays
        for name, observer in self._observers:
            self._guarded(name, observer, call)

    def _guarded(self, name: str, sink: Sink, call: Call) -> None:
        try:
            sink(call)
        except Exception as exc:  # a sink's failure is reported by name; the count stands
            with self._lock:
                failure = self.failures.get(name)
                if failure is None:
                    self.failures[name] = [1, f"{type(exc).__name__}: {exc}"]
                else:
                    failure[0] += 1

    def _tally(self, call: Call, kind: str) -> None:
        with self._lock:
            if self._keep_calls:
                self._calls.append(call)
            self.run.usage_for(call.owner, kind).add_call(call)
            if call.state != CallState.COMPLETE:
                self.run.issues.append(
                    {
                        "test": call.owner,
                        "phase": call.phase,
                        "provider": call.provider,
                        "api": call.api,
                        "model": call.model,
                        "state": call.state,
                        "detail": call.detail,
                    }
                )

    @property
    def calls(self) -> list[Call]:
        """Every call recorded so far (empty unless the ledger keeps calls)."""
        with self._lock:
            return list(self._calls)

    def usage_of(self, nodeid: str) -> TestUsage:
        """A snapshot of what ``nodeid`` used so far (an empty one if nothing)."""
        with self._lock:
            entry = self.run.tests.get(nodeid)
            snapshot = TestUsage(nodeid=nodeid)
            if entry is not None:
                snapshot.merge(entry)
            return snapshot

    # -- streams that outlive their test --------------------------------------------------------

    def stream_opened(self, owner: str, token: int, settle: Callable[[], None]) -> None:
        with self._lock:
            self._open_streams[token] = settle
            self._open_by_owner.setdefault(owner, set()).add(token)

    def stream_closed(self, owner: str, token: int) -> None:
        with self._lock:
            self._open_streams.pop(token, None)
            tokens = self._open_by_owner.get(owner)
            if tokens is not None:
                tokens.discard(token)

    def settle_streams(self, owner: str | None = None) -> None:
        """Record streams still open (for ``owner``, or all) as ``unclosed``."""
        with self._lock:
            tokens = list(self._open_streams) if owner is None else list(self._open_by_owner.pop(owner, ()))
            settles = [self._open_streams[t] for t in tokens if t in self._open_streams]
        for settle in settles:
            settle()
