"""The session gate's light half: which verdicts fail a session, and the canonical order of a
run's verdicts and issues.

Imported by the plugin after every test loop, so it stays small (no budgets, no merge): the rest of
the gate — taking verdicts again over merged shards — is in check.py and merge.py, which use these.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any, Final

from ..model import Run, Status, Verdict

PER_TEST_KINDS: Final = frozenset({"marker", "test-default"})
"""Verdict kinds that fail their own test (the session gate does not count them again)."""

TAKEN_DURING_TESTS: Final = frozenset({*PER_TEST_KINDS, "hard-cap"})
"""Verdict kinds taken while the tests ran; every other kind is taken after the loop over a run."""


def session_failures(verdicts: Iterable[Verdict], mode: str) -> list[Verdict]:
    """Exceeded verdicts that fail the session; per-test ones failed their test already."""
    if mode != "fail":
        return []
    return [v for v in verdicts if v.status == Status.EXCEEDED and v.kind not in PER_TEST_KINDS]


def canonicalise(run: Run) -> Run:
    """Put verdicts and issues in an order that does not depend on how the tests were scheduled.

    Verdicts taken during tests come first, in file and line order of their test (pytest's usual
    run order; a test's own verdicts keep their order), then the after-loop verdicts in the order
    they were taken; issues follow the same test order.
    """
    during = [v for v in run.verdicts if v.kind in TAKEN_DURING_TESTS]
    after = [v for v in run.verdicts if v.kind not in TAKEN_DURING_TESTS]
    run.verdicts[:] = sorted(during, key=lambda v: run_order(v.nodeid, v.path, v.line)) + after
    tests = run.tests

    def issue_order(issue: dict[str, Any]) -> tuple[bool, tuple[str, ...], int, str]:
        nodeid = str(issue.get("test", ""))
        entry = tests.get(nodeid)
        return run_order(nodeid, entry.path if entry else "", entry.line if entry else None)

    run.issues.sort(key=issue_order)
    return run


def run_order(nodeid: str, path: str, line: int | None) -> tuple[bool, tuple[str, ...], int, str]:
    """Sort key in pytest's collection order (folders and files by name, then line); without a test,
    last."""
    if not nodeid:
        return (True, (), 0, "")
    return (False, _folders(path or nodeid.split("::", 1)[0]), line or 0, nodeid)


@functools.lru_cache(maxsize=4096)
def _folders(path: str) -> tuple[str, ...]:
    """``path`` split at ``/``; remembered, as a run has many tests in few files (and keys that hold
    the very same tuple compare faster)."""
    return tuple(path.split("/"))
