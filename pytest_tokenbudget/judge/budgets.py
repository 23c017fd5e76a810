"""Budget rules → verdicts: markers, the per-test default, scoped budgets and session totals.

Plain Python over :class:`~pytest_tokenbudget.model.Run` data: the plugin calls it per test (at the
test's reports) and once after the loop; the CLI can call :meth:`Budgets.evaluate_run` on a saved
or merged run. Parsing happens once, at configuration time, and every error names its origin.

Which usage a per-test budget sees: every call the test made in setup, call *and* teardown
(function-scoped fixtures belong to the test). Calls made by module/session-scoped fixtures belong
to those fixtures: they count toward session budgets, scoped budgets without ``path``/``marker``,
and scoped budgets that name the fixture (``fixture = "NAME"``).
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, get_args

from .. import units as fmt
from ..config import (
    MAX_COUNT_LIMIT,
    MAX_USD_LIMIT,
    TABLE,
    ConfigError,
    Context,
    EstimatedPolicy,
    Mode,
    Settings,
    Severity,
    money,
    non_negative_int,
    shown,
    strings,
    text,
)
from ..model import Run, Status, Tally, TestUsage, Verdict

METRICS: dict[str, str] = {
    "max_tokens": "total_tokens",
    "max_input_tokens": "input_tokens",
    "max_output_tokens": "output_tokens",
    "max_cost": "cost_usd",
    "max_calls": "calls",
}
"""Limit field (marker keyword; ``max-*`` key with ``_``) → the metric it limits."""

Per = Literal["test", "total"]
PER: tuple[Per, ...] = get_args(Per)
SCOPE_MATCHERS = ("path", "model", "provider", "marker", "fixture")
_SCOPE_KEYS = ("name", "per", *SCOPE_MATCHERS)
_LIMIT_KEYS = tuple(name.replace("_", "-") for name in METRICS)


class BudgetError(ValueError):
    """A ``token_budget`` marker with arguments that cannot be used."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits of one budget; ``None`` = not limited."""

    max_tokens: int | None = None
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    max_cost: float | None = None
    max_calls: int | None = None

    def __bool__(self) -> bool:
        return any(getattr(self, name) is not None for name in METRICS)

    def items(self) -> list[tuple[str, float]]:
        """``(metric, limit)`` for each limit that is set, in a fixed order."""
        return [
            (metric, getattr(self, name))
            for name, metric in METRICS.items()
            if getattr(self, name) is not None
        ]

    @classmethod
    def from_table(cls, table: Mapping[str, Any], ctx: Context, prefix: str) -> Limits:
        """The ``max-*`` keys of a table (other keys are the caller's business)."""
        values: dict[str, Any] = {}
        for key in _LIMIT_KEYS:
            if key in table:
                check = money if key == "max-cost" else non_negative_int
                values[key.replace("-", "_")] = check(prefix + key, table[key], ctx)
        return cls(**values)


def _marker_signature(
    max_tokens: int | None = None,
    *,
    max_input_tokens: int | None = None,
    max_output_tokens: int | None = None,
    max_cost: float | str | None = None,
    max_calls: int | None = None,
) -> dict[str, Any]:
    """The marker's real signature: pytest-style argument errors come from Python itself."""
    return {
        "max_tokens": max_tokens,
        "max_input_tokens": max_input_tokens,
        "max_output_tokens": max_output_tokens,
        "max_cost": max_cost,
        "max_calls": max_calls,
    }


def marker_limits(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Limits:
    """Validate ``@pytest.mark.token_budget(...)`` arguments; raises :class:`BudgetError`."""
    try:
        values = _marker_signature(*args, **kwargs)
    except TypeError as exc:
        message = str(exc).replace("_marker_signature()", "token_budget()")
        known = [name for name in METRICS if name not in kwargs]
        for name in kwargs:
            if name not in METRICS:
                hint = difflib.get_close_matches(name, known, n=1)
                if hint:
                    message += f" (did you mean {hint[0]!r}?)"
        raise BudgetError(message) from None
    limits: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        if name == "max_cost":
            raw = value.strip().removeprefix("$") if isinstance(value, str) else value
            number = _number(raw)
            if number is None or math.isnan(number) or number < 0:
                expected = "an amount in USD >= 0"
                raise BudgetError(f"token_budget(max_cost=…) expects {expected}, got {shown(value)}")
            if number > MAX_USD_LIMIT:  # inf too
                raise BudgetError(
                    f"token_budget(max_cost=…) expects an amount in USD from 0 to {MAX_USD_LIMIT:,}, "
                    f"got {shown(value)}"
                )
            limits[name] = float(number)
        else:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise BudgetError(f"token_budget({name}=…) expects a whole number >= 0, got {shown(value)}")
            if value > MAX_COUNT_LIMIT:
                raise BudgetError(
                    f"token_budget({name}=…) expects a whole number from 0 to {MAX_COUNT_LIMIT:,}, "
                    f"got {shown(value)}"
                )
            limits[name] = value
    if not limits:
        raise BudgetError("token_budget() needs at least one limit, e.g. token_budget(2000) or max_cost=0.05")
    return Limits(**limits)


def _number(value: Any) -> float | None:
    """A float from a marker's amount; None when it is not a number (or too big for a float)."""
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            return float(value)
    except (ValueError, OverflowError):  # float(10**400) overflows
        return float("inf") if isinstance(value, int) and value > 0 else None
    return None


@dataclass(frozen=True, slots=True)
class Scope:
    """One ``[[tool.tokenbudget.budgets]]`` entry: which usage it covers and its limits.

    ``path`` and ``marker`` choose tests, ``fixture`` chooses module/session-scoped fixtures by
    name instead; ``model`` and ``provider`` choose the calls counted within them. A list means
    "any of these"; different keys must all match.
    """

    name: str
    limits: Limits
    per: Per = "total"  # test: each matching test on its own; total: summed over them
    paths: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()
    markers: tuple[str, ...] = ()
    fixtures: tuple[str, ...] = ()  # globs over the names of module/session-scoped fixtures
    # Answers of :meth:`counts` and of the path filter so far (a run has few models and files).
    _models_counted: dict[str, bool] = field(default_factory=dict, init=False, repr=False, compare=False)
    _paths_chosen: dict[str, bool] = field(default_factory=dict, init=False, repr=False, compare=False)

    def selects(self, entry: TestUsage) -> bool:
        """Whether the test (or fixture/session entry) is covered by the path, marker and fixture
        filters."""
        if self.fixtures:
            name = fixture_name(entry)
            return name is not None and any(fnmatch.fnmatchcase(name, glob) for glob in self.fixtures)
        if self.paths or self.markers:
            if entry.kind != "test":
                return False
            if self.paths and not self._chooses_path(entry.path or entry.nodeid.split("::", 1)[0]):
                return False
            if self.markers and not set(self.markers) & set(entry.markers):
                return False
        return True

    def _chooses_path(self, path: str) -> bool:
        """Whether ``path`` matches one of the ``path`` globs."""
        chosen = self._paths_chosen.get(path)
        if chosen is None:
            chosen = any(fnmatch.fnmatchcase(path, glob) for glob in self.paths)
            if len(self._paths_chosen) < 10_000:
                self._paths_chosen[path] = chosen
        return chosen

    def counts(self, key: str) -> bool:
        """Whether calls to ``key`` (``provider/model``) count for this scope's models and providers
        (remembered: a run has few models and many tests)."""
        counted = self._models_counted.get(key)
        if counted is None:
            counted = self._models_counted[key] = _counts(self.providers, self.models, key)
        return counted

    def models_of(self, entry: TestUsage) -> dict[str, Tally]:
        """The entry's per-model tallies for the models and providers this scope counts."""
        if not self.models and not self.providers:
            return entry.models
        return {key: t for key, t in entry.models.items() if self.counts(key)}

    def usage_of(self, entry: TestUsage) -> tuple[Tally, dict[str, Tally]]:
        """The entry's usage restricted to the calls of matching models and providers."""
        chosen = self.models_of(entry)
        if len(chosen) == len(entry.models):  # every model counts (often the test's only one)
            return entry.total, entry.models
        total = Tally()
        for tally in chosen.values():
            total.merge(tally)
        return total, chosen

    @property
    def chooses_every_entry(self) -> bool:
        """Whether :meth:`selects` is true of every entry (no path, marker or fixture filter)."""
        return not (self.paths or self.markers or self.fixtures)


def _counts(providers: tuple[str, ...], models: tuple[str, ...], key: str) -> bool:
    """Whether calls to ``key`` (``provider/model``) count for a scope with these filters."""
    provider, _, model = key.partition("/")
    if providers and provider not in providers:
        return False
    return not models or any(fnmatch.fnmatchcase(model, glob) for glob in models)


@dataclass(frozen=True, slots=True)
class Policy:
    """How a measurement becomes a status."""

    warn_at: float = 0.8
    mode: Mode = "fail"
    unknown_price: Severity = "warn"
    estimated: EstimatedPolicy = "count"  # warn-only: an overrun that includes estimated calls only warns


@dataclass(frozen=True, slots=True)
class Budgets:
    """Every budget of a session, parsed from :class:`~pytest_tokenbudget.config.Settings`."""

    session: Limits = Limits()
    per_test: Limits = Limits()
    scopes: tuple[Scope, ...] = ()
    policy: Policy = field(default_factory=Policy)

    def __bool__(self) -> bool:
        return bool(self.session or self.per_test or self.scopes)

    @classmethod
    def from_settings(cls, settings: Settings) -> Budgets:
        """Parse ``per-test`` and ``budgets``; raises :class:`ConfigError` naming file and key."""
        ctx = settings.context()
        session = Limits(
            max_tokens=settings.max_tokens,
            max_input_tokens=settings.max_input_tokens,
            max_output_tokens=settings.max_output_tokens,
            max_cost=settings.max_cost,
            max_calls=settings.max_calls,
        )
        return cls(
            session=session,
            per_test=_per_test(settings.tables.get("per-test"), ctx),
            scopes=_scopes(settings.tables.get("budgets"), ctx),
            policy=Policy(settings.warn_at, settings.mode, settings.unknown_price, settings.estimated),
        )

    def markers_only(self) -> Budgets:
        """The same policy without pyproject budgets (a run switched on only by marked tests)."""
        return Budgets(policy=self.policy)

    # -- per test ---------------------------------------------------------------------------------

    def judge_test(
        self, entry: TestUsage, marker: Limits | None, *, path: str = "", line: int | None = None
    ) -> list[Verdict]:
        """Verdicts for one test: its marker (closest wins), else the per-test default."""
        limits, kind = (marker, "marker") if marker is not None else (self.per_test, "test-default")
        if not limits or (kind == "test-default" and not entry.total.calls):
            return []
        return [
            _verdict(
                f"{kind} {entry.nodeid}",
                kind,
                "token budget",
                metric,
                limit,
                entry.total,
                entry.models,
                self.policy,
                nodeid=entry.nodeid,
                path=path or entry.path,
                line=line if line is not None else entry.line,
            )
            for metric, limit in limits.items()
        ]

    # -- after the loop ---------------------------------------------------------------------------

    def evaluate_run(self, run: Run, *, session: bool = True) -> list[Verdict]:
        """Session totals and scoped budgets over ``run``; ``session=False`` keeps only the budgets
        that can be judged on part of a run (scoped ``per = "test"``)."""
        verdicts: list[Verdict] = []
        run_models = functools.cache(run.models)  # a pass over every test: at most once here
        if session and self.session:
            totals, models = run.totals(), run_models()
            for metric, limit in self.session.items():
                verdicts.append(
                    _verdict(
                        "session", "session", "session budget", metric, limit, totals, models, self.policy
                    )
                )
        for scope in self.scopes:
            if scope.per == "test":
                verdicts.extend(self._per_test_scope(scope, run))
            elif session:
                verdicts.extend(self._total_scope(scope, run, run_models))
        return verdicts

    def _total_scope(
        self, scope: Scope, run: Run, run_models: Callable[[], dict[str, Tally]]
    ) -> list[Verdict]:
        if scope.chooses_every_entry:
            # Every entry (fixtures and the session too) is chosen, so the sums per model are the
            # run's, added in the same order: reused, not summed again (a pass over every test).
            models = {key: tally for key, tally in run_models().items() if scope.counts(key)}
        else:
            models = _models_summed(scope, run)
        total = Tally()
        for key in sorted(models):
            total.merge(models[key])
        return [
            _verdict(
                f"scope {scope.name}",
                "scope",
                f"budget {scope.name!r}",
                metric,
                limit,
                total,
                models,
                self.policy,
            )
            for metric, limit in scope.limits.items()
        ]

    def _per_test_scope(self, scope: Scope, run: Run) -> list[Verdict]:
        """Each non-ok test gets its verdict; when all are ok, one verdict names the largest."""
        name, subject = f"scope {scope.name}", f"budget {scope.name!r}"
        entries = run.tests.values() if scope.fixtures else run.iter_tests()
        used = [
            (entry, *scope.usage_of(entry)) for entry in sorted(entries, key=_nodeid) if scope.selects(entry)
        ]
        used = [(entry, tally, models) for entry, tally, models in used if tally.calls]

        def verdict(entry: TestUsage, tally: Tally, models: dict[str, Tally]) -> Verdict:
            return _verdict(
                name, "scope", f"{subject} ({entry.nodeid})", metric, limit, tally, models, self.policy,
                nodeid=entry.nodeid, path=entry.path, line=entry.line,
            )  # fmt: skip

        verdicts: list[Verdict] = []
        for metric, limit in scope.limits.items():
            flagged: list[Verdict] = []
            largest: tuple[float, TestUsage, Tally, dict[str, Tally]] | None = None
            for entry, tally, models in used:  # a verdict (and its sentence) only when it is shown
                judged = judge(metric, limit, tally, self.policy)
                if judged.status != Status.OK:
                    flagged.append(verdict(entry, tally, models))
                elif largest is None or judged.actual > largest[0]:  # the first of the largest
                    largest = (judged.actual, entry, tally, models)
            if flagged:
                verdicts.extend(flagged)
            elif largest is not None:
                verdicts.append(verdict(*largest[1:]))
            else:
                verdicts.append(_verdict(name, "scope", subject, metric, limit, Tally(), {}, self.policy))
        return verdicts


def _nodeid(entry: TestUsage) -> str:
    return entry.nodeid


def _models_summed(scope: Scope, run: Run) -> dict[str, Tally]:
    """The usage chosen by ``scope`` summed per model (in the order of ``run.tests``)."""
    models: dict[str, Tally] = {}
    for entry in run.tests.values():
        if scope.selects(entry):
            for key, part in entry.models.items():
                if not scope.counts(key):
                    continue
                summed = models.get(key)
                if summed is None:
                    summed = models[key] = Tally()
                summed.merge(part)
    return models


def _per_test(raw: Any, ctx: Context) -> Limits:
    if raw is None:
        return Limits()
    where = f"{TABLE}.per-test"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{ctx.origin}: [{where}] must be a table of max-* limits, got {raw!r}")
    _reject_unknown(raw, _LIMIT_KEYS, ctx, f"[{where}]")
    limits = Limits.from_table(raw, ctx, "per-test.")
    if not limits:
        raise ConfigError(f"{ctx.origin}: [{where}] sets no limit; expected one of {', '.join(_LIMIT_KEYS)}")
    return limits


def _scopes(raw: Any, ctx: Context) -> tuple[Scope, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(item, Mapping) for item in raw):
        raise ConfigError(
            f"{ctx.origin}: [{TABLE}] budgets must be an array of tables ([[{TABLE}.budgets]]), got {raw!r}"
        )
    scopes: list[Scope] = []
    seen: set[str] = set()
    for number, table in enumerate(raw, start=1):
        label = f"budgets #{number}"
        _reject_unknown(table, _SCOPE_KEYS + _LIMIT_KEYS, ctx, f"[[{TABLE}.budgets]] #{number}")
        prefix = f"{label} "
        name = text(prefix + "name", table["name"], ctx) if "name" in table else _default_name(table)
        if name in seen:
            raise ConfigError(f"{ctx.origin}: [[{TABLE}.budgets]] #{number}: name {name!r} is used twice")
        seen.add(name)
        per = table.get("per", "total")
        if per not in PER:
            raise ctx.error(prefix + "per", "'test' or 'total'", per)
        limits = Limits.from_table(table, ctx, prefix)
        if not limits:
            raise ConfigError(
                f"{ctx.origin}: [[{TABLE}.budgets]] #{number} ({name}) sets no limit; "
                f"expected one of {', '.join(_LIMIT_KEYS)}"
            )
        matchers = {
            key: strings(prefix + key, table[key], ctx) if key in table else () for key in SCOPE_MATCHERS
        }
        if matchers["fixture"] and (matchers["path"] or matchers["marker"]):
            raise ConfigError(
                f"{ctx.origin}: [[{TABLE}.budgets]] #{number} ({name}): 'fixture' chooses fixtures, "
                "'path' and 'marker' choose tests; a budget takes one or the other"
            )
        scopes.append(
            Scope(
                name=name,
                limits=limits,
                per=per,
                paths=matchers["path"],
                models=matchers["model"],
                providers=matchers["provider"],
                markers=matchers["marker"],
                fixtures=matchers["fixture"],
            )
        )
    return tuple(scopes)


def fixture_name(entry: TestUsage) -> str | None:
    """The fixture's name for a fixture entry (labelled ``<SCOPE fixture NAME>``), else None."""
    if entry.kind != "fixture":
        return None
    return entry.nodeid.strip("<>").partition(" fixture ")[2] or None


def _default_name(table: Mapping[str, Any]) -> str:
    parts = [f"{key}={table[key]}" for key in SCOPE_MATCHERS if key in table]
    return " ".join(parts) or "all tests"


def _reject_unknown(table: Mapping[str, Any], known: Iterable[str], ctx: Context, where: str) -> None:
    allowed = sorted(known)
    for key in table:
        if key not in allowed:
            hint = difflib.get_close_matches(key, allowed, n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(
                f"{ctx.origin}: {where} unknown key {key!r}{suggestion}; known keys: {', '.join(allowed)}"
            )


# -- judging ------------------------------------------------------------------------------------


def measure(tally: Tally, metric: str) -> float:
    """The value of ``metric`` in ``tally``."""
    if metric == "cost_usd":
        return round(tally.cost_usd, 10)
    value: float = getattr(tally, metric)  # calls, or a token count
    return value


def _status(actual: float, limit: float, warn_at: float) -> Status:
    if actual > limit:
        return Status.EXCEEDED
    if limit and actual >= warn_at * limit:
        return Status.WARN
    return Status.OK


class Judgement(NamedTuple):
    """How a measurement against a limit is judged under a policy (before any sentence is written)."""

    actual: float
    measured: Status  # of the measurement alone: ok, warn (at warn-at) or exceeded
    unpriced: bool  # a cost over calls without a price, and unknown-price is not "ignore"
    estimated: bool  # over the limit with estimated calls in it, and estimated is "warn-only"
    status: Status  # the verdict's


def judge(metric: str, limit: float, tally: Tally, policy: Policy) -> Judgement:
    """The one place a status is decided: every verdict's, and the per-test scopes' choice of the
    verdicts they show."""
    actual = measure(tally, metric)
    measured = _status(actual, limit, policy.warn_at)
    unpriced = metric == "cost_usd" and not tally.cost_known and policy.unknown_price != "ignore"
    estimated = actual > limit and policy.estimated == "warn-only" and tally.estimated_calls > 0
    status = measured
    if unpriced and measured != Status.EXCEEDED:
        status = Status.EXCEEDED if policy.unknown_price == "fail" else Status.UNKNOWN
    if estimated:
        status = Status.WARN
    if status == Status.EXCEEDED and policy.mode == "warn":
        status = Status.WARN
    return Judgement(actual, measured, unpriced, estimated, status)


def _verdict(
    name: str,
    kind: str,
    subject: str,
    metric: str,
    limit: float,
    tally: Tally,
    models: Mapping[str, Tally],
    policy: Policy,
    *,
    nodeid: str = "",
    path: str = "",
    line: int | None = None,
) -> Verdict:
    """:func:`judge`'s judgement as a verdict, with the sentence that says it."""
    judged = judge(metric, limit, tally, policy)
    actual = judged.actual
    detail = _detail(tally, models)
    amount, of = _amount(metric, actual, tally), _amount(metric, limit)
    exceeded = "exceeded (mode warn)" if policy.mode == "warn" else "exceeded"
    if judged.unpriced and judged.measured != Status.EXCEEDED:
        calls = f"{tally.unpriced_calls} call" + ("" if tally.unpriced_calls == 1 else "s")
        if policy.unknown_price == "fail":
            message = (
                f"{subject} {exceeded}: cost unknown, {calls} without a price "
                f"(unknown-price = fail); {amount} of {of} ({detail})"
            )
        else:
            message = f"{subject} unknown: {calls} without a price; {amount} of {of} ({detail})"
    elif judged.measured == Status.EXCEEDED:
        message = f"{subject} {exceeded}: {amount} > {of} ({detail})"
    elif judged.measured == Status.WARN:
        message = f"{subject} at {fmt.percent(actual, limit)}: {amount} of {of} ({detail})"
    else:
        message = f"{subject} ok: {amount} of {of} ({detail})"
    if judged.estimated:
        calls = f"{tally.estimated_calls} estimated call" + ("" if tally.estimated_calls == 1 else "s")
        message += f"; includes {calls} (estimated = warn-only)"
    return Verdict(
        name=name,
        kind=kind,
        metric=metric,
        limit=float(limit),
        actual=float(actual),
        status=judged.status,
        message=message,
        nodeid=nodeid,
        path=path,
        line=line,
    )


_UNITS = {"total_tokens": "tokens", "input_tokens": "input tokens", "output_tokens": "output tokens"}


def _amount(metric: str, value: float, tally: Tally | None = None) -> str:
    """``2,431 tokens`` for a measurement; the bare ``2,000`` for a limit (``tally`` is None)."""
    if metric == "cost_usd":
        return fmt.money(value, known=tally.cost_known if tally is not None else True)
    if tally is None:
        return f"{int(value):,}"
    if metric == "calls":
        return f"{int(value):,} call" + ("" if value == 1 else "s")
    return f"{int(value):,} {_UNITS[metric]}"


def _detail(tally: Tally, models: Mapping[str, Tally], top: int = 3) -> str:
    """``input 2,100, output 331; gpt-4o-mini ×3`` (the three largest models)."""
    usage = tally.usage
    head = f"input {fmt.tokens(usage.input_tokens)}, output {fmt.tokens(usage.output_tokens)}"
    ranked = sorted(
        ((key, t) for key, t in models.items() if t.calls),
        key=lambda kt: (-kt[1].total_tokens, -kt[1].calls, kt[0]),
    )
    if not ranked:
        return head
    names = [f"{key.partition('/')[2] or key} ×{t.calls}" for key, t in ranked[:top]]
    if len(ranked) > top:
        names.append(f"+{len(ranked) - top} more")
    return f"{head}; {', '.join(names)}"
