"""The plugin's OpenTelemetry roles: export the run over OTLP (``--token-budget-otel``) and count
the code under test's ``gen_ai`` spans (``--token-budget-ingest-otel``).

:class:`Session` composes them (:meth:`Session._compose` wires :class:`CallRecords` and the ingest
into the pipeline; :meth:`Session._roles` registers the hooks by where the session runs):

- where calls are made (alone, or an xdist worker): :class:`CallRecords` keeps one small record
  per call, timed from its exchange; :class:`Ingest` attaches the span processor;
- an xdist worker: :class:`OtelWorker` ships its records on each test's teardown report (and the
  ones outside tests, with the ingest's counts, in its ``workeroutput``);
- the xdist controller: :class:`OtelController` takes them in;
- where the run is finished (alone, or the controller): :class:`OtelFinish` times the tests,
  exports once — one session span, every worker's tests under it — and writes the summary lines.
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
    from ..config import Settings
    from ..ledger import Ledger
    from ..model import Call, Run
    from ..report.otel import CallRecord, Exported

REPORT_ATTR: Final = "tokenbudget_otel"
"""xdist: attribute of a worker's teardown report, the test's call records (JSON text)."""
OUTPUT_KEY: Final = "tokenbudget_otel"
"""xdist: key of a worker's ``workeroutput``: the call records left over, and the ingest stats."""
_MODEL: Final = re.compile(rb'"model"\s*:\s*"([^"\\]{1,200})"')


def require_sdk(settings: Settings) -> None:
    """A usage error when export or ingest is asked for without the OpenTelemetry SDK installed."""
    for on, flag in (
        (settings.otel, "--token-budget-otel"),
        (settings.ingest_otel, "--token-budget-ingest-otel"),
    ):
        if on and importlib.util.find_spec("opentelemetry.sdk") is None:
            raise pytest.UsageError(
                f"pytest-tokenbudget: {flag} needs the OpenTelemetry SDK: "
                "pip install 'pytest-tokenbudget[otel]'"
            )


class CallRecords:
    """The export's record of every call: made here (a recorder observer times it, a ledger
    listener keeps it) or, on the xdist controller, received from the workers."""

    def __init__(self) -> None:
        from ..report.otel import CallRecord  # the standard library and model/ only

        self._record_of = CallRecord.of
        self._from_list = CallRecord.from_list
        self._clock = time.time_ns() - time.perf_counter_ns()  # perf_counter → epoch ns
        self._lock = threading.Lock()
        self._records: list[CallRecord] = []
        self._times: dict[int, tuple[Call, int, int, str]] = {}  # id(call) → timing, just before it is kept

    def time(self, call: Call, exchange: Exchange) -> None:
        """Recorder observer: the call's times, from its exchange (a deferred record keeps them)."""
        start = self._clock + int(exchange.started * 1e9)
        stop = start + int(call.duration_s * 1e9)
        self._times[id(call)] = (call, start, stop, _requested(exchange.request))

    def keep(self, call: Call) -> None:
        """Ledger listener: one record per call (a call recorded by hand or from a span ended now)."""
        timed = self._times.pop(id(call), None)
        if timed is not None and timed[0] is call:
            record = self._record_of(call, timed[1], timed[2], timed[3])
        else:
            end = time.time_ns()
            record = self._record_of(call, end - int(call.duration_s * 1e9), end)
        with self._lock:
            self._records.append(record)

    def take(self, owner: str | None) -> list[list[Any]]:
        """The records of ``owner`` (None: of every owner), as lists, removed from here."""
        with self._lock:
            taken = [r for r in self._records if owner is None or r.owner == owner]
            self._records = [r for r in self._records if owner is not None and r.owner != owner]
        return [r.to_list() for r in taken]

    def receive(self, records: list[Any]) -> None:
        """Records a worker shipped (as :meth:`take` gave them)."""
        received = [self._from_list(r) for r in records]
        with self._lock:
            self._records += received

    def in_order(self) -> list[CallRecord]:
        with self._lock:
            return sorted(self._records, key=lambda r: (r.owner, r.start_ns))


class Ingest:
    """Role where calls are made: counts finished ``gen_ai`` spans into the ledger. Its
    :meth:`request_leaving` is a recorder preflight hook, so that a call seen at the HTTP layer
    is not counted again from its span."""

    def __init__(self, ledger: Ledger) -> None:
        from ..capture.otel_spans import has_sdk_provider

        self._ledger = ledger
        self.spans: SpanIngest | None = None
        self.problem = ""
        if has_sdk_provider():  # the code under test set its provider already: attach now
            self._install()

    def _install(self) -> None:
        from ..capture.otel_spans import install

        try:
            self.spans = install(self._ledger)
        except Exception as exc:  # the code under test's OpenTelemetry set-up: reported, never raised
            self.problem = f"{type(exc).__name__}: {exc}"
            return
        self._ledger.run.meta["otel_ingest"] = self.spans.stats  # kept current as spans end

    def request_leaving(self, exchange: Exchange, request: Any) -> None:
        if self.spans is not None:
            self.spans.request_leaving(exchange, request)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Test modules are imported: one that sets a tracer provider has done so by now; when none
        did, an SDK provider of the plugin's is installed."""
        if self.spans is None and not self.problem:
            self._install()

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self.spans is not None:
            self.spans.shutdown()  # inert from now on: the provider outlives the session


class OtelWorker:
    """xdist worker role: ships the call records to the controller."""

    def __init__(self, records: CallRecords | None, ingest: Ingest | None) -> None:
        self.records = records
        self.ingest = ingest

    @pytest.hookimpl(wrapper=True, tryfirst=True)  # outermost: after the plugin settles streams
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if self.records is not None and report.when == "teardown":
            records = self.records.take(item.nodeid)
            if records:
                setattr(report, REPORT_ATTR, json.dumps(records))
        return report

    @pytest.hookimpl(trylast=True)  # after the plugin's own: streams settled, calls all recorded
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        output: dict[str, Any] = {"calls": self.records.take(None) if self.records is not None else []}
        if self.ingest is not None and self.ingest.spans is not None:
            output["ingest"] = self.ingest.spans.stats
        session.config.workeroutput[OUTPUT_KEY] = output  # type: ignore[attr-defined]


class OtelController:
    """xdist controller role: takes in the workers' call records and ingest counts."""

    def __init__(self, records: CallRecords | None, run: Run) -> None:
        self.records = records
        self.run = run

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        shipped = getattr(report, REPORT_ATTR, None)
        if self.records is not None and isinstance(shipped, str):
            self.records.receive(json.loads(shipped))

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        output = getattr(node, "workeroutput", {}).get(OUTPUT_KEY)
        if not isinstance(output, Mapping):
            return
        if self.records is not None:
            self.records.receive(list(output.get("calls") or []))
        stats = output.get("ingest")
        if isinstance(stats, Mapping):
            merged = self.run.meta.setdefault(
                "otel_ingest", {"spans": 0, "counted": 0, "already_counted": 0, "tests": {}}
            )
            for key in ("spans", "counted", "already_counted"):
                merged[key] += int(stats.get(key, 0))
            for nodeid, count in dict(stats.get("tests") or {}).items():
                merged["tests"][nodeid] = merged["tests"].get(nodeid, 0) + int(count)


class OtelFinish:
    """Role where the run is finished (alone, or the xdist controller): the tests' times, the
    export, and the summary lines."""

    def __init__(self, records: CallRecords | None, ingest: Ingest | None, run: Run) -> None:
        self.records = records
        self.ingest = ingest
        self.run = run
        self.started_ns = time.time_ns()
        self._tests: dict[str, list[float]] = {}  # node id → [first start, last stop] (epoch s)
        self.exported: Exported | None = None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.records is None:
            return
        start, stop = getattr(report, "start", None), getattr(report, "stop", None)
        if isinstance(start, float) and isinstance(stop, float):
            span = self._tests.setdefault(report.nodeid, [start, stop])
            span[0], span[1] = min(span[0], start), max(span[1], stop)

    def pytest_tokenbudget_run_finished(self, run: Run, config: pytest.Config) -> None:
        if self.records is None:
            return
        from ..report.otel import export_run

        tests = {nodeid: (int(a * 1e9), int(b * 1e9)) for nodeid, (a, b) in self._tests.items()}
        self.exported = export_run(
            run, self.records.in_order(), tests, started_ns=self.started_ns, ended_ns=time.time_ns()
        )

    @pytest.hookimpl(trylast=True)  # below the plugin's "token budget" section
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        from ..units import count

        stats = self.run.meta.get("otel_ingest")
        if isinstance(stats, Mapping) and stats.get("spans"):
            terminalreporter.write_line(
                f"OpenTelemetry ingest: {count(stats['spans'], 'gen_ai span')} with usage; "
                f"{count(stats['counted'], 'call')} counted from spans (source otel), "
                f"{stats['already_counted']:,} already counted (at the HTTP layer, or by a span inside it)"
            )
        if self.ingest is not None and self.ingest.problem:
            terminalreporter.write_line(
                f"pytest-tokenbudget: OpenTelemetry ingest is off: {self.ingest.problem}", yellow=True
            )
        if self.exported is not None:
            terminalreporter.write_line(self.exported.summary(), yellow=bool(self.exported.problem))


def _requested(request: Any) -> str:
    """The model a request asked for, when its body says so cheaply (the first ``"model"`` key)."""
    if isinstance(request, Mapping):
        model = request.get("model") or request.get("modelId")
        return str(model) if isinstance(model, str) else ""
    body = request_bytes(request)
    found = _MODEL.search(body) if body else None
    return clean(found.group(1).decode("utf-8", "replace")) if found else ""
