"""The plugin's OpenTelemetry role: export the run over OTLP (``--token-budget-otel``) and count the
code under test's ``gen_ai`` spans (``--token-budget-ingest-otel``).

Registered by the plugin only when one of the two is on (with ``--token-budget``); then its
methods are pytest hooks. What it keeps for the export is one small record per call, timed from
the captured exchange. Under xdist each worker ships its records on the test's teardown report
(and, for calls outside tests, in its ``workeroutput``); the controller, which already merges the
workers' usage, exports once: one session span, every worker's tests under it.
"""

from __future__ import annotations

import importlib.util
import json
import re
import threading
import time
from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any, Final

import pytest

from ..request_body import request_bytes  # the standard library only, as is units.py
from ..units import clean

if TYPE_CHECKING:
    from ..capture.otel_spans import SpanIngest
    from ..capture.recorder import Exchange
    from ..model import Call, Run
    from ..report.otel import CallRecord, Exported
    from .session import Session

REPORT_ATTR: Final = "tokenbudget_otel"
"""xdist: attribute of a worker's teardown report, the test's call records (JSON text)."""
OUTPUT_KEY: Final = "tokenbudget_otel"
"""xdist: key of a worker's ``workeroutput``: the call records left over, and the ingest stats."""
_MODEL: Final = re.compile(rb'"model"\s*:\s*"([^"\\]{1,200})"')


class OtelRole:
    """Hooks of the OpenTelemetry export and ingest, for one session."""

    def __init__(self, plugin: Session) -> None:
        settings = plugin.settings
        for on, flag in (
            (settings.otel, "--token-budget-otel"),
            (settings.ingest_otel, "--token-budget-ingest-otel"),
        ):
            if on and importlib.util.find_spec("opentelemetry.sdk") is None:
                raise pytest.UsageError(
                    f"pytest-tokenbudget: {flag} needs the OpenTelemetry SDK: "
                    "pip install 'pytest-tokenbudget[otel]'"
                )
        self.plugin = plugin
        self.exporting = settings.otel
        self.started_ns = time.time_ns()
        self._clock = time.time_ns() - time.perf_counter_ns()  # perf_counter → epoch ns
        self._lock = threading.Lock()
        self._records: list[CallRecord] = []  # every call (the controller's: the workers' too)
        self._shipped: dict[str, int] = {}  # xdist worker: records of each owner shipped so far
        self._times: dict[int, tuple[Call, int, int, str]] = {}  # id(call) → timing, just before it is kept
        self._tests: dict[str, list[float]] = {}  # node id → [first start, last stop] (epoch s)
        self.exported: Exported | None = None
        self.ingest: SpanIngest | None = None
        self.ingest_problem = ""
        self._ingest_wanted = settings.ingest_otel and plugin.role != "controller"
        if self.exporting and plugin.role != "controller":
            from ..report.otel import CallRecord  # the standard library and model/ only

            self._record_of = CallRecord.of
            plugin.capture.recorder.observers.append(self._time)
            plugin.ledger.add_listener(self._keep, "the OpenTelemetry export")
        if self._ingest_wanted:
            from ..capture.otel_spans import has_sdk_provider

            if has_sdk_provider():  # the code under test set its provider already: attach now
                self._install_ingest()

    # -- keeping the calls ------------------------------------------------------------------------

    def _time(self, call: Call, exchange: Exchange) -> None:
        """Recorder observer: the call's times, from its exchange (a deferred record keeps them)."""
        start = self._clock + int(exchange.started * 1e9)
        self._times[id(call)] = (
            call,
            start,
            start + int(call.duration_s * 1e9),
            _requested(exchange.request),
        )

    def _keep(self, call: Call) -> None:
        """Ledger listener: one record per call (a call recorded by hand or from a span ended now)."""
        timed = self._times.pop(id(call), None)
        if timed is not None and timed[0] is call:
            record = self._record_of(call, timed[1], timed[2], timed[3])
        else:
            end = time.time_ns()
            record = self._record_of(call, end - int(call.duration_s * 1e9), end)
        with self._lock:
            self._records.append(record)

    def _take(self, owner: str | None) -> list[list[Any]]:
        """xdist worker: the records of ``owner`` (None: of every owner) not shipped yet."""
        with self._lock:
            taken = [r for r in self._records if owner is None or r.owner == owner]
            self._records = [r for r in self._records if owner is not None and r.owner != owner]
        return [r.to_list() for r in taken]

    # -- the ingest -------------------------------------------------------------------------------

    def _install_ingest(self) -> None:
        from ..capture.otel_spans import install

        try:
            self.ingest = install(self.plugin.ledger)
        except Exception as exc:  # the code under test's OpenTelemetry set-up: reported, never raised
            self.ingest_problem = f"{type(exc).__name__}: {exc}"
            return
        self.plugin.capture.recorder.preflight.append(self.ingest.request_leaving)
        self.plugin.run.meta["otel_ingest"] = self.ingest.stats  # kept current as spans end

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Test modules are imported: one that sets a tracer provider has done so by now; when none
        did, an SDK provider of the plugin's is installed."""
        if self._ingest_wanted and self.ingest is None and not self.ingest_problem:
            self._install_ingest()

    # -- xdist ------------------------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True, tryfirst=True)  # outermost: after the plugin settles streams
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if self.exporting and self.plugin.role == "worker" and report.when == "teardown":
            records = self._take(item.nodeid)
            if records:
                setattr(report, REPORT_ATTR, json.dumps(records))
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.plugin.role == "worker" or not self.exporting:
            return
        start, stop = getattr(report, "start", None), getattr(report, "stop", None)
        if isinstance(start, float) and isinstance(stop, float):
            span = self._tests.setdefault(report.nodeid, [start, stop])
            span[0], span[1] = min(span[0], start), max(span[1], stop)
        shipped = getattr(report, REPORT_ATTR, None)
        if isinstance(shipped, str):
            self._receive(json.loads(shipped))

    def _receive(self, records: list[Any]) -> None:
        from ..report.otel import CallRecord

        received = [CallRecord.from_list(r) for r in records]
        with self._lock:
            self._records += received

    @pytest.hookimpl(trylast=True)  # after the plugin's own: streams settled, calls all recorded
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.plugin.role != "worker":
            return
        output: dict[str, Any] = {"calls": self._take(None) if self.exporting else []}
        if self.ingest is not None:
            output["ingest"] = self.ingest.stats
        session.config.workeroutput[OUTPUT_KEY] = output  # type: ignore[attr-defined]

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        output = getattr(node, "workeroutput", {}).get(OUTPUT_KEY)
        if not isinstance(output, Mapping):
            return
        self._receive(list(output.get("calls") or []))
        stats = output.get("ingest")
        if isinstance(stats, Mapping):
            merged = self.plugin.run.meta.setdefault(
                "otel_ingest", {"spans": 0, "counted": 0, "already_counted": 0, "tests": {}}
            )
            for key in ("spans", "counted", "already_counted"):
                merged[key] += int(stats.get(key, 0))
            for nodeid, count in dict(stats.get("tests") or {}).items():
                merged["tests"][nodeid] = merged["tests"].get(nodeid, 0) + int(count)

    # -- the export and the summary ---------------------------------------------------------------

    def pytest_tokenbudget_run_finished(self, run: Run, config: pytest.Config) -> None:
        if not self.exporting:
            return
        from ..report.otel import export_run

        with self._lock:
            records = sorted(self._records, key=lambda r: (r.owner, r.start_ns))
        tests = {nodeid: (int(a * 1e9), int(b * 1e9)) for nodeid, (a, b) in self._tests.items()}
        self.exported = export_run(run, records, tests, started_ns=self.started_ns, ended_ns=time.time_ns())

    @pytest.hookimpl(trylast=True)  # below the plugin's "token budget" section
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.plugin.role == "worker":
            return
        from ..units import count

        stats = self.plugin.run.meta.get("otel_ingest")
        if isinstance(stats, Mapping) and stats.get("spans"):
            terminalreporter.write_line(
                f"OpenTelemetry ingest: {count(stats['spans'], 'gen_ai span')} with usage; "
                f"{count(stats['counted'], 'call')} counted from spans (source otel), "
                f"{stats['already_counted']:,} already counted (at the HTTP layer, or by a span inside it)"
            )
        if self.ingest_problem:
            terminalreporter.write_line(
                f"pytest-tokenbudget: OpenTelemetry ingest is off: {self.ingest_problem}", yellow=True
            )
        if self.exported is not None:
            failed = bool(self.exported.problem)
            terminalreporter.write_line(self.exported.summary(), yellow=failed)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self.ingest is not None:
            self.ingest.shutdown()  # inert from now on: the provider outlives the session


def _requested(request: Any) -> str:
    """The model a request asked for, when its body says so cheaply (the first ``"model"`` key)."""
    if isinstance(request, Mapping):
        model = request.get("model") or request.get("modelId")
        return str(model) if isinstance(model, str) else ""
    body = request_bytes(request)
    found = _MODEL.search(body) if body else None
    return clean(found.group(1).decode("utf-8", "replace")) if found else ""
