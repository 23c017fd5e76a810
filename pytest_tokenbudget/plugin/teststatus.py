"""``-v``: each test's tokens and cost beside its outcome, ``PASSED [1,234 tok $0.0012]``.

A small role object, registered only with ``--token-budget`` at verbosity 1 or more. When the call
phase's report is made, the test's usage so far (setup and call) is written on the report as a
short text attribute; under xdist that attribute travels with the report to the controller, whose
terminal prints it. The verbose word is extended by wrapping ``pytest_report_teststatus``; the
category and the short letter are left as they are, so ``-q`` output and the summary counts never
change, and tests that made no call show nothing more. The short test summary at the end keeps
pytest's own words (``FAILED <node id> - <message>``), which tools parse.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from .. import units as fmt
from ..model import Run, Tally

STATUS_ATTR = "tokenbudget_status"
"""Report attribute: the text shown beside the outcome (a string, so xdist serialises it)."""


def status_text(tally: Tally) -> str:
    """``1,234 tok $0.0012``; ``~`` marks estimates, ``≥`` a partly priced cost."""
    mark = "~" if tally.estimated_calls else ""
    if tally.unpriced_calls >= tally.calls:
        cost = "cost unknown"
    else:
        cost = fmt.money(tally.cost_usd, known=tally.cost_known)
    return f"{mark}{fmt.tokens(tally.total_tokens)} tok {cost}"


class OutcomeUsage:
    """The hooks; ``run`` is the session's live run (the ledger's)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.summarising = False  # the short test summary keeps pytest's words ("FAILED id - …")

    def pytest_terminal_summary(self) -> None:
        """Runs inside the terminal reporter's own summary hook, before its short test summary."""
        self.summarising = True

    @pytest.hookimpl(wrapper=True, tryfirst=True)  # outermost: after the plugin has drained its ledger
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if report.when == "call":
            entry = self.run.tests.get(item.nodeid)
            if entry is not None and entry.total.calls:
                setattr(report, STATUS_ATTR, status_text(entry.total))
        return report

    @pytest.hookimpl(wrapper=True)
    def pytest_report_teststatus(
        self, report: pytest.TestReport | pytest.CollectReport, config: pytest.Config
    ) -> Generator[None, Any, Any]:
        result = yield
        text = getattr(report, STATUS_ATTR, None)
        if not isinstance(text, str) or not result or self.summarising or config.get_verbosity() < 1:
            return result
        category, letter, word = result
        if isinstance(word, tuple) and word and word[0]:
            word = (f"{word[0]} [{text}]", *word[1:])
        elif isinstance(word, str) and word:
            word = f"{word} [{text}]"
        return category, letter, word
