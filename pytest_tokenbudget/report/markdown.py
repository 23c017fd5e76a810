"""Markdown for a pull-request comment and the GitHub job summary.

The first line is a hidden marker (:data:`MARKER`) so a workflow can find and update its own
comment. Then the verdict in one line, the baseline comparison when there is one, the budgets,
the heaviest tests, models and providers, and a chart of tokens by model. Long tables fold into
``<details>``. The text is always shorter than GitHub's comment limit (65,536 characters): rows
are cut, with a note saying how many, until it fits. Everything that comes from the test suite
(node ids, model names, messages) is escaped so it cannot break a table, inject HTML or ping
someone.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import units as fmt
from ..model import CallState, Run, Status, Tally, Verdict
from .markup import clip, code, literal

if TYPE_CHECKING:
    from ..runs.history import Entry

MARKER = "<!-- pytest-tokenbudget -->"
LIMIT = 65_536  # GitHub's limit for a comment body and a job summary per step, in characters

_ICON: dict[str, str] = {Status.EXCEEDED: "❌", Status.WARN: "⚠️", Status.UNKNOWN: "❔", Status.OK: "✅"}
_ORDER: dict[str, int] = {Status.EXCEEDED: 0, Status.UNKNOWN: 1, Status.WARN: 2, Status.OK: 3}


def render(
    run: Run,
    *,
    top: int = 10,
    limit: int = LIMIT,
    trend: Sequence[Entry] = (),
    html_url: str | None = None,
) -> str:
    """The markdown for ``run``; never longer than ``limit`` characters. ``trend``: the last runs
    (report/trend.py) for a sparkline; ``html_url``: a link to the HTML report."""
    rows = max(top, 1)
    extras = _extras(trend, html_url)
    while True:
        text = _render(run, rows, extras)
        if len(text) <= limit:
            return text
        if rows == 1:
            break
        rows = max(1, rows // 2)
    note = "\n\n_… cut to fit the size limit of a comment; the JSON artifact has everything._\n"
    return text[: limit - len(note)].rsplit("\n", 1)[0] + note


def _render(run: Run, rows: int, extras: list[str] | None = None) -> str:
    totals = run.totals()
    out = [MARKER, _headline(run, totals), ""]
    out += _summary(run, totals)
    if extras:  # the trend and the HTML report's link (issue 25)
        out += ["", *extras]
    comparison = _comparison_lines(run)
    if comparison:
        out += ["", *comparison]
    out += _budgets(run.verdicts, rows)
    out += _heaviest(run, rows)
    out += _models(run, rows)
    out += _breakdowns(run, rows)
    out += _unknown_prices(run)
    if run.issues:
        incomplete = f"⚠️ {fmt.count(len(run.issues), 'call')} with incomplete usage ({_states(run.issues)})"
        out += ["", incomplete + ": see the JSON artifact's `issues`."]
    out += ["", _footer(run)]
    return "\n".join(out) + "\n"


# -- sections --------------------------------------------------------------------------------------


def _states(issues: list[dict[str, Any]]) -> str:
    """``1 unparsed, 2 closed-early``: the issues counted by state, named by their CallState value."""
    found = Counter(str(issue.get("state", "")) for issue in issues)
    order: dict[str, int] = {state: index for index, state in enumerate(_STATE_ORDER)}
    ranked = sorted(found.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))
    return ", ".join(f"{n:,} {literal(state)}" for state, n in ranked)


_STATE_ORDER = (
    CallState.UNPARSED,
    CallState.UNMETERED,
    CallState.FAILED,
    CallState.NO_USAGE,
    CallState.CLOSED_EARLY,
    CallState.UNCLOSED,
)


def _headline(run: Run, totals: Tally) -> str:
    statuses = {v.status for v in run.verdicts}
    if Status.EXCEEDED in statuses:
        icon, word = "❌", "over budget"
    elif statuses & {Status.WARN, Status.UNKNOWN}:
        icon, word = "⚠️", "within budget, with warnings"
    elif statuses:
        icon, word = "✅", "within budget"
    else:
        icon, word = "ℹ️", "no budgets"
    cost = _cost(totals)
    live = fmt.money(totals.live_cost_usd)
    return (
        f"### {icon} Token budget: {word} · {fmt.tokens(totals.total_tokens)} tokens · "
        f"cost {cost} · live spend {live}"
    )


def _summary(run: Run, totals: Tally) -> list[str]:
    u = totals.usage
    tests = sum(1 for t in run.iter_tests() if t.total.calls)
    parts = [
        f"{fmt.count(totals.calls, 'LLM call')} in {fmt.count(tests, 'test')}",
        f"input {fmt.tokens(u.input_tokens)} (cached {fmt.tokens(u.cached_input_tokens)}, "
        f"cache-write {fmt.tokens(u.cache_write_tokens)})",
        f"output {fmt.tokens(u.output_tokens)} (reasoning {fmt.tokens(u.reasoning_tokens)})",
    ]
    if totals.estimated_calls:
        parts.append(f"{totals.estimated_calls:,} estimated (~)")
    lines = [" · ".join(parts)]
    prices = run.meta.get("prices")
    if isinstance(prices, dict) and prices.get("version"):
        data = f", data {prices['data_date']}" if prices.get("data_date") else ""
        lines += ["", f"<sub>prices: genai-prices {literal(str(prices['version']))}{literal(data)}</sub>"]
    if run.meta.get("partial"):
        lines += ["", "⚠️ **partial run** (interrupted or stopped early): totals are a lower bound."]
    return lines


def _comparison_lines(run: Run) -> list[str]:
    if not run.comparison:
        return []
    from .comparison import markdown_lines

    return markdown_lines(run.comparison)


def _budgets(verdicts: list[Verdict], rows: int) -> list[str]:
    if not verdicts:
        return []
    ranked = sorted(verdicts, key=lambda v: (_ORDER.get(v.status, 9), v.name))
    attention = [v for v in ranked if v.status != Status.OK]
    passed = [v for v in ranked if v.status == Status.OK]
    head = ["| | budget | actual | limit | |", "|---|---|--:|--:|---|"]
    out = ["", "#### Budgets", ""]
    if attention:
        out += head + [_verdict_row(v) for v in attention[:rows]]
        out += more(len(attention) - rows)
    if passed:
        table = head + [_verdict_row(v) for v in passed[:rows]] + more(len(passed) - rows)
        out += ["", *_details(f"{len(passed):,} within budget", table)]
    return out


def _verdict_row(v: Verdict) -> str:
    subject = code(v.nodeid) if v.nodeid else literal(v.name)
    metric = v.metric.replace("_", " ")
    return (
        f"| {_ICON.get(v.status, '')} | {subject} {metric} | {_value(v.metric, v.actual)} | "
        f"{_value(v.metric, v.limit)} | {literal(v.message)} |"
    )


def _heaviest(run: Run, rows: int) -> list[str]:
    ranked = run.heaviest(rows)
    if not ranked:
        return []
    table = ["| test | tokens | input | output | cost | calls |", "|---|--:|--:|--:|--:|--:|"]
    for t in ranked:
        mark = "~" if t.total.estimated_calls else ""
        u = t.total.usage
        table.append(
            f"| {code(t.nodeid)} | {mark}{fmt.tokens(u.total_tokens)} | {fmt.tokens(u.input_tokens)} | "
            f"{fmt.tokens(u.output_tokens)} | {_cost(t.total)} | {t.total.calls:,} |"
        )
    with_calls = sum(1 for t in run.iter_tests() if t.total.calls)
    table += more(with_calls - len(ranked))
    return ["", *_details(f"Heaviest tests (top {len(ranked):,} of {with_calls:,})", table, open_=True)]


def _models(run: Run, rows: int) -> list[str]:
    models = run.models()
    if not models:
        return []
    ranked = sorted(models.items(), key=lambda kv: (-kv[1].total_tokens, kv[0]))
    table = [
        "| model | tokens | input | cached | cache-write | output | reasoning | cost | calls |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for key, tally in ranked[:rows]:
        u = tally.usage
        table.append(
            f"| {code(key)} | {fmt.tokens(u.total_tokens)} | {fmt.tokens(u.input_tokens)} | "
            f"{fmt.tokens(u.cached_input_tokens)} | {fmt.tokens(u.cache_write_tokens)} | "
            f"{fmt.tokens(u.output_tokens)} | {fmt.tokens(u.reasoning_tokens)} | {_cost(tally)} | "
            f"{tally.calls:,} |"
        )
    table += more(len(ranked) - rows)
    providers = sorted(run.providers(models).items(), key=lambda kv: (-kv[1].total_tokens, kv[0]))
    table += ["", "| provider | tokens | cost | calls |", "|---|--:|--:|--:|"]
    for key, t in providers[:rows]:
        table.append(f"| {code(key)} | {fmt.tokens(t.total_tokens)} | {_cost(t)} | {t.calls:,} |")
    table += ["", *_chart(ranked[:8])]
    return ["", *_details("Models and providers", table)]


# -- issue 25: trend, HTML link, breakdowns per file and marker -------------------------------------


def _extras(trend: Sequence[Entry], html_url: str | None) -> list[str]:
    lines: list[str] = []
    if trend:
        from .trend import markdown_lines

        lines += markdown_lines(trend)
    if html_url:
        link = safe_url(html_url)
        if link is None:
            lines.append("📊 HTML report: not linked (its URL is not an http(s) address)")
        else:
            lines.append(f"📊 [HTML report]({link})")
    spaced: list[str] = []
    for line in lines:
        spaced += [line, ""]
    return spaced[:-1]


def safe_url(url: str) -> str | None:
    """``url`` as a markdown link target (``(``, ``)``, spaces and ``<>`` percent-encoded); None
    unless it is an absolute http(s) URL."""
    from urllib.parse import quote, urlsplit

    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return quote(url, safe="/:?#[]@!$&'*+,;=%~-._")


def _breakdowns(run: Run, rows: int) -> list[str]:
    """Usage per test file and per marker, folded (a marker's tests may overlap another's)."""
    files, markers = run.files(), run.markers()
    if len(files) < 2 and not markers:
        return []
    body: list[str] = []
    for title, tallies in (("file", files), ("marker", markers)):
        if not tallies:
            continue
        ranked = sorted(tallies.items(), key=lambda kv: (-kv[1].total_tokens, kv[0]))
        if body:
            body.append("")
        body += [f"| {title} | tokens | input | output | cost | calls |", "|---|--:|--:|--:|--:|--:|"]
        for name, tally in ranked[:rows]:
            body.append(
                f"| {code(name)} | {fmt.tokens(tally.total_tokens)} | {fmt.tokens(tally.input_tokens)} | "
                f"{fmt.tokens(tally.output_tokens)} | {_cost(tally)} | {tally.calls:,} |"
            )
        body += more(len(ranked) - rows)
    return ["", *_details("By file and marker", body)]


# -- end of issue 25 ---------------------------------------------------------------------------------


def _chart(ranked: list[tuple[str, Tally]]) -> list[str]:
    """A mermaid pie of tokens by model (GitHub renders mermaid blocks)."""
    slices = [(key, tally.total_tokens) for key, tally in ranked if tally.total_tokens > 0]
    if len(slices) < 2:
        return []
    lines = ["```mermaid", "pie showData title Tokens by model"]
    lines += [f'    "{_mermaid(key)}" : {tokens}' for key, tokens in slices]
    return [*lines, "```"]


def _unknown_prices(run: Run) -> list[str]:
    prices = run.meta.get("prices")
    unknown = prices.get("unknown") if isinstance(prices, dict) else None
    if not unknown:
        return []
    names = [(f"{u.get('provider')}/{u.get('model')}", int(u.get("calls", 0))) for u in unknown[:10]]
    shown = ", ".join(f"{code(name)} ×{calls:,}" for name, calls in names)
    more = f" and {len(unknown) - 10:,} more" if len(unknown) > 10 else ""
    return [
        "",
        f"❔ No price for {shown}{more}: their cost is unknown (not $0). "
        "Add them under `[tool.tokenbudget.prices]`.",
    ]


def _footer(run: Run) -> str:
    bits = [f"pytest-tokenbudget {literal(str(run.meta.get('plugin_version') or ''))}".strip()]
    if run.meta.get("commit"):
        bits.append(f"commit {literal(str(run.meta['commit'])[:12])}")
    if run.meta.get("branch"):
        bits.append(f"branch {code(str(run.meta['branch']))}")
    return "<sub>" + " · ".join(bits) + "</sub>"


# -- helpers ---------------------------------------------------------------------------------------


def _details(summary: str, body: list[str], *, open_: bool = False) -> list[str]:
    opening = "<details open>" if open_ else "<details>"
    return [opening, f"<summary>{summary}</summary>", "", *body, "", "</details>"]


def more(hidden: int) -> list[str]:
    """The row that says how many rows a table leaves out (none when it leaves none)."""
    return [f"| … {hidden:,} more | | | | |"] if hidden > 0 else []


def _cost(tally: Tally) -> str:
    if tally.calls and tally.unpriced_calls >= tally.calls:
        return "unknown"
    return fmt.money(tally.cost_usd, known=tally.cost_known)


def _value(metric: str, value: float) -> str:
    if metric.startswith("cost"):
        return fmt.money(value)
    if float(value).is_integer():
        return fmt.tokens(int(value))
    return f"{value:.0%}" if 0 <= value <= 1 else f"{value:,.2f}"


def _mermaid(text: str) -> str:
    return re.sub(r'["\\<>#;]', "_", clip(text))[:60]
