"""The data model: token usage, one LLM call, per-test tallies and a whole run.

One meaning everywhere (documented in the README):

* ``input_tokens``   all input, including cached reads and cache writes;
* ``cached_input_tokens`` and ``cache_write_tokens`` are parts of ``input_tokens``;
* ``output_tokens``  all output, including reasoning/thinking;
* ``reasoning_tokens`` is a part of ``output_tokens``;
* ``total_tokens`` = input + output.

Everything here is plain Python: the pytest plugin, the CLI and the reports share it.
"""

from __future__ import annotations

import dataclasses
import gc
import heapq
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Final, Literal, TypedDict

SCHEMA_VERSION: Final = 1
_NOTHING: Final[Mapping[str, Any]] = MappingProxyType({})
"""Version of the JSON run artifact layout; bumped on any incompatible change."""

USAGE_FIELDS: Final = (
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
)

PHASES: Final = ("setup", "call", "teardown")

BUILTIN_MARKERS: Final = frozenset(
    {"parametrize", "usefixtures", "filterwarnings", "skip", "skipif", "xfail", "tryfirst", "trylast"}
)
"""pytest's own markers: no grouping of tests a team chose, so not a breakdown of their own."""


class ArtifactError(ValueError):
    """A run artifact (or baseline) that cannot be read: says what is wrong and where."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one call or of many; immutable, additive."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def uncached_input_tokens(self) -> int:
        """Input billed at the plain input rate (neither a cache read nor a cache write)."""
        return self.input_tokens - self.cached_input_tokens - self.cache_write_tokens

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            self.input_tokens + other.input_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.output_tokens + other.output_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )

    def __bool__(self) -> bool:
        return bool(self.input_tokens or self.output_tokens)

    def to_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "output_tokens": self.output_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "total_tokens": self.total_tokens,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Usage:
        return cls(*(_int(data, name) for name in USAGE_FIELDS))


ZERO: Final = Usage()


class CallState:
    """How a call ended, as far as the plugin could see (plain strings in the artifact)."""

    COMPLETE = "complete"  # usage found (a stream saw its terminal event)
    CLOSED_EARLY = "closed-early"  # the caller closed a stream before its terminal event
    UNCLOSED = "unclosed"  # a stream never closed; settled at the test's teardown
    NO_USAGE = "no-usage"  # a well-formed response that reports no usage
    UNPARSED = "unparsed"  # the plugin could not read the response
    UNMETERED = "unmetered"  # no usage reported and the request could not be estimated either
    FAILED = "failed"  # the request raised or the server answered with an error status
    PENDING = "pending"  # a background response that had not finished when its owner ended


@dataclass(slots=True)
class Call:
    """One LLM API call as captured: who made it, what it was, what it cost."""

    owner: str  # test node id, or "<fixture …>" / "<session>" for calls outside tests
    phase: str  # setup | call | teardown (or "session" outside tests)
    provider: str  # e.g. openai, azure, anthropic, groq, openai-compatible
    api: str  # e.g. openai.chat, openai.responses, openai.embeddings, anthropic.messages
    host: str
    model: str
    usage: Usage = ZERO
    streamed: bool = False
    status_code: int = 0
    source: str = "live"  # live | replayed (a vcr cassette) | mocked (MockTransport, pytest-httpx)
    duration_s: float = 0.0
    state: str = CallState.COMPLETE
    estimated: bool = False
    cost_usd: float | None = None  # None: price unknown (never shown as $0)
    detail: str = ""  # why unparsed / failed; never request or response text
    part: bool = False
    """An extra per-model share of a request another Call already counts (an Anthropic
    ``usage.iterations`` entry on another model, e.g. the advisor's): its tokens and cost are
    tallied under its own model, but it is not a call of its own."""

    def to_dict(self) -> dict[str, Any]:
        extra = {"part": True} if self.part else {}
        return {
            "test": self.owner,
            "phase": self.phase,
            "provider": self.provider,
            "api": self.api,
            "host": self.host,
            "model": self.model,
            **self.usage.to_dict(),
            "cost_usd": self.cost_usd,
            "streamed": self.streamed,
            "status_code": self.status_code,
            "source": self.source,
            "estimated": self.estimated,
            "state": self.state,
            "duration_s": round(self.duration_s, 6),
            "detail": self.detail,
            **extra,
        }


@dataclass(slots=True)
class Caveats:
    """Counts of calls whose numbers come with a caveat — zero in almost every tally, so a tally
    holds these only once one is not (``Tally.caveats``)."""

    unpriced_calls: int = 0  # calls with tokens but no price: the cost is a lower bound
    manual_calls: int = 0  # recorded by hand with token_usage.record (neither live nor replayed)
    estimated_calls: int = 0
    unparsed_calls: int = 0
    failed_calls: int = 0
    unmetered_calls: int = 0

    def merge(self, other: Caveats) -> None:
        self.unpriced_calls += other.unpriced_calls
        self.manual_calls += other.manual_calls
        self.estimated_calls += other.estimated_calls
        self.unparsed_calls += other.unparsed_calls
        self.failed_calls += other.failed_calls
        self.unmetered_calls += other.unmetered_calls


CAVEAT_FIELDS: Final = tuple(f.name for f in dataclasses.fields(Caveats))


@dataclass(slots=True)
class Tally:
    """A running sum over calls: tokens, cost, and the counts that qualify them.

    Compact because a run holds a few per test (20,000 tests …): token sums are plain ints, not a
    :class:`Usage`, and the rarely non-zero counts live in ``caveats``, made on first need.
    """

    calls: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0  # sum over priced calls only
    live_calls: int = 0
    live_cost_usd: float = 0.0
    replayed_calls: int = 0
    caveats: Caveats | None = None

    @property
    def usage(self) -> Usage:
        return Usage(
            self.input_tokens,
            self.cached_input_tokens,
            self.cache_write_tokens,
            self.output_tokens,
            self.reasoning_tokens,
        )

    @property
    def unpriced_calls(self) -> int:
        return self.caveats.unpriced_calls if self.caveats else 0

    @property
    def manual_calls(self) -> int:
        return self.caveats.manual_calls if self.caveats else 0

    @property
    def estimated_calls(self) -> int:
        return self.caveats.estimated_calls if self.caveats else 0

    @property
    def unparsed_calls(self) -> int:
        return self.caveats.unparsed_calls if self.caveats else 0

    @property
    def failed_calls(self) -> int:
        return self.caveats.failed_calls if self.caveats else 0

    @property
    def unmetered_calls(self) -> int:
        return self.caveats.unmetered_calls if self.caveats else 0

    def _caveats(self) -> Caveats:
        if self.caveats is None:
            self.caveats = Caveats()
        return self.caveats

    def add_call(self, call: Call) -> None:
        if call.part:
            self._add_part(call)
            return
        self.calls += 1
        usage = call.usage
        if usage is not ZERO:
            self.input_tokens += usage.input_tokens
            self.cached_input_tokens += usage.cached_input_tokens
            self.cache_write_tokens += usage.cache_write_tokens
            self.output_tokens += usage.output_tokens
            self.reasoning_tokens += usage.reasoning_tokens
        if call.cost_usd is None:
            if call.usage:
                self._caveats().unpriced_calls += 1
        else:
            self.cost_usd += call.cost_usd
        if call.source == "live":
            self.live_calls += 1
            if call.cost_usd is not None:
                self.live_cost_usd += call.cost_usd
        elif call.source == "replayed":
            self.replayed_calls += 1
        elif call.source == "manual":
            self._caveats().manual_calls += 1
        if call.estimated:
            self._caveats().estimated_calls += 1
        if call.state == CallState.UNPARSED:
            self._caveats().unparsed_calls += 1
        elif call.state == CallState.UNMETERED:
            self._caveats().unmetered_calls += 1
        elif call.state == CallState.FAILED:
            self._caveats().failed_calls += 1

    def _add_part(self, call: Call) -> None:
        """Tokens and cost of a :attr:`Call.part`, which is not a call of its own."""
        usage = call.usage
        self.input_tokens += usage.input_tokens
        self.cached_input_tokens += usage.cached_input_tokens
        self.cache_write_tokens += usage.cache_write_tokens
        self.output_tokens += usage.output_tokens
        self.reasoning_tokens += usage.reasoning_tokens
        if call.cost_usd is None:
            if usage:
                self._caveats().unpriced_calls += 1  # the cost is a lower bound
            return
        self.cost_usd += call.cost_usd
        if call.source == "live":
            self.live_cost_usd += call.cost_usd

    def merge(self, other: Tally) -> None:
        self.calls += other.calls
        self.input_tokens += other.input_tokens
        self.cached_input_tokens += other.cached_input_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.output_tokens += other.output_tokens
        self.reasoning_tokens += other.reasoning_tokens
        self.cost_usd += other.cost_usd
        self.live_calls += other.live_calls
        self.live_cost_usd += other.live_cost_usd
        self.replayed_calls += other.replayed_calls
        if other.caveats:
            self._caveats().merge(other.caveats)

    def copy(self) -> Tally:
        """An independent copy (its own caveats)."""
        return dataclasses.replace(self, caveats=dataclasses.replace(self.caveats) if self.caveats else None)

    @property
    def cost_known(self) -> bool:
        """False when any call with tokens had no price: the cost is then a lower bound."""
        return self.unpriced_calls == 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "output_tokens": self.output_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
            "cost_usd": _money(self.cost_usd),
            "cost_known": self.cost_known,
            "unpriced_calls": self.unpriced_calls,
            "live_calls": self.live_calls,
            "live_cost_usd": _money(self.live_cost_usd),
            "replayed_calls": self.replayed_calls,
            "replayed_cost_usd": _money(self.cost_usd - self.live_cost_usd),  # replayed + mocked
            "manual_calls": self.manual_calls,
            "estimated_calls": self.estimated_calls,
            "unparsed_calls": self.unparsed_calls,
            "failed_calls": self.failed_calls,
            "unmetered_calls": self.unmetered_calls,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tally:
        caveats = Caveats(*(_int(data, name) for name in CAVEAT_FIELDS))
        return cls(
            calls=_int(data, "calls"),
            input_tokens=_int(data, "input_tokens"),
            cached_input_tokens=_int(data, "cached_input_tokens"),
            cache_write_tokens=_int(data, "cache_write_tokens"),
            output_tokens=_int(data, "output_tokens"),
            reasoning_tokens=_int(data, "reasoning_tokens"),
            cost_usd=_float(data, "cost_usd"),
            live_calls=_int(data, "live_calls"),
            live_cost_usd=_float(data, "live_cost_usd"),
            replayed_calls=_int(data, "replayed_calls"),
            caveats=caveats if caveats != _NO_CAVEATS else None,
        )

    @classmethod
    def of(cls, calls: Iterable[Call]) -> Tally:
        tally = cls()
        for call in calls:
            tally.add_call(call)
        return tally


_NO_CAVEATS: Final = Caveats()


_KEYS: dict[str, str] = {}


def model_key(provider: str, model: str) -> str:
    """The key of a per-model breakdown: ``provider/model`` (one string object per key, shared by
    every test's breakdown: a run holds few models and many tests)."""
    key = f"{provider}/{model}"
    return _KEYS.setdefault(key, key)


@dataclass(slots=True)
class TestUsage:
    """Everything one test (or one fixture / the session, for calls outside tests) used."""

    __test__: ClassVar[bool] = False  # pytest: not a test class, whatever its name

    nodeid: str
    kind: str = "test"  # test | fixture | session
    path: str = ""  # file of the test, relative to rootdir, when known
    line: int | None = None  # 1-based line of the test function, when known
    outcome: str = ""  # passed | failed | skipped | error (pytest's word), when known
    total: Tally = field(default_factory=Tally)
    # Per phase: while every call came from one phase (most tests), that phase's name is in
    # ``phase`` and its tally is ``total`` itself; ``phases`` holds tallies once there are two.
    phase: str = ""
    phases: Mapping[str, Tally] = field(default_factory=lambda: _NOTHING)
    models: dict[str, Tally] = field(default_factory=dict)  # keyed by model_key()
    markers: tuple[str, ...] = ()  # marker names on the test, for marker-scoped budgets
    # Request inspection (inspector.py), estimated from request bodies; empty when not measured.
    # Shared empty placeholders until written through own_anatomy() / own_context() / own_stale():
    # most tests never get any, and three empty containers a test add up over 20,000 tests.
    anatomy: Mapping[str, int] = field(default_factory=lambda: _NOTHING)  # input tokens by part
    context: Mapping[str, Any] = field(default_factory=lambda: _NOTHING)  # largest context share
    stale: Sequence[dict[str, Any]] = ()  # stale cassettes this test replayed

    def own_anatomy(self) -> dict[str, int]:
        if not isinstance(self.anatomy, dict):
            self.anatomy = {}
        return self.anatomy

    def own_context(self) -> dict[str, Any]:
        if not isinstance(self.context, dict):
            self.context = {}
        return self.context

    def own_stale(self) -> list[dict[str, Any]]:
        if not isinstance(self.stale, list):
            self.stale = []
        return self.stale

    def phase_tallies(self) -> Mapping[str, Tally]:
        """Tallies by phase (setup / call / teardown)."""
        return {self.phase: self.total} if self.phase else self.phases

    def add_call(self, call: Call) -> None:
        """Tally ``call``. While a test has used one phase (or one model), that breakdown is the
        very ``total`` object — most tests use one of each: a tally and a dict saved per test —
        and it gets its own copy when a second phase (model) appears."""
        total = self.total
        if call.phase != self.phase:
            if not total.calls and not self.phases:
                self.phase = call.phase
            else:
                phases = self._own_phases()
                phase = phases.get(call.phase)
                if phase is None:
                    phase = phases[call.phase] = Tally()
                phase.add_call(call)
        key = model_key(call.provider, call.model)
        per_model = self.models.get(key)
        if per_model is None:
            per_model = self._new_part(self.models, key)
        total.add_call(call)
        if per_model is not total:
            per_model.add_call(call)

    def _own_phases(self) -> dict[str, Tally]:
        """``phases`` as a dict of its own, holding a copy of ``total`` for the one phase so far."""
        if not isinstance(self.phases, dict):
            self.phases = {self.phase: self.total.copy()} if self.phase else {}
            self.phase = ""
        return self.phases

    def _new_part(self, breakdown: dict[str, Tally], name: str) -> Tally:
        total = self.total
        if not breakdown and not total.calls:
            breakdown[name] = total
            return total
        for other, tally in breakdown.items():
            if tally is total:
                breakdown[other] = total.copy()
        tally = breakdown[name] = Tally()
        return tally

    def _unshare(self) -> None:
        """Give the model breakdown its own tallies (see :meth:`add_call`)."""
        total = self.total
        for name, tally in self.models.items():
            if tally is total:
                self.models[name] = total.copy()

    def merge(self, other: TestUsage) -> None:
        self._unshare()
        other_phases = other.phase_tallies()
        if self.phase and other_phases.keys() <= {self.phase}:
            pass  # still one phase: ``total`` holds it
        elif not self.total.calls and not self.phases and len(other_phases) == 1:
            self.phase = next(iter(other_phases))
        elif other_phases:
            phases = self._own_phases()
            for name, tally in other_phases.items():
                phases.setdefault(name, Tally()).merge(tally)
        self.total.merge(other.total)
        for key, tally in other.models.items():
            self.models.setdefault(key, Tally()).merge(tally)
        self.outcome = other.outcome or self.outcome
        self.path = self.path or other.path
        self.line = self.line if self.line is not None else other.line
        self.markers = self.markers or other.markers
        if other.anatomy:
            self.anatomy = merge_anatomy(self.anatomy, other.anatomy)
        if other.context.get("max", -1.0) > self.context.get("max", -1.0):
            warned = self.context.get("warned_calls", 0) + other.context.get("warned_calls", 0)
            self.context = {**other.context, "warned_calls": warned}
        elif other.context:
            context = self.own_context()
            context["warned_calls"] = context.get("warned_calls", 0) + other.context.get("warned_calls", 0)
        if other.stale:
            stale = self.own_stale()
            stale.extend(s for s in other.stale if s not in stale)

    def to_dict(self) -> dict[str, Any]:
        head: dict[str, Any] = {
            "kind": self.kind,
            "path": self.path,
            "line": self.line,
            "outcome": self.outcome,
        }
        if self.markers:
            head["markers"] = list(self.markers)
        if not self.total.calls:
            return {**head, "calls": 0}  # compact: most tests of a suite call no LLM
        return {
            **head,
            **self.total.to_dict(),
            "phases": {name: tally.to_dict() for name, tally in sorted(self.phase_tallies().items())},
            "models": {key: self.models[key].to_dict() for key in sorted(self.models)},
            **({"anatomy": dict(sorted(self.anatomy.items()))} if self.anatomy else {}),
            **({"context": dict(self.context)} if self.context else {}),
            **({"stale": list(self.stale)} if self.stale else {}),
        }

    @classmethod
    def from_dict(cls, nodeid: str, data: Mapping[str, Any]) -> TestUsage:
        anatomy = _mapping(data, "anatomy")
        total = Tally.from_dict(data)
        phases = {str(k): Tally.from_dict(v) for k, v in _mapping(data, "phases").items()}
        single = len(phases) == 1 and next(iter(phases.values())) == total  # kept compact
        return cls(
            nodeid=nodeid,
            kind=str(data.get("kind", "test")),
            path=str(data.get("path") or ""),
            line=data.get("line") if isinstance(data.get("line"), int) else None,
            outcome=str(data.get("outcome") or ""),
            total=total,
            phase=next(iter(phases)) if single else "",
            phases=_NOTHING if single or not phases else phases,
            models={k: Tally.from_dict(v) for k, v in _mapping(data, "models").items()},
            markers=tuple(str(m) for m in data.get("markers") or ()),
            anatomy={str(k): _int(anatomy, k) for k in anatomy} or _NOTHING,
            context=dict(_mapping(data, "context")) or _NOTHING,
            stale=[dict(s) for s in data.get("stale") or ()] or (),
        )


class Status:
    """A verdict's status (plain strings in the artifact)."""

    OK = "ok"
    WARN = "warn"  # approaching the limit (>= warn-at), or exceeded in warn mode
    EXCEEDED = "exceeded"
    UNKNOWN = "unknown"  # cannot be judged (e.g. a cost budget over calls with no price)


INSPECTION_KINDS: Final = frozenset({"unmetered", "context-window", "request-part", "stale-cassette"})
"""Kinds of the verdicts of request inspection (inspector.py), which the summary shows apart."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """One evaluated limit: a budget (marker, scoped, session) or a baseline threshold."""

    name: str  # stable id, e.g. "session", "marker tests/test_x.py::test_a", "scope agents/*"
    kind: str  # marker | test-default | scope | session | baseline | unmetered …
    metric: str  # total_tokens | input_tokens | output_tokens | cost_usd | calls | …
    limit: float
    actual: float
    status: str  # a Status value
    message: str = ""  # one sentence with the numbers, as shown to people
    nodeid: str = ""  # the test it is about, when it is about one
    path: str = ""  # file and line to point annotations at
    line: int | None = None

    @property
    def overshoot(self) -> float | None:
        """How far over the limit, as a fraction (0.25 = 25 % over); None when the limit is 0."""
        return (self.actual - self.limit) / self.limit if self.limit else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "metric": self.metric,
            "limit": self.limit,
            "actual": self.actual,
            "status": self.status,
            "message": self.message,
            "nodeid": self.nodeid,
            "path": self.path,
            "line": self.line,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        line = data.get("line")
        return cls(
            name=str(data["name"]),
            kind=str(data["kind"]),
            metric=str(data["metric"]),
            limit=float(data["limit"]),
            actual=float(data["actual"]),
            status=str(data["status"]),
            message=str(data.get("message", "")),
            nodeid=str(data.get("nodeid", "")),
            path=str(data.get("path", "")),
            line=line if isinstance(line, int) else None,
        )


class _Aggregates(TypedDict, total=False):
    """What :meth:`Run.finished` keeps: each key once computed."""

    totals: Tally
    models: dict[str, Tally]
    files: dict[str, Tally]
    markers: dict[str, Tally]


@dataclass(slots=True)
class Run:
    """A whole session: metadata plus usage per test. The JSON artifact is its serialisation."""

    meta: dict[str, Any] = field(default_factory=dict)
    tests: dict[str, TestUsage] = field(default_factory=dict)  # keyed by node id; also fixtures
    issues: list[dict[str, Any]] = field(default_factory=list)  # unparsed / failed / unclosed calls
    verdicts: list[Verdict] = field(default_factory=list)  # budget and baseline verdicts
    comparison: dict[str, Any] | None = None  # baseline.Comparison.to_dict(), when compared
    # Inside ``finished()``: totals and models, computed once for every report (see there).
    _aggregates: _Aggregates | None = field(default=None, init=False, repr=False, compare=False)

    @contextmanager
    def finished(self) -> Iterator[Run]:
        """A block in which the tallies do not change (judging a finished run, writing its reports):
        :meth:`totals` and :meth:`models` are computed once in it, not once per report — each is a
        pass over every test (0.1 s at 100,000 calls).

        Python's cyclic garbage collector is held off in it: the reports make a few objects per
        test and hold none in cycles (reference counting frees them), yet each full collection
        they set off scans the session's whole heap — 0.2–0.28 s of the 1.3 s after the loop at
        20,000 tests. It runs again, as before, when the block ends.
        """
        if self._aggregates is not None:  # nested: the outer block does both
            yield self
            return
        self._aggregates = {}
        collecting = gc.isenabled()
        gc.disable()
        try:
            yield self
        finally:
            self._aggregates = None
            if collecting:
                gc.enable()

    def usage_for(self, nodeid: str, kind: str = "test") -> TestUsage:
        entry = self.tests.get(nodeid)
        if entry is None:
            entry = self.tests[nodeid] = TestUsage(nodeid=nodeid, kind=kind)
        return entry

    def iter_tests(self) -> Iterator[TestUsage]:
        """Entries that are tests (not fixtures or the session)."""
        return (t for t in self.tests.values() if t.kind == "test")

    def totals(self) -> Tally:
        cached = self._aggregates.get("totals") if self._aggregates is not None else None
        if cached is not None:
            return cached.copy()
        tally = Tally()
        for entry in self.tests.values():
            tally.merge(entry.total)
        if self._aggregates is not None:
            self._aggregates["totals"] = tally.copy()
        return tally

    def models(self) -> dict[str, Tally]:
        cached = self._aggregates.get("models") if self._aggregates is not None else None
        if cached is not None:
            return {key: tally.copy() for key, tally in cached.items()}
        merged: dict[str, Tally] = {}
        for entry in self.tests.values():
            for key, tally in entry.models.items():
                merged.setdefault(key, Tally()).merge(tally)
        models = dict(sorted(merged.items()))
        if self._aggregates is not None:
            self._aggregates["models"] = {key: tally.copy() for key, tally in models.items()}
        return models

    def providers(self, models: Mapping[str, Tally] | None = None) -> dict[str, Tally]:
        """Per provider; from ``models`` when the caller has them already (they cost a pass)."""
        merged: dict[str, Tally] = {}
        for key, tally in (self.models() if models is None else models).items():
            merged.setdefault(key.split("/", 1)[0], Tally()).merge(tally)
        return dict(sorted(merged.items()))

    # -- breakdowns per file and per marker (issue 25) ----------------------------------------------

    def files(self) -> dict[str, Tally]:
        """Tests' usage summed per test file (fixtures and the session have no file: left out)."""
        return self._breakdown("files")

    def markers(self) -> dict[str, Tally]:
        """Tests' usage summed per marker name; a test with two markers counts under both, and
        pytest's own markers (parametrize, skipif, …) are left out."""
        return self._breakdown("markers")

    def _breakdown(self, kind: Literal["files", "markers"]) -> dict[str, Tally]:
        """``files`` or ``markers``: a pass over every test, once inside :meth:`finished`."""
        aggregates = self._aggregates
        cached = aggregates.get(kind) if aggregates is not None else None
        if cached is not None:
            return {key: tally.copy() for key, tally in cached.items()}
        merged: dict[str, Tally] = {}
        for entry in self.tests.values():
            if entry.kind != "test" or not entry.total.calls:
                continue
            if kind == "files":
                names: Iterable[str] = (entry.path or entry.nodeid.split("::", 1)[0],)
            else:
                names = [name for name in entry.markers if name not in BUILTIN_MARKERS]
            for name in names:
                tally = merged.get(name)
                if tally is None:
                    tally = merged[name] = Tally()
                tally.merge(entry.total)
        result = dict(sorted(merged.items()))
        if aggregates is not None:
            aggregates[kind] = {key: tally.copy() for key, tally in result.items()}
        return result

    # -- end of breakdowns ---------------------------------------------------------------------------

    def anatomy(self) -> dict[str, int]:
        """Where the input goes, over the whole run (see :func:`merge_anatomy`)."""
        total: dict[str, int] = {}
        for entry in self.tests.values():
            total = merge_anatomy(total, entry.anatomy)
        return total

    def heaviest(self, n: int) -> list[TestUsage]:
        """The ``n`` entries with the most tokens (ties broken by node id, so output is stable)."""
        used = (t for t in self.tests.values() if t.total.calls)
        if n < 100:  # the top few of 20,000 tests: a heap, not a sort (same order: keys are unique)
            return heapq.nsmallest(n, used, key=_weight)
        return sorted(used, key=_weight)[:n]

    def to_dict(self, *, tests: bool = True) -> dict[str, Any]:
        """The artifact's data; ``tests=False`` leaves each test's value ``None`` (in order) for a
        writer that encodes the entries itself (artifact.encode_test)."""
        models = self.models()
        order = sorted(self.tests)
        return {
            "schema": "pytest-tokenbudget/run",
            "schema_version": SCHEMA_VERSION,
            "meta": self.meta,
            "totals": self.totals().to_dict(),
            "models": {key: tally.to_dict() for key, tally in models.items()},
            "providers": {key: tally.to_dict() for key, tally in self.providers(models).items()},
            **({"files": {k: t.to_dict() for k, t in files.items()}} if (files := self.files()) else {}),
            **({"markers": {k: t.to_dict() for k, t in marks.items()}} if (marks := self.markers()) else {}),
            "tests": {n: self.tests[n].to_dict() for n in order} if tests else dict.fromkeys(order),
            "issues": self.issues,
            "verdicts": [v.to_dict() for v in self.verdicts],
            **({"anatomy": dict(sorted(anatomy.items()))} if (anatomy := self.anatomy()) else {}),
            **({"comparison": self.comparison} if self.comparison is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "artifact") -> Run:
        if not isinstance(data, Mapping) or data.get("schema") != "pytest-tokenbudget/run":
            raise ArtifactError(f"{source}: not a pytest-tokenbudget run artifact")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ArtifactError(
                f"{source}: schema_version {version!r} is not supported "
                f"(this pytest-tokenbudget reads version {SCHEMA_VERSION})"
            )
        try:
            return cls(
                meta=dict(_mapping(data, "meta")),
                tests=_tests(_mapping(data, "tests")),
                issues=_issues(data.get("issues")),
                verdicts=_verdicts(_list(data, "verdicts")),
                comparison=_comparison(data.get("comparison")),
            )
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            raise ArtifactError(f"{source}: malformed run artifact: {exc}") from exc
        except RecursionError:
            raise ArtifactError(f"{source}: malformed run artifact: nested too deeply") from None


def _weight(entry: TestUsage) -> tuple[int, float, str]:
    """Heaviest first: most tokens, then highest cost, then node id."""
    total = entry.total
    return -total.total_tokens, -total.cost_usd, entry.nodeid


def merge_anatomy(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    """Add two anatomies: counts add up, ``peak:<part>`` (largest single request) keeps the max."""
    merged = dict(a)
    for key, value in b.items():
        before = merged.get(key, 0)
        merged[key] = max(before, value) if key.startswith("peak:") else before + value
    return merged


MAX_ARTIFACT_COUNT: Final = 10**15
"""The largest count an artifact may hold (no run comes near a quadrillion tokens)."""
MAX_ARTIFACT_USD: Final = 10**12


def _shown(value: Any) -> str:
    """A value for a one-line error: a huge number by its size, a long repr cut."""
    if isinstance(value, int) and abs(value) > 10**18:
        return f"a number of {abs(value).bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _int(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ARTIFACT_COUNT:
        raise ArtifactError(f"{key!r} must be a whole number from 0 to 10^15, got {_shown(value)}")
    return value


def _float(data: Mapping[str, Any], key: str) -> float:
    value = data.get(key, 0.0)
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_ARTIFACT_USD:
        raise ArtifactError(f"{key!r} must be an amount from 0 to 10^12, got {_shown(value)}")
    return float(value)  # NaN and infinities fail the range test above


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key) or []
    if not isinstance(value, list):
        raise ArtifactError(f"{key!r} must be a list, got {type(value).__name__}")
    return value


def _tests(tests: Mapping[str, Any]) -> dict[str, TestUsage]:
    """The artifact's test entries, an error naming the entry it is in."""
    entries = {}
    for nodeid, data in tests.items():
        try:
            if not isinstance(data, Mapping):
                raise ArtifactError(f"must be an object, got {type(data).__name__}")
            entries[str(nodeid)] = TestUsage.from_dict(str(nodeid), data)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            raise ArtifactError(f"tests[{_shown(nodeid)}]: {exc}") from None
    return entries


def _verdicts(value: list[Any]) -> list[Verdict]:
    """The artifact's verdicts, an error naming the one it is in."""
    verdicts = []
    for index, data in enumerate(value):
        try:
            if not isinstance(data, Mapping):
                raise ArtifactError(f"must be an object, got {_shown(data)}")
            verdict = Verdict.from_dict(data)
        except KeyError as exc:
            raise ArtifactError(f"verdicts[{index}]: missing {exc}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise ArtifactError(f"verdicts[{index}]: {exc}") from None
        if not (_number(verdict.limit) and _number(verdict.actual)):
            raise ArtifactError(f"verdicts[{index}]: limit and actual must be finite numbers")
        verdicts.append(verdict)
    return verdicts


_ISSUE_FIELDS: Final = ("test", "phase", "provider", "api", "model", "state", "detail")


def _issues(value: Any) -> list[dict[str, Any]]:
    """``issues``: a list of objects whose fields are strings (as the ledger writes them)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ArtifactError(f"'issues' must be a list, got {type(value).__name__}")
    issues = []
    for index, issue in enumerate(value):
        if not isinstance(issue, Mapping):
            raise ArtifactError(f"issues[{index}] must be an object, got {_shown(issue)}")
        wrong = [k for k in _ISSUE_FIELDS if k in issue and not isinstance(issue[k], str)]
        if wrong:
            raise ArtifactError(f"issues[{index}].{wrong[0]} must be a string, got {_shown(issue[wrong[0]])}")
        issues.append({**dict.fromkeys(_ISSUE_FIELDS, ""), **issue})
    return issues


def _comparison(value: Any) -> dict[str, Any] | None:
    """``comparison`` (baseline.compare's shape): checked where the reports read it."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ArtifactError(f"'comparison' must be an object, got {type(value).__name__}")
    if not value or value.get("missing"):
        return dict(value) or None
    totals = _mapping(value, "totals")
    _delta_of("comparison.totals.total_tokens", totals.get("total_tokens"))
    cost = value.get("cost")
    if not isinstance(cost, Mapping) or not all(_number(cost.get(k)) for k in ("base", "head")):
        raise ArtifactError("comparison.cost must be an object with numbers base and head")
    effects = [cost.get(k) for k in ("usage_effect", "price_effect")]
    if effects[0] is not None and not all(_number(e) for e in effects):
        raise ArtifactError("comparison.cost.usage_effect and price_effect must be numbers")
    tests = value.get("tests")
    if not isinstance(tests, list):
        raise ArtifactError("comparison.tests must be a list")
    for index, test in enumerate(tests):
        where = f"comparison.tests[{index}]"
        _delta_of(where, test)
        if not isinstance(test.get("test"), str) or not isinstance(test.get("status"), str):
            raise ArtifactError(f"{where} must name its test and status as strings")
    counts = _mapping(value, "counts")
    for key in counts:
        _int(counts, key)
    return dict(value)


def _number(value: Any) -> bool:
    """A finite JSON number (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < float("inf")


def _delta_of(where: str, value: Any) -> None:
    """``{"base", "head", "delta": numbers, "pct": a number or null}``, else an ArtifactError."""
    if not isinstance(value, Mapping) or not all(_number(value.get(k)) for k in ("base", "head", "delta")):
        raise ArtifactError(f"{where} must be an object with numbers base, head and delta")
    if value.get("pct") is not None and not _number(value["pct"]):
        raise ArtifactError(f"{where}.pct must be a number or null, got {_shown(value['pct'])}")


def _mapping(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, Mapping):
        raise ArtifactError(f"{key!r} must be a table/object, got {type(value).__name__}")
    return value


def _money(value: float) -> float:
    """Stable money formatting for artifacts: 10 decimal places, no float noise."""
    return round(value, 10)
