"""The end-of-run terminal section, as lines with markup; pytest's writer prints them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

from .. import units as fmt
from ..model import INSPECTION_KINDS, Run, Status, Tally, TestUsage, Verdict
from .markup import Line

_STATUS_ORDER: dict[str, int] = {Status.EXCEEDED: 0, Status.UNKNOWN: 1, Status.WARN: 2, Status.OK: 3}
_STATUS_MARKUP: dict[str, dict[str, bool]] = {
    Status.EXCEEDED: {"red": True, "bold": True},
    Status.WARN: {"yellow": True},
    Status.UNKNOWN: {"yellow": True},
    Status.OK: {"green": True},
}


def usage_sentence(tally: Tally) -> str:
    """``4,210 tokens (input 3,900 incl. 1,200 cached, output 310 incl. 40 reasoning)``."""
    u = tally.usage
    input_parts = []
    if u.cached_input_tokens:
        input_parts.append(f"{fmt.tokens(u.cached_input_tokens)} cached")
    if u.cache_write_tokens:
        input_parts.append(f"{fmt.tokens(u.cache_write_tokens)} cache-write")
    input_text = f"input {fmt.tokens(u.input_tokens)}"
    if input_parts:
        input_text += " incl. " + ", ".join(input_parts)
    output_text = f"output {fmt.tokens(u.output_tokens)}"
    if u.reasoning_tokens:
        output_text += f" incl. {fmt.tokens(u.reasoning_tokens)} reasoning"
    return f"{fmt.tokens(u.total_tokens)} tokens ({input_text}, {output_text})"


@lru_cache(maxsize=1024, typed=True)  # a row per test at scale, few distinct counts
def _calls(n: int) -> str:
    return f"{n:,} call" + ("" if n == 1 else "s")


def render(run: Run, *, verbose: bool = False, top: int = 5) -> list[Line]:
    totals = run.totals()
    lines: list[Line] = []
    tests = [t for t in run.iter_tests() if t.total.calls]
    headline = f"{_calls(totals.calls)} in {len(tests):,} test" + ("" if len(tests) == 1 else "s")
    lines.append(Line(f"{headline}: {usage_sentence(totals)}", {"bold": True}))
    sources = []
    if totals.live_calls:
        sources.append(f"{totals.live_calls:,} live")
    if totals.replayed_calls:
        sources.append(f"{totals.replayed_calls:,} replayed")
    mocked = totals.calls - totals.live_calls - totals.replayed_calls - totals.manual_calls
    if mocked:
        sources.append(f"{mocked:,} mocked")
    if totals.manual_calls:
        sources.append(f"{totals.manual_calls:,} recorded by hand")
    if sources:
        lines.append(Line("calls: " + ", ".join(sources)))
    if totals.calls:
        lines.append(Line(cost_sentence(totals)))
    lines.extend(prices_lines(run))
    if run.comparison:
        from .comparison import terminal_lines

        lines.extend(terminal_lines(run.comparison))
    lines.extend(verdict_lines(run.verdicts, verbose=verbose, top=top))

    heaviest = run.heaviest(len(run.tests) if verbose else top)
    if heaviest:
        lines.append(Line(""))
        title = "tokens per test" if verbose else f"heaviest tests (top {min(top, len(heaviest))})"
        lines.append(Line(title + ":", {"bold": True}))
        rows: list[Sequence[str]] = [("total", "input", "output", "cost", "calls", "test")]
        rows += map(_heaviest_row, heaviest)
        lines.extend(Line("  " + row) for row in fmt.table(rows, ">>>>><"))

    models = run.models()
    if models:
        lines.append(Line(""))
        lines.append(Line("per model:", {"bold": True}))
        rows = [["total", "input", "cached", "output", "reasoning", "cost", "calls", "model"]]
        for key, tally in models.items():
            u = tally.usage
            rows.append(
                [
                    fmt.tokens(u.total_tokens),
                    fmt.tokens(u.input_tokens),
                    fmt.tokens(u.cached_input_tokens),
                    fmt.tokens(u.output_tokens),
                    fmt.tokens(u.reasoning_tokens),
                    _cost(tally),
                    _calls(tally.calls),
                    key,
                ]
            )
        lines.extend(Line("  " + row) for row in fmt.table(rows, ">>>>>>><"))

    if verbose:  # per file and per marker (issue 25)
        lines.extend(breakdown_lines(run))

    outside = [t for t in run.tests.values() if t.kind != "test" and t.total.calls]
    if outside:
        lines.append(Line(""))
        lines.append(Line("outside tests:", {"bold": True}))
        for entry in sorted(outside, key=lambda t: t.nodeid):
            lines.append(
                Line(f"  {entry.nodeid}: {_calls(entry.total.calls)}, {usage_sentence(entry.total)}")
            )

    if run.issues:
        lines.append(Line(""))
        lines.append(
            Line(f"calls with incomplete usage ({len(run.issues):,}):", {"yellow": True, "bold": True})
        )
        shown = run.issues if verbose else run.issues[:top]
        for issue in shown:
            where = f"{issue['test']} [{issue['api']} {issue['model']}]"
            lines.append(Line(f"  {issue['state']}: {where} {issue['detail']}".rstrip(), {"yellow": True}))
        if len(shown) < len(run.issues):
            lines.append(Line(f"  … {len(run.issues) - len(shown):,} more (-v shows all)"))
    return lines


def breakdown_lines(run: Run) -> list[Line]:
    """``per file:`` and ``per marker:`` tables (a test with two markers counts under both)."""
    lines: list[Line] = []
    for title, tallies in (("per file", run.files()), ("per marker", run.markers())):
        if not tallies:
            continue
        lines += [Line(""), Line(title + ":", {"bold": True})]
        rows: list[Sequence[str]] = [("total", "input", "output", "cost", "calls", title.split()[1])]
        for name, tally in sorted(tallies.items(), key=lambda kv: (-kv[1].total_tokens, kv[0])):
            rows.append(
                (
                    fmt.tokens(tally.total_tokens),
                    fmt.tokens(tally.input_tokens),
                    fmt.tokens(tally.output_tokens),
                    _cost(tally),
                    _calls(tally.calls),
                    name,
                )
            )
        lines.extend(Line("  " + row) for row in fmt.table(rows, ">>>>><"))
    return lines


# Token counts in the per-test table, remembered: 3 a row for every test with -v, and counts repeat
# (the same cassettes replayed); a hit is cheaper than formatting. Only for a
# tally's ints: typed, so 1.0 cannot take 1's text, but 0.0 and -0.0 would share one.
_tokens = lru_cache(maxsize=4096, typed=True)(fmt.tokens)


def _heaviest_row(entry: TestUsage) -> tuple[str, ...]:
    """One row of the per-test table: total (``~`` when estimated), input, output, cost, calls, id."""
    total = entry.total
    if total.caveats is None:
        # Most tallies: no caveat, so nothing estimated and every call priced: the caveat
        # properties are skipped (a -v table has a row per test).
        mark, cost = "", fmt.money(total.cost_usd)
    else:
        mark, cost = ("~" if total.estimated_calls else ""), _cost(total)
    return (
        mark + _tokens(total.total_tokens),
        _tokens(total.input_tokens),
        _tokens(total.output_tokens),
        cost,
        _calls(total.calls),
        entry.nodeid,
    )


def _cost(tally: Tally) -> str:
    """A tally's cost: ``unknown`` when no call had a price, ``≥$x`` when only some had."""
    if tally.calls and tally.unpriced_calls >= tally.calls:
        return "unknown"
    return fmt.money(tally.cost_usd, known=tally.cost_known)


def cost_sentence(totals: Tally) -> str:
    """``cost: $0.0123 (live $0.002, replayed $0.0103)``; unknown prices make it a lower bound."""
    text = f"cost: {_cost(totals)}"
    if totals.calls and totals.unpriced_calls < totals.calls:
        replayed = totals.cost_usd - totals.live_cost_usd
        text += f" (live {fmt.money(totals.live_cost_usd)}, replayed/mocked {fmt.money(replayed)})"
    if totals.unpriced_calls:
        text += f"; {_calls(totals.unpriced_calls)} without a price"
    return text


def prices_lines(run: Run) -> list[Line]:
    """Which prices were used, and the models that had none."""
    prices = run.meta.get("prices")
    if not isinstance(prices, dict) or not (prices.get("calls_by_source") or prices.get("unknown")):
        return []
    parts = []
    if prices.get("calls_by_source", {}).get("genai-prices"):
        data = f", data {prices['data_date']}" if prices.get("data_date") else ""
        parts.append(f"genai-prices {prices.get('version') or '?'}{data}")
    if prices.get("calls_by_source", {}).get("pyproject"):
        parts.append("[tool.tokenbudget.prices]")
    lines = [Line("prices: " + " + ".join(parts))] if parts else []
    unknown = prices.get("unknown") or []
    if unknown:
        shown = ", ".join(f"{u['provider']}/{u['model']} ({_calls(int(u['calls']))})" for u in unknown[:5])
        more = f" and {len(unknown) - 5:,} more" if len(unknown) > 5 else ""
        lines.append(Line(f"no price for: {shown}{more}", {"yellow": True}))
    return lines


def verdict_lines(verdicts: list[Verdict], *, verbose: bool = False, top: int = 5) -> list[Line]:
    """Budgets and thresholds: each limit, its actual and its status (worst first).

    Compact: everything not ``ok`` plus the session-level budgets that passed; ``-v``: all.
    """
    verdicts = [v for v in verdicts if v.kind not in INSPECTION_KINDS]  # shown by inspector.py
    if not verdicts:
        return []
    shown = [v for v in verdicts if verbose or v.status != Status.OK or not v.nodeid]
    shown.sort(key=lambda v: _STATUS_ORDER.get(v.status, 9))
    hidden = len(verdicts) - len(shown)
    found = Counter(v.status for v in verdicts)
    counts = {status: found[status] for status in _STATUS_ORDER}
    summary = ", ".join(f"{n:,} {status}" for status, n in counts.items() if n)
    lines = [Line(""), Line(f"budgets ({summary}):", {"bold": True})]
    limit = len(shown) if verbose else min(len(shown), max(top, sum(v.status != Status.OK for v in shown)))
    for verdict in shown[:limit]:
        text = verdict.message or f"{verdict.name}: {verdict.metric} {verdict.actual:g} of {verdict.limit:g}"
        if verdict.nodeid and verdict.nodeid not in text:
            text = f"{verdict.nodeid}: {text}"
        lines.append(Line(f"  {verdict.status:<8}  {text}", _STATUS_MARKUP.get(verdict.status, {})))
    rest = len(shown) - limit + hidden
    if rest > 0:
        lines.append(Line(f"  … {rest:,} more within budget (-v shows all)"))
    return lines


def inspection_lines(run: Run, *, top: int = 5) -> list[Line]:
    """Request inspection's lines: estimates, where the input goes, context windows, findings."""
    from ..inspection.inspector import parts_of, share

    lines: list[Line] = []
    totals = run.totals()
    if totals.estimated_calls:
        noun = "call" if totals.estimated_calls == 1 else "calls"
        lines.append(
            Line(
                f"~ estimated: {totals.estimated_calls:,} {noun} reported no usage or only part of it; "
                "counted by tokenizer"
            )
        )
    anatomy = run.anatomy()
    parts = parts_of(anatomy)
    if parts:
        total = sum(tokens for _, tokens in parts)
        shown = ", ".join(f"{name} {fmt.percent(n, total)} ({fmt.tokens(n)})" for name, n in parts)
        calls = anatomy.get("calls", 0)
        requests = f"{calls:,} request" + ("" if calls == 1 else "s")
        lines.append(
            Line(f"where the input goes (estimated, ~{fmt.tokens(total)} tokens in {requests}): {shown}")
        )
    shares = ((e, e.context) for e in run.tests.values() if e.context)  # ties: the first node id
    found = min(shares, key=lambda share: (-share[1]["max"], share[0].nodeid), default=None)
    if found is not None:
        peak, context = found
        lines.append(
            Line(
                f"context window: at most {share(context['max'])} ({context['model']}, "
                f"{fmt.tokens(context['input_tokens'])} of {fmt.tokens(context['window'])}) in {peak.nodeid}"
            )
        )
    kinds = ("unmetered", "stale-cassette", "context-window", "request-part")
    flagged = [v for v in run.verdicts if v.kind in kinds and v.status in (Status.WARN, Status.EXCEEDED)]
    for verdict in flagged[:top] if len(flagged) > top + 1 else flagged:
        colour = {"red": True} if verdict.status == Status.EXCEEDED else {"yellow": True}
        lines.append(Line(verdict.message, colour))
    if len(flagged) > top + 1:
        lines.append(Line(f"… {len(flagged) - top:,} more findings in the JSON artifact"))
    return lines
