"""The plugin switched on for one pytest session: the pipeline a call goes through, composed in
one place (:meth:`Session._compose`), what it needs made on first use, and the roles it registers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import pytest

from . import stash
from .settings import load_budgets, load_pricer, usage_error

if TYPE_CHECKING:
    from ..capture.recorder import Exchange
    from ..config import Settings
    from ..inspection.inspector import Inspector
    from ..judge.budgets import Budgets
    from ..judge.hardcap import HardCap
    from ..model import Call, Run, Verdict
    from ..pricing.prices import Pricer
    from ..report.export import CallLog
    from .otel import CallRecords, Ingest

    Evaluator = Callable[[Run], list[Verdict]]

Role = Literal["serial", "worker", "controller"]
"""Where this session runs: alone, as a pytest-xdist worker, or as the xdist controller."""


def role_of(config: pytest.Config) -> Role:
    if hasattr(config, "workerinput"):
        return "worker"
    return "controller" if getattr(config.option, "dist", "no") != "no" else "serial"


class Session:
    """What one pytest session with the plugin on holds: settings, the ledger, capture, the lazily
    made prices / budgets / request inspector, the hard cap, and the session's evaluators."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        from ..capture import Capture
        from ..ledger import Ledger
        from ..runs.artifact import now_iso

        self.config = config
        self.settings = settings
        self.role: Role = role_of(config)
        self.ledger = Ledger(keep_calls=False)  # tallies only: memory flat in the number of calls
        self.run.meta["started"] = now_iso()
        self.started_at = time.time()
        self.capture = Capture(self.ledger)
        self.test_verdicts: dict[str, list[Verdict]] = {}
        """Per-test verdicts by node id, taken at each test's (last) teardown: a rerun replaces
        its earlier attempt's. Joined to the run's verdicts after the loop (:meth:`verdicts_joined`)."""
        self.outside_owners: set[str] = {"<session>"}  # owners outside tests seen (fixtures)
        self.finished_tests = 0  # tests run to their end (fewer than collected: the run is partial)
        self.lost_workers: list[str] = []  # xdist controller: workers that died, and what they ran
        self.worker_prices: list[dict[str, Any]] = []  # xdist controller: the workers' meta.prices
        self.worker_call_logs: list[str] = []  # xdist controller: the workers' call log parts
        self.inspector: Inspector | None = None
        self._pricer: Pricer | None = config.stash.get(stash.pricer_key, None)
        self._budgets: Budgets | None = None  # parsed on first need: most runs have markers only
        self._lazy_lock = threading.Lock()  # the inspector and the prices are made on first need
        self._price_hook_added = False
        self.per_test_default = False  # a per-test budget applies to tests without a marker
        self.judging = False  # some test is held to a budget: see judges()
        self.evaluators: list[Evaluator] = []
        self.call_log: CallLog | None = None
        self.hard_cap: HardCap | None = None
        self.otel_calls: CallRecords | None = None  # the OpenTelemetry export's, when on
        self.otel_ingest: Ingest | None = None  # the gen_ai span ingest, when on
        self._closed = False
        self._compose()
        self.judges()
        self.roles = self._roles()
        self.capture.install()  # last: nothing is patched when the configuration is refused

    def _compose(self) -> None:
        """Wire the pipeline. A call goes, in this order:

        1. **capture** — an HTTP stack's wrapper hands the request to the recorder, which routes it
           (a ``pytest_tokenbudget_route`` hook first, then :mod:`..providers`) and asks the
           *preflight* hooks (the hard cap, then the ``gen_ai`` span ingest) before it
           leaves;
        2. **provider** — the route's parser reads the response (a stream as the SDK consumes it)
           into a :class:`~..model.Call`; the recorder's *observers* see it with its exchange
           (request inspection, then the OpenTelemetry export's timing);
        3. **ledger** — its *pricers* set the cost (a ``pytest_tokenbudget_price`` hook, then
           genai-prices), it is **tallied**, then *listeners* are told (the hard cap's spend, the
           OpenTelemetry export), then *observers* (the JSONL call log; out of event loops, at the
           next drain).

        After the loop, the *evaluators* judge the run (request inspection, session and scoped
        budgets, the baseline): the same list ``tokenbudget check`` builds (:mod:`..check`).
        """
        settings, ledger, recorder = self.settings, self.ledger, self.capture.recorder
        enabled = settings.enabled
        if enabled:
            if "context-windows" in settings.tables:  # a bad table is a usage error now
                self.inspector = _make_inspector(settings)
            recorder.observers.append(self.inspect)
        self.use_plugin_hooks()  # route and price hooks (again once conftest files are loaded)
        ledger.add_pricer(self._price, "genai-prices")  # after a price hook, which goes first
        if settings.hard_max_cost is not None and self.role != "controller":
            self.hard_cap = self._hard_cap(settings.hard_max_cost)
            recorder.preflight.append(self.hard_cap)
            ledger.add_listener(self.hard_cap.observe, "the hard cost cap")
        if settings.calls_path is not None and enabled and self.role != "controller":
            from ..report.export import CallLog

            worker = str(getattr(self.config, "workerinput", {}).get("workerid", ""))
            self.call_log = CallLog(settings.calls_path, part=worker)
            ledger.add_observer(self.call_log, "the call log (--token-budget-calls)")
        if enabled and (settings.otel or settings.ingest_otel):
            self._compose_otel()
        budgets = self.budgets if settings.has_budgets and enabled else None
        self.per_test_default = bool(budgets and budgets.per_test)
        if enabled and self.role != "worker":  # workers never judge the session
            from ..check import session_evaluators

            self.evaluators = usage_error(  # a bad baseline is a usage error before anything is patched
                lambda: session_evaluators(
                    settings, budgets, session=not settings.defer_session, inspection=self.inspection_verdicts
                )
            )

    def _compose_otel(self) -> None:
        """The OpenTelemetry export keeps a record of each call (after the sinks above); the ingest
        is told of each request before it leaves (after the hard cap)."""
        from .otel import CallRecords, Ingest, require_sdk

        settings, making_calls = self.settings, self.role != "controller"
        require_sdk(settings)
        if settings.otel:
            self.otel_calls = CallRecords()
            if making_calls:
                self.capture.recorder.observers.append(self.otel_calls.time)
                self.ledger.add_listener(self.otel_calls.keep, "the OpenTelemetry export")
        if settings.ingest_otel and making_calls:
            self.otel_ingest = Ingest(self.ledger)
            self.capture.recorder.preflight.append(self.otel_ingest.request_leaving)

    def _roles(self) -> list[object]:
        """The objects whose hooks this session needs, by where it runs."""
        from .attribution import Attribution
        from .controller import Controller
        from .finish import Finish
        from .outcome import Outcomes, PerTest
        from .worker import Worker

        roles: list[object]
        if self.role == "controller":
            roles = [Outcomes(self), Controller(self), Finish(self)]
        else:
            attribution = Attribution(self)
            roles = [attribution, PerTest(self, attribution)]
            roles += [Worker(self, attribution)] if self.role == "worker" else [Outcomes(self), Finish(self)]
        if self.settings.enabled and (self.settings.otel or self.settings.ingest_otel):
            roles += self._otel_roles()
        if self.settings.enabled and self.config.get_verbosity() >= 1:  # -v: usage beside each outcome
            from .teststatus import OutcomeUsage

            roles.append(OutcomeUsage(self.run))
        return roles

    def _otel_roles(self) -> list[object]:
        from .otel import OtelController, OtelFinish, OtelWorker

        calls, ingest = self.otel_calls, self.otel_ingest
        roles: list[object] = [] if ingest is None else [ingest]
        if self.role == "worker":
            return [*roles, OtelWorker(calls, ingest)]
        if self.role == "controller":
            roles.append(OtelController(calls, self.run))
        return [*roles, OtelFinish(calls, ingest, self.run)]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.capture.uninstall()
            if self.hard_cap is not None:
                self.hard_cap.watch.uninstall()

    @property
    def run(self) -> Run:
        return self.ledger.run

    def judges(self) -> None:
        """Whether any test is held to a budget (a marker, or a per-test default): when none is,
        as in most suites, no phase's report needs judging."""
        self.judging = self.per_test_default or self.config.stash.get(stash.any_marker_key, False)

    def settle(self) -> None:
        """Record what is still open or pending: streams, deferred records, inspections."""
        self.ledger.settle_streams()
        self.ledger.drain()
        inspector = self.inspector
        if inspector is not None:
            inspector.settle_all(self.run)
            if inspector.errors:  # reported like a failing sink: its output is incomplete
                self.ledger.failures["request inspection"] = [inspector.errors, inspector.first_errors[0]]

    def verdicts_joined(self) -> None:
        """Move the per-test verdicts into the run's list (in the order :func:`canonicalise` keeps)."""
        verdicts = self.run.verdicts
        for taken in self.test_verdicts.values():
            verdicts.extend(taken)
        self.test_verdicts.clear()

    # -- the hard cap -----------------------------------------------------------------------------

    def _hard_cap(self, limit: float) -> HardCap:
        """Refuse live requests that would take the live spend over ``limit`` (per xdist worker:
        an equal share, so the workers together stay under it)."""
        from ..judge.hardcap import HardCap
        from ..units import money

        note = ""
        workers = int(getattr(self.config, "workerinput", {}).get("workercount", 1) or 1)
        if workers > 1:
            note = f"per xdist worker: {money(limit / workers)} of {money(limit)}"
            limit /= workers

        def cost_of(provider: str, model: str, usage: Any, host: str) -> float | None:
            return self.pricer.cost_of(provider, model, usage, host=host)

        cap = HardCap(limit, cost_of, note=note, verdicts=self.run.verdicts)
        cap.watch.refresh()
        return cap

    # -- made at the first call: a suite without LLM calls never imports pricing or inspector -----

    @property
    def pricer(self) -> Pricer:
        """The session's prices (pricing is imported at the first call to price)."""
        pricer = self._pricer
        if pricer is None:
            with self._lazy_lock:
                if self._pricer is None:
                    self._pricer = load_pricer(self.config, self.settings)
                pricer = self._pricer
        return pricer

    def _price(self, call: Call) -> None:
        """Ledger pricer: the call's cost, by the session's prices."""
        (self._pricer or self.pricer).price(call)

    def price_provenance(self) -> dict[str, Any]:
        """``meta.prices``: which prices were used (none when no call was priced here)."""
        if self._pricer is None:
            return no_prices_used()
        return self._pricer.provenance()

    def inspector_now(self) -> Inspector:
        """The request inspector, made at the first call it sees (or at the end, for calls of
        xdist workers)."""
        inspector = self.inspector
        if inspector is None:
            with self._lazy_lock:
                if self.inspector is None:
                    self.inspector = _make_inspector(self.settings)
                inspector = self.inspector
        return inspector

    def inspect(self, call: Call, exchange: Exchange) -> None:
        """Recorder observer: request inspection sees the call and its exchange."""
        (self.inspector or self.inspector_now()).observe(call, exchange)

    def inspection_verdicts(self, run: Run) -> list[Verdict]:
        """Unmetered calls, stale cassettes, context windows, request part limits. A run without
        calls has none of these to judge but the part limits (met, at zero)."""
        settings = self.settings
        if (
            self.inspector is None
            and not run.totals().calls
            and settings.max_tool_schema_tokens is None
            and settings.max_system_tokens is None
        ):
            return []
        return self.inspector_now().verdicts(run)

    @property
    def budgets(self) -> Budgets:
        """The session's budgets (pyproject and command line), parsed on first use; a run switched
        on only by marked tests holds its tests to their markers alone."""
        if self._budgets is None:
            budgets = load_budgets(self.config, self.settings)
            self._budgets = budgets if self.settings.enabled else budgets.markers_only()
        return self._budgets

    # -- other plugins' providers and prices ------------------------------------------------------

    def use_plugin_hooks(self) -> None:
        """Consult third-party providers and prices (hookspecs.py) only when implemented."""
        hook = self.config.hook
        recorder = self.capture.recorder
        if hook.pytest_tokenbudget_route.get_hookimpls():
            builtin_route: Callable[[str, str, str], Any] | None = None

            def route(method: str, host: str, path: str) -> Any:
                nonlocal builtin_route
                try:
                    found = hook.pytest_tokenbudget_route(method=method, host=host, path=path)
                except Exception as exc:  # another plugin's bug stays out of the test's request
                    recorder.note_internal_error(exc, source="a pytest_tokenbudget_route hook")
                    found = None
                if found is not None:
                    return found
                if builtin_route is None:  # imported at the first request, not at start-up
                    from ..providers import route as imported

                    builtin_route = imported
                return builtin_route(method, host, path)

            recorder.route = route
        if hook.pytest_tokenbudget_price.get_hookimpls() and not self._price_hook_added:
            self._price_hook_added = True

            def price(call: Any) -> None:
                if call.cost_usd is None:
                    try:
                        call.cost_usd = hook.pytest_tokenbudget_price(call=call)
                    except Exception as exc:  # the call is still counted, priced by the next source
                        recorder.note_internal_error(exc, source="a pytest_tokenbudget_price hook")

            self.ledger.add_pricer(price, "a pytest_tokenbudget_price hook", first=True)


def no_prices_used() -> dict[str, Any]:
    """What :meth:`Pricer.provenance` says when no call was priced, without importing pricing
    (a suite without LLM calls never needs it); tests/sessions/test_startup_imports.py keeps the two equal.
    Prices or aliases in pyproject.toml make the pricer at start-up: overrides and aliases are 0."""
    from datetime import UTC, datetime
    from importlib.metadata import PackageNotFoundError, version

    info: dict[str, Any] = {
        "source": "genai-prices",
        "priced_at": datetime.now(tz=UTC).date().isoformat(),
        "overrides": 0,
        "aliases": 0,
        "calls_by_source": {},
        "unknown": [],
    }
    try:
        info["version"] = version("genai-prices")
    except PackageNotFoundError:
        info["version"] = None
    return info


def _make_inspector(settings: Settings) -> Inspector:
    from ..inspection.inspector import Inspector

    return usage_error(lambda: Inspector.from_settings(settings))
