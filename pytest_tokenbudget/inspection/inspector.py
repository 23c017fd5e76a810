"""Look inside the requests of each test: where the input goes, context windows, stale cassettes.

The recorder hands every call and its exchange to :meth:`Inspector.observe`, which only keeps
references (the request, the cassette interaction that replayed it). The work — parsing request
bodies, counting tokens — happens once per test at :meth:`Inspector.settle` (its teardown report)
and for fixtures and the session at :meth:`Inspector.settle_all`; then the references are dropped.
Results land on :class:`~pytest_tokenbudget.model.TestUsage` as ``anatomy``, ``context`` and
``stale`` and travel with the test's usage (JSON artifact, xdist reports).

:meth:`Inspector.verdicts` is a session evaluator: unmetered calls, stale cassettes, context windows
above ``context-warn-at`` and the per-request part limits (``max-tool-schema-tokens``,
``max-system-tokens``).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from .. import units as fmt
from ..config import Settings
from ..model import Call, CallState, Run, Status, TestUsage, Verdict
from ..request_body import request_bytes

if TYPE_CHECKING:
    from ..capture.recorder import Exchange
    from ..pricing.context_windows import ContextWindows

__all__ = ["PART_LIMITS", "Inspector", "parts_of", "share"]

ANATOMY_APIS: Final = {
    "openai.chat": "openai.chat",
    "openai.responses": "openai.responses",
    "anthropic.messages": "anthropic.messages",
    "ollama.chat": "openai.chat",
    "cohere.chat": "openai.chat",
}
"""APIs whose requests are split into parts (→ the estimator used for them)."""

PART_LIMITS: Final = {"tools": "tool_schema_tokens", "system": "system_tokens"}
"""Anatomy part → the metric of its per-request limit (``max-tool-schema-tokens`` …)."""

_UNMETERED_STATES: Final = (CallState.UNMETERED, CallState.UNPARSED)
_WHY: Final = {
    CallState.UNMETERED: "no usage reported, none estimable",
    CallState.UNPARSED: "response not readable",
}
"""Why a call of each of these states has no tokens (the verdict names each by its CallState value)."""


class Inspector:
    """Per-session request inspection; thread-safe :meth:`observe`, settled from pytest's thread."""

    def __init__(self, settings: Settings, windows: ContextWindows | None = None) -> None:
        if windows is None:  # context_window.py comes with the first Inspector (a captured request)
            from ..pricing.context_windows import ContextWindows

            windows = ContextWindows()
        self.settings = settings
        self.windows = windows
        self._pending: dict[str, list[tuple[Call, Any, Any]]] = {}
        self.errors = 0  # calls the inspector failed on (its own bug): counted, never raised
        self.first_errors: list[str] = []
        self._lock = threading.Lock()
        # Suites send the same request many times (parametrized tests, replayed cassettes): its
        # anatomy is estimated once, keyed by estimator, model and a digest of the body's bytes.
        self._anatomies: dict[tuple[str, str, bytes], _Anatomy | None] = {}
        self.exact_anatomy = (
            settings.anatomy == "exact"
            or settings.max_tool_schema_tokens is not None
            or settings.max_system_tokens is not None
        )
        """tiktoken counts the anatomy when asked, or when a part limit judges it; otherwise ~4 bytes
        a token (marked approximate), and a run whose responses all report usage never loads it."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Inspector:
        """Raises :class:`~pytest_tokenbudget.config.ConfigError` for a bad context-windows table."""
        from ..pricing.context_windows import ContextWindows

        windows = ContextWindows.from_table(settings.tables.get("context-windows"), settings.context())
        return cls(settings, windows)

    # -- collecting (the request path: references only) -------------------------------------------

    def observe(self, call: Call, exchange: Exchange) -> None:
        if call.state == CallState.FAILED:
            return
        item = (call, exchange.request, exchange.replay)
        with self._lock:
            pending = self._pending.get(call.owner)
            if pending is None:
                self._pending[call.owner] = [item]
            else:
                pending.append(item)

    # -- settling ---------------------------------------------------------------------------------

    def settle(self, run: Run, owner: str) -> None:
        """Inspect the calls ``owner`` made so far and add the results to its entry."""
        with self._lock:
            items = self._pending.pop(owner, None)
        if not items:
            return
        entry = run.tests.get(owner)
        if entry is None:
            return
        for call, request, played in items:
            try:
                self._inspect(entry, call, request, played)
            except Exception as exc:  # a request the inspector cannot read must not stop the session
                self.errors += 1
                if len(self.first_errors) < 3:
                    self.first_errors.append(f"inspecting {call.owner}: {type(exc).__name__}: {exc}")

    def settle_all(self, run: Run) -> None:
        with self._lock:
            owners = list(self._pending)
        for owner in owners:
            self.settle(run, owner)

    def _inspect(self, entry: TestUsage, call: Call, request: Any, played: Any) -> None:
        from ..request_body import request_json

        self._context(entry, call)
        target = ANATOMY_APIS.get(call.api)
        if target is None and played is None:
            return
        key = None
        if target is not None and (raw := _raw(request)) is not None:
            key = (target, call.model, hashlib.blake2b(raw, digest_size=16).digest())
            if key in self._anatomies:
                _add_anatomy(entry, self._anatomies[key])
                if played is None:
                    return
                target = None
        body = request_json(request)
        if body is None:
            return
        if target is not None:
            anatomy = _anatomy_of(target, body, call.model, exact=self.exact_anatomy)
            if key is not None:
                if len(self._anatomies) >= _ANATOMY_CACHE_SIZE:
                    self._anatomies.clear()
                self._anatomies[key] = anatomy
            _add_anatomy(entry, anatomy)
        if played is not None:
            self._stale(entry, call, request, body, played)

    def _context(self, entry: TestUsage, call: Call) -> None:
        used = self.windows.utilisation(call.provider, call.model, call.usage.input_tokens)
        if used is None:
            return
        context = entry.context
        if context is None:
            context = entry.context = {}
        warned = context.get("warned_calls", 0) + (used.fraction >= self.settings.context_warn_at)
        if used.fraction > context.get("max", -1.0):
            context.update(
                max=round(used.fraction, 6),
                model=f"{call.provider}/{call.model}",
                input_tokens=used.input_tokens,
                window=used.window,
                source=used.source,
                estimated=call.estimated,
            )
        context["warned_calls"] = warned

    def _stale(
        self, entry: TestUsage, call: Call, request: Any, body: Mapping[str, Any], played: Any
    ) -> None:
        from ..capture.replay import recorded
        from .stale import check, display_path

        path, recorded_body = recorded(played)
        cassette = display_path(path, self.settings.root)
        finding = check(call, body, _raw(request), cassette, recorded_body)
        if finding is not None:
            if entry.stale is None:
                entry.stale = []
            entry.stale.append(finding.to_dict())

    # -- the session verdicts ---------------------------------------------------------------------

    def verdicts(self, run: Run) -> list[Verdict]:
        """Unmetered calls, stale cassettes, context windows and part limits over the whole run."""
        self.settle_all(run)
        settings = self.settings
        found = _unmetered(run, settings.unmetered, settings.top)
        if any(entry.stale for entry in run.tests.values()):  # stale.py only when there is any
            from .stale import verdicts as stale_verdicts

            found += stale_verdicts(run, fail=settings.stale_cassette == "fail")
        found += _context_verdicts(run, settings.context_warn_at)
        found += part_verdicts(run, settings)
        if settings.mode == "warn":
            found = [_as_warning(v) for v in found]
        return found


_ANATOMY_CACHE_SIZE: Final = 4096


@dataclass(frozen=True, slots=True)
class _Anatomy:
    """One request's input split into parts (an estimate), as added to a test's anatomy."""

    parts: dict[str, int]  # system, tools, overhead, messages:<role>
    attachments_unknown: int
    approximate: bool  # not counted by tiktoken


def _anatomy_of(api: str, body: Mapping[str, Any], model: str, *, exact: bool) -> _Anatomy | None:
    from ..tokens.tokenizer import estimate_request

    try:
        estimate = estimate_request(api, body, model, exact=exact)
    except ValueError:
        return None
    parts = {"system": estimate.system, "tools": estimate.tools, "overhead": estimate.overhead}
    parts.update({f"messages:{role}": tokens for role, tokens in estimate.messages.items()})
    return _Anatomy(parts, estimate.attachments_unknown, not estimate.method.startswith("tiktoken:"))


def _add_anatomy(entry: TestUsage, estimate: _Anatomy | None) -> None:
    if estimate is None:
        return
    parts = estimate.parts
    anatomy = entry.anatomy
    if anatomy is None:
        anatomy = entry.anatomy = {}
    for name, tokens in parts.items():
        if tokens:
            anatomy[name] = anatomy.get(name, 0) + tokens
    anatomy["calls"] = anatomy.get("calls", 0) + 1
    if estimate.attachments_unknown:
        anatomy["attachments_unknown"] = anatomy.get("attachments_unknown", 0) + estimate.attachments_unknown
    if estimate.approximate:
        anatomy["approximate_calls"] = anatomy.get("approximate_calls", 0) + 1
    for part in PART_LIMITS:
        if parts[part] > anatomy.get(f"peak:{part}", 0):
            anatomy[f"peak:{part}"] = parts[part]


def _raw(request: Any) -> bytes | None:
    return request_bytes(request)


def parts_of(anatomy: Mapping[str, int]) -> list[tuple[str, int]]:
    """The input parts of an anatomy, largest first (ties by name)."""
    skip = ("calls", "approximate_calls", "attachments_unknown")
    items = [(k, v) for k, v in anatomy.items() if k not in skip and not k.startswith("peak:") and v]
    return sorted(items, key=lambda kv: (-kv[1], kv[0]))


# -- verdicts ---------------------------------------------------------------------------------------


def _unmetered(run: Run, setting: str, top: int) -> list[Verdict]:
    if setting == "ignore":
        return []
    names = [i for i in run.issues if i.get("state") in _UNMETERED_STATES]
    totals = run.totals()
    counts = {CallState.UNMETERED: totals.unmetered_calls, CallState.UNPARSED: totals.unparsed_calls}
    count = sum(counts.values())
    if not count:
        return []
    listed = [f"{i['test']} [{i['api']} {i['model']}]" for i in names[:top]]
    if count > len(listed):
        listed.append(f"+{count - len(listed)} more")
    verb = "fails the run" if setting == "fail" else "budgets cannot trip on them"
    parts = [(f"{n} {state} call" + ("" if n == 1 else "s"), _WHY[state]) for state, n in counts.items() if n]
    if len(parts) == 1:
        head = f"{parts[0][0]} ({parts[0][1]}; {verb})"
    else:
        head = " and ".join(f"{what} ({why})" for what, why in parts) + f"; {verb}"
    message = f"{head}: {', '.join(listed)}"
    return [
        Verdict(
            name="unmetered",
            kind="unmetered",
            metric="calls",
            limit=0.0,
            actual=float(count),
            status=Status.EXCEEDED if setting == "fail" else Status.WARN,
            message=message,
        )
    ]


def _context_verdicts(run: Run, warn_at: float) -> list[Verdict]:
    found = []
    for entry in sorted(run.tests.values(), key=lambda e: e.nodeid):
        context = entry.context
        if not context or context.get("max", 0.0) < warn_at:
            continue
        used = context["max"]
        message = (
            f"{entry.nodeid} filled {share(used)} of the context window of {context['model']} "
            f"({fmt.tokens(context['input_tokens'])} of {fmt.tokens(context['window'])} input tokens"
            f"{', estimated' if context.get('estimated') else ''}; warn at {100 * warn_at:.0f}%)"
        )
        found.append(
            Verdict(
                name=f"context-window {entry.nodeid}",
                kind="context-window",
                metric="context_utilisation",
                limit=warn_at,
                actual=float(used),
                status=Status.WARN,
                message=message,
                nodeid=entry.nodeid,
                path=entry.path,
                line=entry.line,
            )
        )
    return found


def part_verdicts(run: Run, settings: Settings) -> list[Verdict]:
    """Per-request limits on parts of the input: the largest request of the run is judged.

    These numbers are always estimates, so under ``estimated = "warn-only"`` they only warn.
    """
    limits = {"tools": settings.max_tool_schema_tokens, "system": settings.max_system_tokens}
    found = []
    for part, limit in limits.items():
        if limit is None:
            continue
        metric = PART_LIMITS[part]
        peak, where = 0, None
        for entry in sorted(run.tests.values(), key=lambda e: e.nodeid):
            value = entry.anatomy.get(f"peak:{part}", 0) if entry.anatomy else 0
            if value > peak:
                peak, where = value, entry
        label = "tool schemas" if part == "tools" else "system prompt"
        key = "max-tool-schema-tokens" if part == "tools" else "max-system-tokens"
        amount = f"~{fmt.tokens(peak)} tokens" + (f" in {where.nodeid}" if where is not None else "")
        if peak > limit:
            status = Status.WARN if settings.estimated == "warn-only" else Status.EXCEEDED
            note = " (estimated = warn-only)" if status == Status.WARN else ""
            message = f"{label} of one request exceeded {key}: {amount} > {fmt.tokens(limit)}{note}"
        elif limit and peak >= settings.warn_at * limit:
            status = Status.WARN
            message = f"{label} of one request at {fmt.percent(peak, limit)} of {key}: {amount}"
        else:
            status = Status.OK
            message = f"{label} of one request ok: {amount} of {fmt.tokens(limit)} ({key})"
        found.append(
            Verdict(
                name=key,
                kind="request-part",
                metric=metric,
                limit=float(limit),
                actual=float(peak),
                status=status,
                message=message,
                nodeid=where.nodeid if where is not None else "",
                path=where.path if where is not None else "",
                line=where.line if where is not None else None,
            )
        )
    return found


def share(fraction: float) -> str:
    """``93%``; ``<1%`` for a sliver (never a misleading ``0%``)."""
    return f"{100 * fraction:.0f}%" if fraction >= 0.01 or not fraction else "<1%"


def _as_warning(verdict: Verdict) -> Verdict:
    if verdict.status != Status.EXCEEDED:
        return verdict
    from dataclasses import replace

    return replace(verdict, status=Status.WARN, message=f"{verdict.message} (mode warn)")
