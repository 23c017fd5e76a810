"""A whole session (:class:`Run`: metadata, usage per test, verdicts) and its verdicts."""

from __future__ import annotations

import gc
import heapq
import operator
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Literal, TypedDict

from .fields import SCHEMA_VERSION, VERDICT_FIELDS, ArtifactError, count_of, list_of, mapping_of, shown
from .tally import Tally, TestUsage, merge_anatomy


class Status(StrEnum):
    """A verdict's status (its value is what the artifact holds)."""

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
        """The verdict as the artifact writes it (:data:`~.fields.VERDICT_FIELDS`)."""
        return dict(zip(VERDICT_FIELDS, _VERDICT_VALUES(self), strict=True))

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


_VERDICT_VALUES: Final = operator.attrgetter(*VERDICT_FIELDS)


BUILTIN_MARKERS: Final = frozenset(
    {"parametrize", "usefixtures", "filterwarnings", "skip", "skipif", "xfail", "tryfirst", "trylast"}
)
"""pytest's own markers: no grouping of tests a team chose, so not a breakdown of their own."""


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
        pass over every test.

        Python's cyclic garbage collector is held off in it: the reports make a few objects per
        test and hold none in cycles (reference counting frees them), yet each full collection
        they set off scans the session's whole heap, a good part of the time after the loop in a
        large suite. It runs again, as before, when the block ends.
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

    # -- breakdowns per file and per marker ----------------------------------------------------------

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

    def anatomy(self) -> dict[str, int]:
        """Where the input goes, over the whole run (see :func:`merge_anatomy`)."""
        total: dict[str, int] = {}
        for entry in self.tests.values():
            if entry.anatomy:
                total = merge_anatomy(total, entry.anatomy)
        return total

    def heaviest(self, n: int) -> list[TestUsage]:
        """The ``n`` entries with the most tokens (ties broken by node id, so output is stable)."""
        used = (t for t in self.tests.values() if t.total.calls)
        if n < 100:  # the top few of many tests: a heap, not a sort (same order: keys are unique)
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
                meta=dict(mapping_of(data, "meta")),
                tests=_tests(mapping_of(data, "tests")),
                issues=_issues(data.get("issues")),
                verdicts=_verdicts(list_of(data, "verdicts")),
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


def _tests(tests: Mapping[str, Any]) -> dict[str, TestUsage]:
    """The artifact's test entries, an error naming the entry it is in."""
    entries = {}
    for nodeid, data in tests.items():
        try:
            if not isinstance(data, Mapping):
                raise ArtifactError(f"must be an object, got {type(data).__name__}")
            entries[str(nodeid)] = TestUsage.from_dict(str(nodeid), data)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            raise ArtifactError(f"tests[{shown(nodeid)}]: {exc}") from None
    return entries


def _verdicts(value: list[Any]) -> list[Verdict]:
    """The artifact's verdicts, an error naming the one it is in."""
    verdicts = []
    for index, data in enumerate(value):
        try:
            if not isinstance(data, Mapping):
                raise ArtifactError(f"must be an object, got {shown(data)}")
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
            raise ArtifactError(f"issues[{index}] must be an object, got {shown(issue)}")
        wrong = [k for k in _ISSUE_FIELDS if k in issue and not isinstance(issue[k], str)]
        if wrong:
            raise ArtifactError(f"issues[{index}].{wrong[0]} must be a string, got {shown(issue[wrong[0]])}")
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
    totals = mapping_of(value, "totals")
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
    counts = mapping_of(value, "counts")
    for key in counts:
        count_of(counts, key)
    return dict(value)


def _number(value: Any) -> bool:
    """A finite JSON number (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < float("inf")


def _delta_of(where: str, value: Any) -> None:
    """``{"base", "head", "delta": numbers, "pct": a number or null}``, else an ArtifactError."""
    if not isinstance(value, Mapping) or not all(_number(value.get(k)) for k in ("base", "head", "delta")):
        raise ArtifactError(f"{where} must be an object with numbers base, head and delta")
    if value.get("pct") is not None and not _number(value["pct"]):
        raise ArtifactError(f"{where}.pct must be a number or null, got {shown(value['pct'])}")
