"""The end-of-run terminal section, as lines with markup; pytest's writer prints them."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..model import Run, Tally
from . import format as fmt


@dataclass(frozen=True, slots=True)
class Line:
    text: str
    markup: dict[str, bool] = field(default_factory=dict)


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
    mocked = totals.calls - totals.live_calls - totals.replayed_calls
    if mocked:
        sources.append(f"{mocked:,} mocked")
    if sources:
        lines.append(Line("calls: " + ", ".join(sources)))

    heaviest = run.heaviest(len(run.tests) if verbose else top)
    if heaviest:
        lines.append(Line(""))
        title = "tokens per test" if verbose else f"heaviest tests (top {min(top, len(heaviest))})"
        lines.append(Line(title + ":", {"bold": True}))
        rows = [
            [
                ("~" if t.total.estimated_calls else "") + fmt.tokens(t.total.total_tokens),  # ~ estimated
                fmt.tokens(t.total.usage.input_tokens),
                fmt.tokens(t.total.usage.output_tokens),
                _calls(t.total.calls),
                t.nodeid,
            ]
            for t in heaviest
        ]
        rows.insert(0, ["total", "input", "output", "calls", "test"])
        lines.extend(Line("  " + row) for row in fmt.table(rows, ">>>><"))

    models = run.models()
    if models:
        lines.append(Line(""))
        lines.append(Line("per model:", {"bold": True}))
        rows = [["total", "input", "cached", "output", "reasoning", "calls", "model"]]
        for key, tally in models.items():
            u = tally.usage
            rows.append(
                [
                    fmt.tokens(u.total_tokens),
                    fmt.tokens(u.input_tokens),
                    fmt.tokens(u.cached_input_tokens),
                    fmt.tokens(u.output_tokens),
                    fmt.tokens(u.reasoning_tokens),
                    _calls(tally.calls),
                    key,
                ]
            )
        lines.extend(Line("  " + row) for row in fmt.table(rows, ">>>>>><"))

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
