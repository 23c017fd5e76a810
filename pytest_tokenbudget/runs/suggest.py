"""``tokenbudget suggest``: budgets proposed from saved runs, as a diff of ``pyproject.toml``.

From the runs kept in the history folder (or artifacts named on the command line) it takes, for the
session and for each test that made calls, a high percentile of its total tokens and of its cost
(nearest rank: p95 of 20 runs is the 19th smallest), multiplies it by a headroom (1.2) and rounds
it *up* to two significant figures (1,234 × 1.2 → 1,500; $0.000168 × 1.2 → $0.00021). Tests that
made no call get no budget.

What the plugin reads: the session limits are ``max-tokens`` / ``max-cost`` of
``[tool.tokenbudget]``; a per-test limit is a scoped budget with ``per = "test"``, whose ``path``
chooses test *files* (pyproject has no key for one test id). So each file gets one
``[[tool.tokenbudget.budgets]]`` entry named ``suggested: <file>`` whose limits are the largest
of its tests' suggestions. ``--write`` edits the file with tomlkit, so its formatting and comments
are kept; entries named ``suggested: …`` are replaced, every other budget is left alone.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any, Final

from ..model import ArtifactError, Run

__all__ = ["Proposal", "SuggestError", "percentile", "propose", "round_up", "updated_pyproject"]

PREFIX: Final = "suggested: "
"""Names of the scoped budgets this command writes (and replaces when run again)."""


class SuggestError(ValueError):
    """Input that gives no suggestion: one line, exit 2."""


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile: the smallest value with at least ``pct`` % of values at or below."""
    if not values:
        raise ValueError("no values")
    ranked = sorted(values)
    return ranked[max(0, math.ceil(pct / 100 * len(ranked)) - 1)]


def round_up(value: float, digits: int = 2) -> float:
    """``value`` rounded up to ``digits`` significant figures (1,234 → 1,300; 0.0002016 → 0.00021)."""
    if value <= 0:
        return 0.0
    exact = Decimal(repr(float(value)))
    quantum = Decimal(1).scaleb(exact.adjusted() - digits + 1)
    return float((exact / quantum).to_integral_value(rounding=ROUND_CEILING) * quantum)


@dataclass(frozen=True, slots=True)
class Limit:
    """A suggested pair of limits; ``None``: not suggested (no tokens, or a cost not known)."""

    tokens: int | None
    cost: float | None


@dataclass(slots=True)
class Proposal:
    """Session limits and per-file (per-test) limits, with where they came from."""

    runs: int
    session: Limit
    tests: dict[str, Limit] = field(default_factory=dict)  # node id → its own suggestion
    files: dict[str, Limit] = field(default_factory=dict)  # file → the largest of its tests'
    skipped: list[str] = field(default_factory=list)  # runs not used, one sentence each


def load_runs(sources: Iterable[Path]) -> tuple[list[Run], list[str]]:
    """Runs from artifact files and folders of them (a folder's unreadable files are skipped with
    a note; a named file that cannot be read is an :class:`ArtifactError`)."""
    from .artifact import load_run

    runs: list[Run] = []
    notes: list[str] = []
    for source in sources:
        if source.is_dir():
            for path in sorted(source.glob("*.json")):
                try:
                    runs.append(load_run(path))
                except ArtifactError as exc:
                    notes.append(f"skipped {exc}")
        else:
            runs.append(load_run(source))
    return runs, notes


def propose(runs: Sequence[Run], *, headroom: float = 1.2, pct: float = 95.0) -> Proposal:
    """The limits for ``runs`` (partial runs are left out: their totals are lower bounds)."""
    if headroom < 1:
        raise SuggestError(f"--headroom must be at least 1 (the same usage must pass), got {headroom:g}")
    if not 0 < pct <= 100:
        raise SuggestError(f"--percentile must be in (0, 100], got {pct:g}")
    skipped = [
        f"a partial run ({run.meta.get('finished') or 'unfinished'}): its totals are a lower bound"
        for run in runs
        if run.meta.get("partial")
    ]
    complete = [run for run in runs if not run.meta.get("partial")]
    if not complete:
        raise SuggestError(
            "no complete saved run to suggest from (pytest --token-budget --token-budget-save-run)"
        )
    totals = [run.totals() for run in complete]
    session = _limit(
        [t.total_tokens for t in totals],
        [t.cost_usd if t.cost_known else None for t in totals],
        headroom,
        pct,
    )
    tokens: dict[str, list[int]] = {}
    costs: dict[str, list[float | None]] = {}
    files: dict[str, str] = {}
    for run in complete:
        for entry in run.iter_tests():
            if not entry.total.calls:
                continue
            tokens.setdefault(entry.nodeid, []).append(entry.total.total_tokens)
            costs.setdefault(entry.nodeid, []).append(
                entry.total.cost_usd if entry.total.cost_known else None
            )
            files[entry.nodeid] = entry.path or entry.nodeid.split("::", 1)[0]
    proposal = Proposal(len(complete), session, skipped=skipped)
    for nodeid in sorted(tokens):
        limit = _limit(tokens[nodeid], costs[nodeid], headroom, pct)
        proposal.tests[nodeid] = limit
        before = proposal.files.get(files[nodeid])
        proposal.files[files[nodeid]] = limit if before is None else _larger(before, limit)
    return proposal


def _limit(tokens: Sequence[int], costs: Sequence[float | None], headroom: float, pct: float) -> Limit:
    high = percentile(tokens, pct) * headroom
    token_limit = max(1, math.ceil(round_up(high))) if high > 0 else None
    known = [c for c in costs if c is not None]
    cost_limit = None
    if len(known) == len(costs) and percentile(known, pct) > 0:  # a cost limit only when always priced
        cost_limit = round_up(percentile(known, pct) * headroom)
    return Limit(token_limit, cost_limit)


def _larger(a: Limit, b: Limit) -> Limit:
    """Per field the larger; a missing cost on either side leaves the file without a cost limit."""
    tokens = max((t for t in (a.tokens, b.tokens) if t is not None), default=None)
    cost = None if a.cost is None or b.cost is None else max(a.cost, b.cost)
    return Limit(tokens, cost)


def _glob_literal(path: str) -> str:
    """``path`` as an fnmatch pattern matching only itself (``[`` → ``[[]``)."""
    return "".join(f"[{ch}]" if ch in "*?[" else ch for ch in path)


# -- pyproject.toml --------------------------------------------------------------------------------


def updated_pyproject(text: str, proposal: Proposal) -> str:
    """``text`` (a pyproject.toml, possibly empty) with the proposal written in, formatting and
    comments kept."""
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    try:
        doc = tomlkit.parse(text)
    except TOMLKitError as exc:
        raise SuggestError(f"not valid TOML: {exc}") from exc
    tool = doc.get("tool")
    if tool is None:
        tool = doc["tool"] = tomlkit.table(is_super_table=True)
    table = tool.get("tokenbudget")
    if table is None:
        table = tool["tokenbudget"] = tomlkit.table()
    for key, value in (("max-tokens", proposal.session.tokens), ("max-cost", proposal.session.cost)):
        if value is not None:
            _set(table, key, value)
    budgets = table.get("budgets")
    if budgets is None:
        budgets = tomlkit.aot()
        table["budgets"] = budgets
    elif not isinstance(budgets, tomlkit.items.AoT):
        raise SuggestError(
            "[tool.tokenbudget] budgets must be an array of tables ([[tool.tokenbudget.budgets]])"
        )
    for index in reversed(range(len(budgets))):
        if str(budgets[index].get("name", "")).startswith(PREFIX):
            del budgets[index]
    for path, limit in sorted(proposal.files.items()):
        if limit.tokens is None and limit.cost is None:
            continue
        scope = tomlkit.table()
        scope["name"] = PREFIX + path
        scope["path"] = _glob_literal(path)
        scope["per"] = "test"
        if limit.tokens is not None:
            scope["max-tokens"] = limit.tokens
        if limit.cost is not None:
            scope["max-cost"] = limit.cost
        scope.add(tomlkit.nl())  # a blank line before whatever table follows
        budgets.append(scope)
    if not budgets:
        del table["budgets"]
    return tomlkit.dumps(doc)


def _set(table: Any, key: str, value: float) -> None:
    """``table[key] = value``: in place when the key is there (its comment kept), else after the
    table's last key, not after comments that belong to the next table."""
    if key in table:
        table[key] = value
        return
    keys = [k for k in table if not isinstance(table[k], (dict, list))]
    if keys:
        try:
            table.value._insert_after(keys[-1], key, value)  # tomlkit's own placement of a key
            return
        except (AttributeError, KeyError):  # another tomlkit: append instead
            pass
    table[key] = value


def unified_diff(before: str, after: str, name: str) -> str:
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True), after.splitlines(keepends=True), f"a/{name}", f"b/{name}"
        )
    )


def summary_lines(proposal: Proposal, *, headroom: float, pct: float) -> list[str]:
    """What was proposed, for standard error."""
    from .. import units as fmt

    session = proposal.session
    parts = [f"max-tokens {fmt.tokens(session.tokens)}" if session.tokens is not None else ""]
    parts.append(f"max-cost {fmt.money(session.cost)}" if session.cost is not None else "no cost limit")
    tests, files = fmt.count(len(proposal.tests), "test"), fmt.count(len(proposal.files), "file")
    lines = [
        f"{fmt.count(proposal.runs, 'run')}: p{pct:g} × {headroom:g}, rounded up to 2 significant digits",
        "session: " + ", ".join(p for p in parts if p),
        f"per test: {tests} with calls in {files} (a per-test budget per file: the largest of its tests')",
    ]
    return lines + [f"note: {note}" for note in proposal.skipped]
