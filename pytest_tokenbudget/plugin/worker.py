"""pytest-xdist, on a worker: what the controller needs travels with the reports it is sent.

A test's usage travels as JSON text (its artifact entry): execnet serialises one string in about
a microsecond, and the same entry as nested dicts some seventy times slower, on both sides.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .attribution import Attribution
    from .session import Session

REPORT_ATTR = "tokenbudget"
"""Attribute set on teardown reports of xdist workers: the test's usage (its artifact entry); also
the key of the worker's ``workeroutput`` at its end."""
VERDICTS_ATTR = "tokenbudget_verdicts"
"""Attribute set on teardown reports of xdist workers: the test's budget verdicts."""
OUTSIDE_ATTR = "tokenbudget_outside"
"""A worker's fixture (and session) usage so far, shipped when it changed: a worker that crashes
later loses none of it."""


class Worker:
    """Registered on xdist workers only."""

    def __init__(self, session: Session, attribution: Attribution) -> None:
        self.session = session
        self.run = session.run
        self.nodeid_of = attribution.nodeid_of
        self._shipped = 0  # the run's verdicts (hard cap, …) sent to the controller so far
        self._outside_shipped: dict[str, int] = {}  # calls shipped per owner outside tests

    @pytest.hookimpl(wrapper=True, tryfirst=True)  # outermost: after the test is judged
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        outside = self._changed_outside()  # fixture usage with every phase's report: set up in a
        if outside:  # test that then crashes its worker, it still reaches the controller
            setattr(report, OUTSIDE_ATTR, json.dumps(outside))
        if report.when == "teardown":
            nodeid = self.nodeid_of(item)
            entry = self.run.tests.get(nodeid)
            if entry is not None:
                from ..runs.artifact import encode_test

                setattr(report, REPORT_ATTR, encode_test(entry))
            fresh = self.session.test_verdicts.pop(nodeid, []) + self.run.verdicts[self._shipped :]
            self._shipped = len(self.run.verdicts)
            if fresh:
                setattr(report, VERDICTS_ATTR, json.dumps([v.to_dict() for v in fresh]))
        return report

    def _changed_outside(self) -> dict[str, Any]:
        """Fixture and session usage that changed since last shipped (whole entries)."""
        changed = {}
        for label in self.session.outside_owners:
            entry = self.run.tests.get(label)
            if entry is not None and entry.total.calls != self._outside_shipped.get(label, 0):
                self._outside_shipped[label] = entry.total.calls
                changed[label] = entry.to_dict()
        return changed

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """The worker's last word to the controller: usage outside tests, issues, prices, errors."""
        self.session.settle()
        self.session.verdicts_joined()  # tests judged but not shipped (a report never sent)
        recorder = self.session.capture.recorder
        call_log = self.session.call_log
        self.session.config.workeroutput[REPORT_ATTR] = {  # type: ignore[attr-defined]
            "outside": {k: v.to_dict() for k, v in self.run.tests.items() if v.kind != "test"},
            "issues": self.run.issues,
            "verdicts": [v.to_dict() for v in self.run.verdicts[self._shipped :]],
            "prices": self.session.price_provenance(),
            "call_log": str(call_log.close()) if call_log is not None else "",
            "internal_errors": [recorder.internal_errors, recorder.first_errors],
            "sink_failures": self.session.ledger.failures,
        }
