"""A self-contained HTML report: one file that opens from a CI artifact, offline.

Everything is inline — the style sheet and two small scripts (``html_assets/``), and the charts as
SVG drawn here in Python — and a Content-Security-Policy admits only those (by their hashes), so
the page loads nothing from anywhere, and text that slipped through escaping could not run.

The page: a banner (verdict, totals, cost, change against the baseline), the budgets that need
attention, the comparison with the baseline, charts with a data table beside each (tokens by model
and provider, by file, the heaviest tests, the trend over saved runs), where the input goes
(request anatomy), and a table of every test that sorts and filters in the browser (and reads as
a plain table without scripts). Text from the suite (node ids, model names, messages) is escaped;
the one JSON block holds numbers only and is escaped against ``</script>`` and ``<!--`` all the
same. No prompt or completion text: the run holds none.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from html import escape
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .. import units as fmt
from ..model import INSPECTION_KINDS, Run, Status, Tally, TestUsage, Verdict

if TYPE_CHECKING:
    from ..runs.history import Entry

__all__ = ["files_of", "load_trend", "render", "script_json", "write"]

TREND_RUNS: Final = 20
"""Saved runs the trend reads (the newest ones)."""
_ROWS: Final = 10  # bars in a chart, rows in the comparison table
_VERDICT_ROWS: Final = 200  # budgets listed before "… more in the JSON artifact"
_LABEL: Final = 40  # characters of a label in a chart (the full text is its tooltip)
_RANK: Final[dict[str, int]] = {Status.EXCEEDED: 0, Status.UNKNOWN: 1, Status.WARN: 2, Status.OK: 3}
_KEYS: Final = ("calls", "input", "cached", "cache_write", "output", "reasoning", "total", "cost")
_KINDS: Final = (  # (segment label, Tally attribute): the parts of total tokens, drawn stacked
    ("input (uncached)", "uncached"),
    ("cached input", "cached_input_tokens"),
    ("cache write", "cache_write_tokens"),
    ("output", "output_tokens"),
)


# -- entry points -----------------------------------------------------------------------------------


def write(run: Run, path: Path, *, history_dir: Path | None = None) -> Path:
    """Write the report for ``run`` to ``path`` atomically (with the trend from ``history_dir``)."""
    from ..runs.artifact import write_atomic

    write_atomic(path, _page(run, load_trend(run, history_dir)))
    return path


def render(run: Run, *, trend: Sequence[Entry] = ()) -> str:
    """The report as one string; ``trend``: saved runs, oldest first (see :func:`load_trend`)."""
    return "".join(_page(run, trend))


def load_trend(run: Run, directory: Path | None) -> list[Entry]:
    """The newest :data:`TREND_RUNS` saved runs in ``directory``, oldest first, ending with ``run``
    (unless it is already the newest saved one); empty without a readable history."""
    if directory is None or not directory.is_dir():
        return []
    from ..model import ArtifactError
    from ..runs.history import Entry, load_history

    try:
        entries = list(load_history(directory, last=TREND_RUNS).entries)
    except (ArtifactError, OSError):
        return []
    if not entries:
        return []
    totals = run.totals()
    meta = run.meta
    finished, commit = str(meta.get("finished") or ""), str(meta.get("commit") or "")
    newest = entries[-1]
    if not (finished and newest.finished == finished and newest.commit == commit):
        this = Entry(
            name="this run",
            finished=finished,
            branch=str(meta.get("branch") or ""),
            commit=commit,
            tests=sum(1 for _ in run.iter_tests()),
            calls=totals.calls,
            tokens=totals.total_tokens,
            cost_usd=totals.cost_usd if totals.cost_known or totals.cost_usd else None,
            cost_known=totals.cost_known,
        )
        entries = [*entries[1 - TREND_RUNS :], this]
    return entries


def script_json(value: Any) -> str:
    """JSON safe inside a ``<script>`` element: no ``<``, ``>`` or ``&`` (so neither
    ``</script>`` nor ``<!--`` can appear) and no U+2028/U+2029 line separators."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    for raw, safe in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(raw, safe)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


@dataclass(frozen=True, slots=True)
class FileUsage:
    """One test file's share of the run (calls outside tests are a file of their own)."""

    name: str
    tests: int  # tests with calls
    tally: Tally


OUTSIDE_TESTS: Final = "(outside tests: fixtures, session)"


def files_of(run: Run) -> list[FileUsage]:
    """Usage per test file, from the node ids (``path::name``), heaviest first."""
    tallies: dict[str, Tally] = {}
    counts: Counter[str] = Counter()
    for entry in run.tests.values():
        if not entry.total.calls:
            continue
        name = entry.nodeid.split("::", 1)[0] if entry.kind == "test" else OUTSIDE_TESTS
        tally = tallies.get(name)
        if tally is None:
            tally = tallies[name] = Tally()
        tally.merge(entry.total)
        counts[name] += 1
    found = [FileUsage(name, counts[name], tally) for name, tally in tallies.items()]
    return sorted(found, key=lambda f: (-f.tally.total_tokens, -f.tally.cost_usd, f.name))


# -- the page ---------------------------------------------------------------------------------------


def _page(run: Run, trend: Sequence[Entry]) -> list[str]:
    totals = run.totals()
    verdict_class, verdict_word = _verdict(run.verdicts)
    title = f"Token budget: {verdict_word} · {fmt.tokens(totals.total_tokens)} tokens · {_cost(totals)}"
    style, guard, script = _asset("report.css"), _asset("guard.js"), _asset("report.js")
    policy = (
        f"default-src 'none'; style-src '{_digest(style)}'; script-src '{_digest(guard)}' "
        f"'{_digest(script)}'; img-src 'none'; base-uri 'none'; form-action 'none'"
    )
    out = [
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">\n',
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
        '<meta name="color-scheme" content="light dark">\n',
        '<meta name="generator" content="pytest-tokenbudget">\n',
        f"<title>{_e(title)}</title>\n<style>{style}</style>\n<script>{guard}</script>\n</head>\n<body>\n",
        '<ul id="tb-errors" hidden aria-live="assertive"></ul>\n',
    ]
    out += _banner(run, totals, verdict_class, verdict_word)
    out += _budgets(run.verdicts)
    out += _comparison(run.comparison)
    out += _charts(run, trend)
    out += _anatomy(run)
    out += _issues(run)
    out += _tests_table(run)
    out.append(_footer(run))
    out.append(f"<script>{script}</script>\n</body>\n</html>\n")
    return out


def _banner(run: Run, totals: Tally, css: str, word: str) -> list[str]:
    u = totals.usage
    with_calls = sum(1 for t in run.iter_tests() if t.total.calls)
    figures = [
        ("tokens", fmt.tokens(u.total_tokens)),
        ("cost", _cost(totals)),
        ("live spend", fmt.money(totals.live_cost_usd)),
        ("LLM calls", fmt.tokens(totals.calls)),
        ("tests with calls", f"{with_calls:,} of {sum(1 for _ in run.iter_tests()):,}"),
        ("input", fmt.tokens(u.input_tokens)),
        ("cached input", fmt.tokens(u.cached_input_tokens)),
        ("cache write", fmt.tokens(u.cache_write_tokens)),
        ("output", fmt.tokens(u.output_tokens)),
        ("reasoning", fmt.tokens(u.reasoning_tokens)),
    ]
    comparison = run.comparison
    if comparison and not comparison.get("missing"):
        total = comparison["totals"]["total_tokens"]
        cost = comparison["cost"]
        figures.insert(2, ("vs baseline", f"{total['delta']:+,} tokens ({_pct(total['pct'])})"))
        figures.insert(3, ("cost vs baseline", f"{fmt.money(cost['base'])} → {fmt.money(cost['head'])}"))
    out = [
        f'<header class="banner {css}" role="banner">\n',
        f'<h1><span class="status-{css}">{_e(word.capitalize())}</span> · token budget report</h1>\n',
        '<dl class="figures">',
        *(f"<div><dt>{_e(name)}</dt><dd>{_e(value)}</dd></div>" for name, value in figures),
        "</dl>\n",
    ]
    notes = []
    if totals.estimated_calls:
        estimated = fmt.count(totals.estimated_calls, "call")
        notes.append(f"{estimated} estimated by the tokenizer (no usage reported, or only part of it).")
    if not totals.cost_known:
        notes.append(
            f"{fmt.count(totals.unpriced_calls, 'call')} without a price: the cost is a lower bound."
        )
    if run.meta.get("partial"):
        notes.append("Partial run (interrupted or stopped early): the totals are a lower bound.")
    if comparison and comparison.get("missing"):
        notes.append(f"Baseline: {comparison.get('note') or 'none yet'}.")
    out += [f'<p class="alert">{_e(note)}</p>\n' for note in notes]
    out.append("</header>\n<main>\n")
    return out


def _budgets(verdicts: list[Verdict]) -> list[str]:
    if not verdicts:
        return []
    ranked = sorted(verdicts, key=lambda v: (_RANK.get(v.status, 9), v.name))
    shown = [v for v in ranked if not v.nodeid or v.status != Status.OK]  # passing tests: in the table
    counts = Counter(v.status for v in verdicts)
    summary = ", ".join(f"{counts[s]:,} {s}" for s in _RANK if counts[s])
    out = [
        '<section aria-labelledby="budgets"><h2 id="budgets">Budgets</h2>\n',
        f'<p>{_e(summary)}. Each test\'s own verdict is in the <a href="#tests">table of tests</a>.</p>\n',
        "<table><caption>Budgets and findings, those that need attention first</caption>",
        '<thead><tr><th scope="col">status</th><th scope="col">budget</th><th scope="col">metric</th>'
        '<th scope="col" class="n">actual</th><th scope="col" class="n">limit</th>'
        '<th scope="col">message</th></tr></thead><tbody>\n',
    ]
    for v in shown[:_VERDICT_ROWS]:
        kind = "finding" if v.kind in INSPECTION_KINDS else v.kind
        out.append(
            f'<tr><td class="status-{_e(v.status)}">{_e(v.status)}</td><th scope="row">{_e(v.name)}'
            f' <span class="muted">({_e(kind)})</span></th><td>{_e(v.metric.replace("_", " "))}</td>'
            f'<td class="n">{_e(_value(v.metric, v.actual))}</td>'
            f'<td class="n">{_e(_value(v.metric, v.limit))}</td><td>{_e(v.message)}</td></tr>\n'
        )
    out.append("</tbody></table>\n")
    if len(shown) > _VERDICT_ROWS:
        out.append(f'<p class="note">… {len(shown) - _VERDICT_ROWS:,} more in the JSON artifact.</p>\n')
    return [*out, "</section>\n"]


def _comparison(comparison: dict[str, Any] | None) -> list[str]:
    if not comparison or comparison.get("missing"):
        return []
    cost, counts = comparison["cost"], comparison.get("counts", {})
    out = [
        '<section aria-labelledby="baseline"><h2 id="baseline">Against the baseline</h2>\n',
        f"<p>Baseline <code>{_e(str(comparison.get('source', '')))}</code>: "
        f"{counts.get('changed', 0):,} tests changed, {counts.get('new', 0):,} new, "
        f"{counts.get('removed', 0):,} removed, {counts.get('unchanged', 0):,} unchanged. "
        f"Cost {_e(fmt.money(cost['base']))} → {_e(fmt.money(cost['head']))}",
    ]
    if cost.get("usage_effect") is not None:
        out.append(
            f" (usage {cost['usage_effect']:+.6f} USD, prices {(cost.get('price_effect') or 0):+.6f} USD)"
        )
    out.append('.</p>\n<table><caption>Tokens by kind</caption><thead><tr><th scope="col">kind</th>')
    out.append(_num_heads("base", "head", "Δ", "Δ %") + "</tr></thead><tbody>\n")
    for metric, delta in comparison["totals"].items():
        out.append(f'<tr><th scope="row">{_e(metric.replace("_", " "))}</th>{_delta_cells(delta)}</tr>\n')
    out.append("</tbody></table>\n")
    models = comparison.get("models") or []
    if models:
        out.append('<table><caption>Models that changed</caption><thead><tr><th scope="col">model</th>')
        out.append(_num_heads("base", "head", "Δ", "Δ %") + "</tr></thead><tbody>\n")
        for model in models[:_ROWS]:
            out.append(
                f'<tr><th scope="row"><code>{_e(model["model"])}</code></th>{_delta_cells(model)}</tr>\n'
            )
        out.append("</tbody></table>\n")
    tests = comparison.get("tests") or []
    if tests:
        out.append(
            f"<table><caption>Largest changes per test (top {min(_ROWS, len(tests))} of {len(tests):,})"
            '</caption><thead><tr><th scope="col">test</th><th scope="col">status</th>'
        )
        out.append(_num_heads("base", "head", "Δ", "Δ %") + "</tr></thead><tbody>\n")
        for test in tests[:_ROWS]:
            out.append(
                f'<tr><th scope="row" class="id">{_e(test["test"])}</th><td>{_e(test["status"])}</td>'
                f"{_delta_cells(test)}</tr>\n"
            )
        out.append("</tbody></table>\n")
    return [*out, "</section>\n"]


def _charts(run: Run, trend: Sequence[Entry]) -> list[str]:
    models = run.models()
    if not models and len(trend) < 2:
        return []
    out = [
        '<section aria-labelledby="charts"><h2 id="charts">Where the tokens go</h2>\n<div class="charts">\n'
    ]
    if models:
        ranked = sorted(models.items(), key=lambda kv: (-kv[1].total_tokens, kv[0]))
        out.append(_stacked_figure("models", "Tokens by model", "model", ranked))
        providers = sorted(run.providers(models).items(), key=lambda kv: (-kv[1].total_tokens, kv[0]))
        out.append(_stacked_figure("providers", "Tokens by provider", "provider", providers))
        per_file = [(f.name, f.tally) for f in files_of(run)]
        out.append(_stacked_figure("files", "Tokens by test file", "file", per_file))
        per_marker = sorted(run.markers().items(), key=lambda kv: (-kv[1].total_tokens, kv[0]))
        if per_marker:  # tests' own markers (slow, integration, …); pytest's are left out
            out.append(_stacked_figure("markers", "Tokens by marker", "marker", per_marker))
        heaviest = [(t.nodeid, t.total) for t in run.heaviest(_ROWS)]
        out.append(_stacked_figure("heaviest", "Heaviest tests", "test", heaviest))
    if len(trend) >= 2:
        out.append(_trend_figure(trend))
    return [*out, "</div>\n</section>\n"]


def _anatomy(run: Run) -> list[str]:
    anatomy = run.anatomy()
    if not anatomy:  # nothing measured: inspector.py (imported at the first request) stays out
        return []
    from ..inspection.inspector import parts_of

    parts = parts_of(anatomy)
    if not parts:
        return []
    total = sum(n for _, n in parts)
    calls = anatomy.get("calls", 0)
    title = "Where the input goes (estimated)"
    summary = ", ".join(f"{name} {fmt.percent(n, total)}" for name, n in parts)
    desc = f"~{total:,} input tokens in {fmt.count(calls, 'request')}: {summary}."
    out = [
        '<section aria-labelledby="anatomy"><h2 id="anatomy">Request anatomy</h2>\n',
        f"<p>{_e(desc)} Estimated from the request bodies with the tokenizer; no prompt text is kept.</p>\n",
        _share_bar("anatomy-chart", title, desc, parts, total),
        '<table><caption>Input tokens by part of the request</caption><thead><tr><th scope="col">part'
        f"</th>{_num_heads('tokens', 'share', 'largest single request')}</tr></thead><tbody>\n",
    ]
    for name, tokens in parts:
        peak = anatomy.get(f"peak:{name}")
        out.append(
            f'<tr><th scope="row">{_e(name)}</th><td class="n">~{tokens:,}</td>'
            f'<td class="n">{fmt.percent(tokens, total)}</td>'
            f'<td class="n">{"~" + format(peak, ",") if peak else "–"}</td></tr>\n'
        )
    out.append("</tbody></table>\n")
    shares = [(e, e.context) for e in run.tests.values() if e.context]
    if shares:
        peak_entry, context = min(shares, key=lambda share: (-share[1]["max"], share[0].nodeid))
        window = fmt.tokens(int(context.get("window", 0)))
        used = f"{fmt.tokens(int(context.get('input_tokens', 0)))} of {window}"
        out.append(
            f"<p>Fullest context window: {100 * context['max']:.0f}% of {_e(str(context.get('model', '')))} "
            f"({used} input tokens) in <code>{_e(peak_entry.nodeid)}</code>.</p>\n"
        )
    return [*out, "</section>\n"]


def _issues(run: Run) -> list[str]:
    unknown = run.meta.get("prices", {}).get("unknown") if isinstance(run.meta.get("prices"), dict) else None
    if not run.issues and not unknown:
        return []
    out = ['<section aria-labelledby="issues"><h2 id="issues">Calls with caveats</h2>\n']
    if unknown:
        names = ", ".join(
            f"<code>{_e(str(u.get('provider')))}/{_e(str(u.get('model')))}</code> ×{int(u.get('calls', 0)):,}"
            for u in unknown[:_ROWS]
        )
        more = f" and {len(unknown) - _ROWS:,} more" if len(unknown) > _ROWS else ""
        out.append(
            f"<p>No price for {names}{more}: their cost is unknown (not $0); "
            "add them under <code>[tool.tokenbudget.prices]</code>.</p>\n"
        )
    if run.issues:
        states = Counter(str(issue.get("state", "")) for issue in run.issues)
        shown = ", ".join(f"{n:,} {state}" for state, n in sorted(states.items()))
        out.append(f"<p>{len(run.issues):,} calls with incomplete usage ({_e(shown)}).</p>\n")
        out.append(
            '<table><caption>Calls with incomplete usage</caption><thead><tr><th scope="col">test</th>'
            '<th scope="col">api</th><th scope="col">model</th><th scope="col">state</th></tr></thead>'
            "<tbody>\n"
        )
        for issue in run.issues[:_VERDICT_ROWS]:
            out.append(
                f'<tr><th scope="row" class="id">{_e(str(issue.get("test", "")))}</th>'
                f"<td>{_e(str(issue.get('api', '')))}</td>"
                f"<td><code>{_e(str(issue.get('model', '')))}</code></td>"
                f"<td>{_e(str(issue.get('state', '')))}</td></tr>\n"
            )
        out.append("</tbody></table>\n")
    return [*out, "</section>\n"]


def _tests_table(run: Run) -> list[str]:
    """Every entry (tests, then fixtures and the session), heaviest first, with sort keys as JSON."""
    entries = sorted(run.tests.values(), key=_heaviest_first)
    if not entries:
        return ['<section aria-labelledby="tests"><h2 id="tests">Tests</h2><p>No tests.</p></section>\n']
    comparison = run.comparison if run.comparison and not run.comparison.get("missing") else None
    deltas = {t["test"]: t for t in comparison["tests"]} if comparison else None
    worst = _worst_verdicts(run.verdicts)
    columns = [
        ("test", "test", None),
        ("outcome", "outcome", None),
        *((key, label, key) for key, label in _COLUMN_LABELS),
        *((("delta", "Δ tokens (baseline)", "delta"),) if deltas is not None else ()),
        ("budget", "budget", "budget"),
    ]
    index = {key: i for i, key in enumerate((*_KEYS, *(("delta",) if deltas is not None else ()), "budget"))}
    heads = []
    for col, label, key in columns:
        numeric = key is not None and col != "budget"
        sort = ' aria-sort="descending"' if col == "total" else ' aria-sort="none"'
        data_key = f' data-key="{key}"' if key is not None else ""
        css = ' class="n"' if numeric else ""
        heads.append(
            f'<th scope="col" data-col="{col}"{data_key}{css}{sort}>'
            f'<button type="button">{_e(label)}</button></th>'
        )
    filters = [("all", "every row"), ("calls", "with LLM calls"), ("budget", "over budget or warned")]
    if deltas is not None:
        filters.append(("changed", "changed vs the baseline"))
    out = [
        '<section aria-labelledby="tests"><h2 id="tests">Tests</h2>\n',
        '<div id="tb-controls" class="controls" hidden>',
        '<label for="tb-filter">Filter by test id</label> <input id="tb-filter" type="search" '
        'placeholder="part of a node id" autocomplete="off">',
        '<label for="tb-show">Show</label> <select id="tb-show">',
        *(f'<option value="{value}">{label}</option>' for value, label in filters),
        '</select> <span id="tb-shown" aria-live="polite"></span>',
        '<span id="tb-sort-status" class="muted" aria-live="polite"></span></div>\n',
        '<div class="tests-wrap"><table id="tb-tests"><caption>Every test (and calls outside tests), '
        "heaviest first: select a column heading to sort by it</caption>\n<thead><tr>",
        *heads,
        "</tr></thead>\n<tbody>\n",
    ]
    keys: list[list[float | int | None]] = []
    rows = []
    for entry in entries:
        row, key = _test_row(entry, deltas, worst.get(entry.nodeid))
        rows.append(row)
        keys.append(key)
    out += rows
    out.append("</tbody></table></div>\n")
    data = {"index": index, "keys": keys}
    out.append(f'<script type="application/json" id="tb-data">{script_json(data)}</script>\n</section>\n')
    return out


_COLUMN_LABELS: Final = (
    ("calls", "calls"),
    ("input", "input"),
    ("cached", "cached input"),
    ("cache_write", "cache write"),
    ("output", "output"),
    ("reasoning", "reasoning"),
    ("total", "total tokens"),
    ("cost", "cost"),
)


def _test_row(
    entry: TestUsage, deltas: dict[str, dict[str, Any]] | None, verdict: Verdict | None
) -> tuple[str, list[float | int | None]]:
    """One row of the table of tests and its sort keys (one f-string: 20,000 rows at scale)."""
    t = entry.total
    total = t.input_tokens + t.output_tokens
    priced = not (t.calls and t.unpriced_calls >= t.calls)
    key: list[float | int | None] = [t.calls, t.input_tokens, t.cached_input_tokens, t.cache_write_tokens,
                                     t.output_tokens, t.reasoning_tokens, total,
                                     round(t.cost_usd, 10) if priced else None]  # fmt: skip
    outcome = entry.outcome if entry.kind == "test" else entry.kind
    row = (
        f'<tr><th scope="row" class="id">{_e(entry.nodeid)}</th><td>{_word(outcome)}</td>'
        f'<td class="n">{_count(t.calls)}</td><td class="n">{_count(t.input_tokens)}</td>'
        f'<td class="n">{_count(t.cached_input_tokens)}</td><td class="n">{_count(t.cache_write_tokens)}</td>'
        f'<td class="n">{_count(t.output_tokens)}</td><td class="n">{_count(t.reasoning_tokens)}</td>'
        f'<td class="n">{_count(total)}</td><td class="n">{_word(_cost(t))}</td>'
    )
    if deltas is not None:
        change = deltas.get(entry.nodeid)
        if change is not None:
            delta = change["delta"]
            text = "new" if change["status"] == "new" else f"{delta:+,} ({_pct(change['pct'])})"
            css = "up" if delta > 0 else "down" if delta < 0 else ""
            row += f'<td class="n {css}">{_e(text)}</td>'
            key.append(delta)
        else:
            row += '<td class="n">0</td>' if t.calls else '<td class="n">–</td>'
            key.append(0 if t.calls else None)
    if verdict is None:
        key.append(None)
        return row + "<td>–</td></tr>\n", key
    key.append(_RANK.get(verdict.status, 9))
    status = _word(verdict.status)
    return row + f'<td class="status-{status}" title="{_e(verdict.message)}">{status}</td></tr>\n', key


def _footer(run: Run) -> str:
    meta = run.meta
    bits = [f"pytest-tokenbudget {meta.get('plugin_version') or ''}".strip()]
    for key, label in (("branch", "branch"), ("commit", "commit"), ("finished", "finished")):
        if meta.get(key):
            value = str(meta[key])
            bits.append(f"{label} {value[:12] if key == 'commit' else value}")
    prices = meta.get("prices")
    if isinstance(prices, dict) and prices.get("version"):
        data = f", data {prices['data_date']}" if prices.get("data_date") else ""
        bits.append(f"prices: genai-prices {prices['version']}{data}")
    return "</main>\n<footer>" + " · ".join(_e(b) for b in bits) + "</footer>\n"


# -- charts (inline SVG) ----------------------------------------------------------------------------

_WIDTH: Final = 720
_LABEL_W: Final = 300  # left of the bars: labels
_VALUE_W: Final = 90  # right of the bars: the value
_BAR_H: Final = 16
_ROW_H: Final = 22


def _stacked_figure(ident: str, title: str, noun: str, ranked: Sequence[tuple[str, Tally]]) -> str:
    """Horizontal bars of total tokens, split by kind (uncached input, cached, cache write,
    output), for the first :data:`_ROWS` of ``ranked``; a data table with every row beside it."""
    shown = [(name, tally) for name, tally in ranked[:_ROWS] if tally.calls]
    if not shown:
        return ""
    peak = max(t.total_tokens for _, t in shown) or 1
    legend_y = 14
    top = 30
    height = top + _ROW_H * len(shown) + 6
    listed = "; ".join(f"{name}: {t.total_tokens:,} tokens, {_cost(t)}" for name, t in shown)
    more = f" (top {len(shown)} of {len(ranked):,})" if len(ranked) > len(shown) else ""
    desc = (
        f"{title}{more}, as bars split into uncached input, cached input, cache write and output: {listed}."
    )
    svg = [
        f'<svg class="chart" viewBox="0 0 {_WIDTH} {height}" role="img" '
        f'aria-labelledby="{ident}-t {ident}-d">',
        f'<title id="{ident}-t">{_e(title)}</title><desc id="{ident}-d">{_e(desc)}</desc>',
    ]
    x = _LABEL_W
    for i, (label, _) in enumerate(_KINDS):
        svg.append(f'<rect class="s{i}" x="{x}" y="{legend_y - 9}" width="10" height="10"/>')
        svg.append(f'<text x="{x + 14}" y="{legend_y}">{_e(label)}</text>')
        x += 14 + 7 * len(label) + 16
    bar_w = _WIDTH - _LABEL_W - _VALUE_W
    for row, (name, tally) in enumerate(shown):
        y = top + row * _ROW_H
        svg.append(
            f'<text x="{_LABEL_W - 8}" y="{y + 12}" text-anchor="end"><title>{_e(name)}</title>'
            f"{_e(_clip(name, _LABEL))}</text>"
        )
        x0 = float(_LABEL_W)
        for i, (label, attribute) in enumerate(_KINDS):
            value = _kind(tally, attribute)
            if value <= 0:
                continue
            width = bar_w * value / peak
            svg.append(
                f'<rect class="s{i}" x="{x0:.1f}" y="{y}" width="{max(width, 0.5):.1f}" height="{_BAR_H}">'
                f"<title>{_e(name)}: {value:,} {_e(label)} tokens</title></rect>"
            )
            x0 += width
        svg.append(f'<text x="{x0 + 6:.1f}" y="{y + 12}" class="muted">{_compact(tally.total_tokens)}</text>')
    svg.append("</svg>")
    table = _tally_table(f"{title}: data", noun, ranked)
    return f"<figure><figcaption>{_e(title)}</figcaption>{''.join(svg)}\n{table}</figure>\n"


def _tally_table(caption: str, noun: str, ranked: Sequence[tuple[str, Tally]]) -> str:
    rows = [
        f'<tr><th scope="row" class="id">{_e(name)}</th><td class="n">{t.calls:,}</td>'
        f'<td class="n">{t.input_tokens:,}</td><td class="n">{t.cached_input_tokens:,}</td>'
        f'<td class="n">{t.cache_write_tokens:,}</td><td class="n">{t.output_tokens:,}</td>'
        f'<td class="n">{t.reasoning_tokens:,}</td><td class="n">{t.total_tokens:,}</td>'
        f'<td class="n">{_e(_cost(t))}</td></tr>'
        for name, t in ranked[:_VERDICT_ROWS]
    ]
    more = (
        f'<p class="note">… {len(ranked) - _VERDICT_ROWS:,} more</p>' if len(ranked) > _VERDICT_ROWS else ""
    )
    heads = _num_heads("calls", "input", "cached", "cache write", "output", "reasoning", "total", "cost")
    return (
        f"<details><summary>{_e(caption)} ({len(ranked):,} rows)</summary><table><caption>{_e(caption)}"
        f'</caption><thead><tr><th scope="col">{_e(noun)}</th>{heads}</tr></thead><tbody>'
        + "\n".join(rows)
        + f"</tbody></table>{more}</details>"
    )


def _share_bar(ident: str, title: str, desc: str, parts: Sequence[tuple[str, int]], total: int) -> str:
    """One bar split into ``parts`` by their share of ``total``, each labelled below it."""
    height = 34 + 18 * math.ceil(len(parts) / 3)
    svg = [
        f'<svg class="chart" viewBox="0 0 {_WIDTH} {height}" role="img" '
        f'aria-labelledby="{ident}-t {ident}-d">',
        f'<title id="{ident}-t">{_e(title)}</title><desc id="{ident}-d">{_e(desc)}</desc>',
    ]
    x = 0.0
    for i, (name, tokens) in enumerate(parts):
        width = _WIDTH * tokens / total if total else 0
        svg.append(
            f'<rect class="s{i % 5}" x="{x:.1f}" y="0" width="{max(width, 0.5):.1f}" height="22">'
            f"<title>{_e(name)}: ~{tokens:,} tokens ({fmt.percent(tokens, total)})</title></rect>"
        )
        x += width
    for i, (name, tokens) in enumerate(parts):
        lx, ly = 240 * (i % 3), 44 + 18 * (i // 3)
        svg.append(f'<rect class="s{i % 5}" x="{lx}" y="{ly - 10}" width="10" height="10"/>')
        svg.append(f'<text x="{lx + 14}" y="{ly}">{_e(_clip(name, 24))} {fmt.percent(tokens, total)}</text>')
    svg.append("</svg>\n")
    return "".join(svg)


def _trend_figure(entries: Sequence[Entry]) -> str:
    """Tokens (left axis) and cost (right axis) over the saved runs, oldest first."""
    left, right, top, bottom = 64, 64, 28, 40
    height = 260
    plot_w, plot_h = _WIDTH - left - right, height - top - bottom
    count = len(entries)
    token_ticks = _ticks(max(e.tokens for e in entries))
    known = [e.cost_usd for e in entries if e.cost_usd is not None]
    cost_ticks = _ticks(max(known)) if known else []

    def x_at(i: int) -> float:
        return left + plot_w * i / (count - 1)

    def y_at(value: float, ticks: list[float]) -> float:
        return top + plot_h * (1 - value / ticks[-1])

    first, last = entries[0], entries[-1]
    change = last.tokens - first.tokens
    desc = (
        f"{count} runs from {first.label} to {last.label}: tokens {first.tokens:,} → {last.tokens:,} "
        f"({change:+,}); cost {fmt.money(first.cost_usd, known=first.cost_known)} → "
        f"{fmt.money(last.cost_usd, known=last.cost_known)}."
    )
    svg = [
        f'<svg class="chart" viewBox="0 0 {_WIDTH} {height}" role="img" aria-labelledby="trend-t trend-d">',
        f'<title id="trend-t">Tokens and cost per run</title><desc id="trend-d">{_e(desc)}</desc>',
    ]
    for tick in token_ticks:
        y = y_at(tick, token_ticks)
        svg.append(f'<line class="grid" x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}"/>')
        svg.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_compact(tick)}</text>')
    for tick in cost_ticks:
        y = y_at(tick, cost_ticks)
        svg.append(f'<text x="{left + plot_w + 6}" y="{y + 4:.1f}" class="muted">{fmt.money(tick)}</text>')
    step = max(1, math.ceil(count / 8))
    for i, entry in enumerate(entries):
        if i % step and i != count - 1:
            continue
        label = entry.label[5:10] or entry.name[:10]
        svg.append(
            f'<text x="{x_at(i):.1f}" y="{top + plot_h + 16}" text-anchor="middle" class="muted">'
            f"{_e(label)}</text>"
        )
    points = " ".join(f"{x_at(i):.1f},{y_at(e.tokens, token_ticks):.1f}" for i, e in enumerate(entries))
    svg.append(f'<polyline class="line0" points="{points}"/>')
    if cost_ticks:
        costs = [(i, e.cost_usd) for i, e in enumerate(entries) if e.cost_usd is not None]
        line = " ".join(f"{x_at(i):.1f},{y_at(c, cost_ticks):.1f}" for i, c in costs)
        svg.append(f'<polyline class="line2" points="{line}"/>')
    for i, e in enumerate(entries):
        tip = f"{e.label} {e.branch or '-'} {e.short_commit or '-'}: {e.tokens:,} tokens, "
        tip += fmt.money(e.cost_usd, known=e.cost_known)
        svg.append(
            f'<circle class="s0" cx="{x_at(i):.1f}" cy="{y_at(e.tokens, token_ticks):.1f}" r="3.5">'
            f"<title>{_e(tip)}</title></circle>"
        )
    legend = height - 8
    svg.append(f'<rect class="s0" x="{left}" y="{legend - 9}" width="18" height="3"/>')
    svg.append(f'<text x="{left + 24}" y="{legend}">total tokens (left axis)</text>')
    if cost_ticks:
        svg.append(f'<rect class="s2" x="{left + 220}" y="{legend - 9}" width="18" height="3"/>')
        svg.append(f'<text x="{left + 244}" y="{legend}">cost (right axis, dashed)</text>')
    svg.append("</svg>")
    rows = [
        f'<tr><th scope="row">{_e(e.label or e.name)}</th><td>{_e(e.branch or "-")}</td>'
        f'<td><code>{_e(e.short_commit or "-")}</code></td><td class="n">{e.calls:,}</td>'
        f'<td class="n">{e.tokens:,}</td>'
        f'<td class="n">{_e(fmt.money(e.cost_usd, known=e.cost_known))}</td></tr>'
        for e in entries
    ]
    table = (
        f"<details><summary>Trend: data ({count} runs)</summary><table><caption>Saved runs, oldest first"
        '</caption><thead><tr><th scope="col">run (UTC)</th><th scope="col">branch</th>'
        f'<th scope="col">commit</th>{_num_heads("calls", "tokens", "cost")}</tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table></details>"
    )
    return f"<figure><figcaption>Trend over saved runs</figcaption>{''.join(svg)}\n{table}</figure>\n"


def _ticks(peak: float) -> list[float]:
    """0 and up to four round steps (1, 2, 2.5 or 5 × 10ⁿ) reaching ``peak`` (0 → [0, 1])."""
    if peak <= 0:
        return [0.0, 1.0]
    raw = peak / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [round(step * i, 12) for i in range(math.ceil(peak / step - 1e-9) + 1)]


# -- helpers ----------------------------------------------------------------------------------------


def _e(text: str) -> str:
    """``text`` for HTML text and attribute values (``&<>"'`` as references)."""
    return escape(text, quote=True) if _MARKUP.search(text) else text


_MARKUP: Final = re.compile(r"[&<>\"']")


@lru_cache(maxsize=1024)
def _word(text: str) -> str:
    """:func:`_e` for the few texts that repeat on every row (outcomes, statuses, costs)."""
    return _e(text)


@lru_cache(maxsize=8)
def _asset(name: str) -> str:
    return files(__package__ or "pytest_tokenbudget.report").joinpath("html_assets", name).read_text("utf-8")


def _digest(text: str) -> str:
    """The CSP source that admits an inline element with exactly ``text`` as its content."""
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


def _verdict(verdicts: Iterable[Verdict]) -> tuple[str, str]:
    statuses = {v.status for v in verdicts}
    if Status.EXCEEDED in statuses:
        return "exceeded", "over budget"
    if statuses & {Status.WARN, Status.UNKNOWN}:
        return "warn", "within budget, with warnings"
    if statuses:
        return "ok", "within budget"
    return "none", "no budgets"


def _worst_verdicts(verdicts: Iterable[Verdict]) -> dict[str, Verdict]:
    worst: dict[str, Verdict] = {}
    for verdict in verdicts:
        if not verdict.nodeid:
            continue
        held = worst.get(verdict.nodeid)
        if held is None or _RANK.get(verdict.status, 9) < _RANK.get(held.status, 9):
            worst[verdict.nodeid] = verdict
    return worst


def _heaviest_first(entry: TestUsage) -> tuple[int, int, float, str]:
    total = entry.total
    return (entry.kind != "test", -(total.input_tokens + total.output_tokens), -total.cost_usd, entry.nodeid)


def _kind(tally: Tally, attribute: str) -> int:
    if attribute == "uncached":
        return tally.input_tokens - tally.cached_input_tokens - tally.cache_write_tokens
    return int(getattr(tally, attribute))


def _cost(tally: Tally) -> str:
    if tally.calls and tally.unpriced_calls >= tally.calls:
        return "unknown"
    return fmt.money(tally.cost_usd, known=tally.cost_known)


@lru_cache(maxsize=4096)
def _count(n: int) -> str:
    return f"{n:,}"


def _compact(value: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:g}"


def _pct(value: float | None) -> str:
    return "new" if value is None else f"{value:+.1%}"


def _value(metric: str, value: float) -> str:
    if metric.startswith("cost"):
        return fmt.money(value)
    if float(value).is_integer():
        return fmt.tokens(int(value))
    return f"{value:.0%}" if 0 <= value <= 1 else f"{value:,.2f}"


def _num_heads(*names: str) -> str:
    return "".join(f'<th scope="col" class="n">{_e(name)}</th>' for name in names)


def _delta_cells(delta: dict[str, Any]) -> str:
    change = delta["delta"]
    css = "up" if change > 0 else "down" if change < 0 else ""
    pct = _pct(delta.get("pct")) if delta["base"] or delta["head"] else "–"  # 0 → 0 is not "new"
    return (
        f'<td class="n">{delta["base"]:,}</td><td class="n">{delta["head"]:,}</td>'
        f'<td class="n {css}">{change:+,}</td><td class="n">{pct}</td>'
    )


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
