"""Running sums over calls: a :class:`Tally` (tokens, cost, the counts that qualify them) and
everything one test used (:class:`TestUsage`, a tally in total, per phase and per model)."""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from .fields import TALLY_FIELDS, TEST_HEAD_FIELDS, Kind, amount_of, count_of, mapping_of, money
from .usage import CAVEAT_FIELDS, ZERO, Call, CallState, Caveats, Usage


@dataclass(slots=True)
class Tally:
    """A running sum over calls: tokens, cost, and the counts that qualify them.

    Compact because a run holds a few per test: token sums are plain ints, not a
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

    @property
    def replayed_cost_usd(self) -> float:
        """Cost of the calls that were not live (replayed and mocked)."""
        return self.cost_usd - self.live_cost_usd

    def to_dict(self) -> dict[str, Any]:
        """The tally as the artifact writes it (:data:`~.fields.TALLY_FIELDS`)."""
        row = list(_TALLY_VALUES(self))
        for index in _TALLY_MONEY_AT:
            row[index] = money(row[index])
        return dict(zip(_TALLY_NAMES, row, strict=True))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tally:
        caveats = Caveats(*(count_of(data, name) for name in CAVEAT_FIELDS))
        stored: dict[str, Any] = {name: read(data, name) for name, read in _TALLY_READ_BACK}
        return cls(**stored, caveats=caveats if caveats != _NO_CAVEATS else None)

    @classmethod
    def of(cls, calls: Iterable[Call]) -> Tally:
        tally = cls()
        for call in calls:
            tally.add_call(call)
        return tally


_NO_CAVEATS: Final = Caveats()
_TALLY_NAMES: Final = tuple(f.name for f in TALLY_FIELDS)
_TALLY_VALUES: Final = operator.attrgetter(*_TALLY_NAMES)
_TALLY_MONEY_AT: Final = tuple(i for i, f in enumerate(TALLY_FIELDS) if f.kind is Kind.MONEY)
_TALLY_READ_BACK: Final = tuple(
    (f.name, amount_of if f.kind is Kind.MONEY else count_of)
    for f in TALLY_FIELDS
    if f.name in {own.name for own in dataclasses.fields(Tally)}
)
"""The fields a tally keeps (the others are computed from them, or kept in its caveats)."""


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
    phases: dict[str, Tally] = field(default_factory=dict)  # setup | call | teardown (or session)
    models: dict[str, Tally] = field(default_factory=dict)  # keyed by model_key()
    markers: tuple[str, ...] = ()  # marker names on the test, for marker-scoped budgets
    # Request inspection (inspection/), estimated from request bodies; None until measured (most
    # tests never are, and a run holds an entry per test).
    anatomy: dict[str, int] | None = None  # input tokens by part
    context: dict[str, Any] | None = None  # largest context-window share
    stale: list[dict[str, Any]] | None = None  # stale cassettes this test replayed

    def add_call(self, call: Call) -> None:
        """Tally ``call`` in the test's total, its phase and its model."""
        self.total.add_call(call)
        phase = self.phases.get(call.phase)
        if phase is None:
            phase = self.phases[call.phase] = Tally()
        phase.add_call(call)
        key = model_key(call.provider, call.model)
        per_model = self.models.get(key)
        if per_model is None:
            per_model = self.models[key] = Tally()
        per_model.add_call(call)

    def merge(self, other: TestUsage) -> None:
        self.total.merge(other.total)
        for name, tally in other.phases.items():
            self.phases.setdefault(name, Tally()).merge(tally)
        for key, tally in other.models.items():
            self.models.setdefault(key, Tally()).merge(tally)
        self.outcome = other.outcome or self.outcome
        self.path = self.path or other.path
        self.line = self.line if self.line is not None else other.line
        self.markers = self.markers or other.markers
        if other.anatomy:
            self.anatomy = merge_anatomy(self.anatomy or {}, other.anatomy)
        if other.context:
            mine = self.context if self.context is not None else {}
            warned = mine.get("warned_calls", 0) + other.context.get("warned_calls", 0)
            if other.context.get("max", -1.0) > mine.get("max", -1.0):
                self.context = {**other.context, "warned_calls": warned}
            else:
                mine["warned_calls"] = warned
                self.context = mine
        if other.stale:
            stale = self.stale if self.stale is not None else []
            stale.extend(s for s in other.stale if s not in stale)
            self.stale = stale

    def to_dict(self) -> dict[str, Any]:
        head: dict[str, Any] = dict(zip(TEST_HEAD_FIELDS, _TEST_HEAD_VALUES(self), strict=True))
        if self.markers:
            head["markers"] = list(self.markers)
        if not self.total.calls:
            return {**head, "calls": 0}  # compact: most tests of a suite call no LLM
        return {
            **head,
            **self.total.to_dict(),
            "phases": {name: self.phases[name].to_dict() for name in sorted(self.phases)},
            "models": {key: self.models[key].to_dict() for key in sorted(self.models)},
            **({"anatomy": dict(sorted(self.anatomy.items()))} if self.anatomy else {}),
            **({"context": dict(self.context)} if self.context else {}),
            **({"stale": list(self.stale)} if self.stale else {}),
        }

    @classmethod
    def from_dict(cls, nodeid: str, data: Mapping[str, Any]) -> TestUsage:
        anatomy = mapping_of(data, "anatomy")
        return cls(
            nodeid=nodeid,
            kind=str(data.get("kind", "test")),
            path=str(data.get("path") or ""),
            line=data.get("line") if isinstance(data.get("line"), int) else None,
            outcome=str(data.get("outcome") or ""),
            total=Tally.from_dict(data),
            phases={str(k): Tally.from_dict(v) for k, v in mapping_of(data, "phases").items()},
            models={k: Tally.from_dict(v) for k, v in mapping_of(data, "models").items()},
            markers=tuple(str(m) for m in data.get("markers") or ()),
            anatomy={str(k): count_of(anatomy, k) for k in anatomy} or None,
            context=dict(mapping_of(data, "context")) or None,
            stale=[dict(s) for s in data.get("stale") or ()] or None,
        )


_TEST_HEAD_VALUES: Final = operator.attrgetter(*TEST_HEAD_FIELDS)


def merge_anatomy(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    """Add two anatomies: counts add up, ``peak:<part>`` (largest single request) keeps the max."""
    merged = dict(a)
    for key, value in b.items():
        before = merged.get(key, 0)
        merged[key] = max(before, value) if key.startswith("peak:") else before + value
    return merged
