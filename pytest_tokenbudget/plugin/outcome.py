"""Per test: its entry in the run (path, line, outcome) and its budget verdicts."""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

from . import stash

if TYPE_CHECKING:
    from .attribution import Attribution
    from .session import Session


class PerTest:
    """Registered where tests run: settles each test's calls at its end and holds it to its budget."""

    def __init__(self, session: Session, attribution: Attribution) -> None:
        self.session = session
        self.ledger = session.ledger
        self.nodeid_of = attribution.nodeid_of

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        session = self.session
        self.ledger.drain()  # outside the test's event loop: the observers and deferred records
        if session.hard_cap is not None and call.excinfo is not None and report.failed:
            self._refusal(item, call.excinfo, report)
        if report.when == "teardown":  # the test is over
            nodeid = self.nodeid_of(item)
            self.ledger.settle_streams(nodeid)  # streams it left open are settled now
            if session.inspector is not None:
                session.inspector.settle(self.ledger.run, nodeid)
            entry = self.ledger.run.tests.get(nodeid)
            if entry is not None and entry.total.calls:  # markers are listed for tests with calls
                entry.markers = tuple(sorted({m.name for m in item.iter_markers()}))
        if session.judging:
            self._judge(item, report)
        return report

    def _refusal(self, item: pytest.Item, excinfo: pytest.ExceptionInfo[BaseException], report: Any) -> None:
        """A request the hard cap refused fails its test with the one sentence, not a traceback
        through the SDK (``--tb=long`` and ``--tb=native`` still show it all)."""
        from ..judge.hardcap import TokenBudgetExceeded

        tbstyle = self.session.config.option.tbstyle
        if not excinfo.errisinstance(TokenBudgetExceeded) or tbstyle in ("long", "native"):
            return
        path, line, _ = item.location
        report.longrepr = Overrun(f"TokenBudgetExceeded: {excinfo.value}", path, line)

    def _judge(self, item: pytest.Item, report: pytest.TestReport) -> None:
        """Hold the test to its marker (or the per-test default), counting setup, call and teardown.

        After the call phase an overrun fails the test; a budget crossed only by teardown-phase
        calls makes the teardown an error. The verdicts are taken once, at teardown; a rerun's
        attempt replaces the earlier attempt's, judged on the test's running total.
        """
        session = self.session
        marker = item.stash.get(stash.marker_key, None)
        if marker is None and not session.per_test_default:
            return  # the common case: nothing to hold this test to
        if report.when != "teardown" and not report.passed:
            item.stash[stash.bad_phase_key] = True
        if report.when == "setup":
            return
        from ..model import Status

        path, line, _ = report.location
        verdicts = session.budgets.judge_test(
            self.ledger.usage_of(item.nodeid), marker, path=path, line=line + 1 if line is not None else None
        )
        over = [v for v in verdicts if v.status == Status.EXCEEDED]
        if report.when == "teardown":
            session.test_verdicts[item.nodeid] = verdicts
            if not over or item.stash.get(stash.bad_phase_key, False):
                return
        elif not over:
            return
        text = "\n".join(v.message for v in over)
        if report.passed:
            report.outcome = "failed"
            # pytest's annotation names its own classes; it prints any longrepr with toterminal()
            report.longrepr = Overrun(text, path, line)  # type: ignore[assignment]
            item.stash[stash.bad_phase_key] = True
        else:
            report.sections.append(("token budget", text))


class Outcomes:
    """Registered where reports are read (alone, or the xdist controller): each test's entry."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.run = session.run

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        self.session.finished_tests += 1  # fewer than collected: the run is partial

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Every test gets its entry (path, line, outcome) from its call report, or from its setup
        report when that failed or skipped; a failed teardown makes the outcome an error."""
        when = report.when
        if when == "call" or (when == "setup" and report.outcome != "passed"):
            entry = self.run.usage_for(report.nodeid)
            path, line, _ = report.location
            entry.path = path
            entry.line = line + 1 if line is not None else None
            entry.outcome = report.outcome
        elif when == "teardown" and report.outcome == "failed":
            self.run.usage_for(report.nodeid).outcome = "error"


class Overrun:
    """A budget failure as pytest shows it: the sentence with numbers, no traceback."""

    def __init__(self, text: str, path: str, line: int | None) -> None:
        from ..units import clean

        self.text = "\n".join(clean(part) for part in text.splitlines())
        self.reprcrash = _Crash(path, (line or 0) + 1, self.text.splitlines()[0])

    def toterminal(self, out: Any) -> None:
        for line in self.text.splitlines():
            out.line(line, red=True, bold=True)

    def __str__(self) -> str:
        return self.text


class _Crash:
    """What ``-rf`` and ``--tb=line`` print for an overrun."""

    def __init__(self, path: str, lineno: int, message: str) -> None:
        self.path = path
        self.lineno = lineno
        self.message = message

    def __str__(self) -> str:
        return f"{self.path}:{self.lineno}: {self.message}"
