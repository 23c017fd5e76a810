"""pytest-xdist, on the controller: fold in what each worker shipped with its reports and at its end."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from .worker import OUTSIDE_ATTR, REPORT_ATTR, VERDICTS_ATTR

if TYPE_CHECKING:
    from .session import Session


class Controller:
    """Registered on the xdist controller only (which runs no test itself)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.run = session.run
        self._outside_latest: dict[str, dict[str, Any]] = {}  # worker → owner → data

    @pytest.hookimpl(tryfirst=True)  # before the test's entry is filled in (outcome.Outcomes)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when not in ("setup", "call", "teardown"):
            self._crashed(report)  # xdist: the worker running this test died
            return
        outside = getattr(report, OUTSIDE_ATTR, None)
        if isinstance(outside, str):
            self._outside_latest.setdefault(worker_id(report), {}).update(json.loads(outside))
        if report.when != "teardown":
            return
        shipped = getattr(report, REPORT_ATTR, None)
        if isinstance(shipped, str):
            from ..model import TestUsage

            entry = TestUsage.from_dict(report.nodeid, json.loads(shipped))
            self.run.usage_for(report.nodeid).merge(entry)
        verdicts = getattr(report, VERDICTS_ATTR, None)
        if isinstance(verdicts, str):
            from ..judge.gate import PER_TEST_KINDS
            from ..model import Verdict

            per_test: dict[str, list[Verdict]] = {}
            for verdict in map(Verdict.from_dict, json.loads(verdicts)):
                if verdict.kind in PER_TEST_KINDS:
                    per_test.setdefault(verdict.nodeid or "", []).append(verdict)
                else:
                    self.run.verdicts.append(verdict)
            self.session.test_verdicts.update(per_test)  # a rerun's attempt supersedes the last

    def _crashed(self, report: pytest.TestReport) -> None:
        """A test whose worker died: its calls are lost with the worker; say so."""
        entry = self.run.usage_for(report.nodeid)
        entry.outcome = "failed"  # pytest's word for it too; meta.lost_workers says why
        entry.path = entry.path or report.location[0]
        worker = worker_id(report)
        lost = self.session.lost_workers
        if worker in lost:  # xdist calls pytest_testnodedown before it reports the crash
            lost.remove(worker)
        lost.append(f"{worker} while running {report.nodeid}")

    @pytest.hookimpl(optionalhook=True)  # an xdist hook: unknown (and never called) without xdist
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """Fold in what a worker used outside tests (session fixtures); from a worker that died,
        what it last shipped with a test report."""
        from ..model import TestUsage, Verdict

        session = self.session
        latest = self._outside_latest.pop(worker_id(node), {})
        output = getattr(node, "workeroutput", {}).get(REPORT_ATTR)
        if not output:
            for nodeid, data in latest.items():
                entry = TestUsage.from_dict(nodeid, data)
                self.run.usage_for(nodeid, data.get("kind", "fixture")).merge(entry)
            if error is not None and not any(
                w.startswith(f"{worker_id(node)} ") for w in session.lost_workers
            ):
                session.lost_workers.append(f"{worker_id(node)}")
            return
        for nodeid, data in output.get("outside", {}).items():
            self.run.usage_for(nodeid, data.get("kind", "fixture")).merge(TestUsage.from_dict(nodeid, data))
        self.run.issues.extend(output.get("issues", []))
        if isinstance(output.get("prices"), dict):
            session.worker_prices.append(output["prices"])
        if output.get("call_log"):
            session.worker_call_logs.append(str(output["call_log"]))
        count, first = output.get("internal_errors") or (0, [])
        recorder = session.capture.recorder
        recorder.internal_errors += count
        recorder.first_errors = (recorder.first_errors + list(first))[:3]
        for name, (times, text) in (output.get("sink_failures") or {}).items():
            failure = session.ledger.failures.setdefault(str(name), [0, str(text)])
            failure[0] += int(times)
        self.run.verdicts.extend(Verdict.from_dict(v) for v in output.get("verdicts", []))


def worker_id(holder: Any) -> str:
    """The xdist worker id (``gw0`` …) of a worker node or of a report it sent."""
    node = getattr(holder, "node", holder)
    worker_id = getattr(node, "workerinput", {}).get("workerid")
    gateway = getattr(node, "gateway", None)
    return str(worker_id or getattr(gateway, "id", "") or "")
